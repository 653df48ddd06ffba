"""Index the closed accounts that hold money: the operations page lists them.

Partial: a handful among every account, which the page would otherwise scan
on each view.

Built concurrently on PostgreSQL, plainly on SQLite, as in 0006.
"""

from django.db import migrations, models

from eventstore.migration_operations import PortableAddIndexConcurrently


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("accounts", "0006_account_opened_index"),
    ]

    operations = [
        PortableAddIndexConcurrently(
            model_name="accountbalance",
            index=models.Index(
                condition=models.Q(("balance__gt", 0), ("status", "closed")),
                fields=["opened_at", "id"],
                name="accounts_closed_with_money",
            ),
        ),
    ]
