"""Index the accounts by opening time: staff's account list reads a page of them.

The list (the API's, oldest first, and the back office's, newest first) is
a page of every account in (opened_at, id) order; without the index, each
view reads and sorts every account.

Built with ``CREATE INDEX CONCURRENTLY`` on PostgreSQL, so the projection
goes on writing accounts while it is built (and plainly on SQLite, the
embedded mode). That statement cannot run inside a transaction, hence
``atomic = False``; the migration has this one operation, so there is
nothing else to leave half done.
"""

from django.db import migrations, models

from eventstore.migration_operations import PortableAddIndexConcurrently


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("accounts", "0005_ledger_transfer_index"),
    ]

    operations = [
        PortableAddIndexConcurrently(
            model_name="accountbalance",
            index=models.Index(fields=["opened_at", "id"], name="accounts_opened"),
        ),
    ]
