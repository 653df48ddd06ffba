"""Index the completion times: the operations page charts the last day's.

Partial: only completed transfers have one.

Built concurrently on PostgreSQL, plainly on SQLite, as in 0003.
"""

from django.db import migrations, models

from eventstore.migration_operations import PortableAddIndexConcurrently


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("transfers", "0003_transfer_created_index"),
    ]

    operations = [
        PortableAddIndexConcurrently(
            model_name="transfersummary",
            index=models.Index(
                condition=models.Q(("completed_at__isnull", False)),
                fields=["completed_at"],
                name="transfers_completed",
            ),
        ),
    ]
