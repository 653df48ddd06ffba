"""Index the failure times: the operations page charts the last day's.

Partial: only failed transfers have one.

Built concurrently on PostgreSQL, plainly on SQLite, as in 0003.
"""

from django.db import migrations, models

from eventstore.migration_operations import PortableAddIndexConcurrently


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("transfers", "0004_transfer_completed_index"),
    ]

    operations = [
        PortableAddIndexConcurrently(
            model_name="transfersummary",
            index=models.Index(
                condition=models.Q(("failed_at__isnull", False)),
                fields=["failed_at"],
                name="transfers_failed",
            ),
        ),
    ]
