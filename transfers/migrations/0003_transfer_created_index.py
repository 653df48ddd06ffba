"""Index the transfers newest first: staff's transfer list reads a page of them.

The list (the API's and the back office's) is a page of every transfer in
(-created_at, id) order, the model's ordering; without the index, each view
reads and sorts every transfer.

Built with ``CREATE INDEX CONCURRENTLY`` on PostgreSQL, so the projection
goes on writing transfers while it is built (and plainly on SQLite, the
embedded mode). That statement cannot run inside a transaction, hence
``atomic = False``; the migration has this one operation, so there is
nothing else to leave half done.
"""

from django.db import migrations, models

from eventstore.migration_operations import PortableAddIndexConcurrently


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("transfers", "0002_teller_transfers"),
    ]

    operations = [
        PortableAddIndexConcurrently(
            model_name="transfersummary",
            index=models.Index(fields=["-created_at", "id"], name="transfers_created"),
        ),
    ]
