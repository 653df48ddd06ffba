"""Index the ledger by time: the back office's ledger list shows the latest rows.

Without it, each view of the list reads and sorts the whole ledger, the
biggest read model (a row per money movement).

Built concurrently on PostgreSQL, plainly on SQLite, as in 0006.
"""

from django.db import migrations, models

from eventstore.migration_operations import PortableAddIndexConcurrently


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("accounts", "0007_closed_with_money_index"),
    ]

    operations = [
        PortableAddIndexConcurrently(
            model_name="ledgerentry",
            index=models.Index(
                fields=["recorded_at", "id"], name="accounts_ledger_recorded"
            ),
        ),
    ]
