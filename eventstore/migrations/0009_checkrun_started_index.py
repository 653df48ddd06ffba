"""Index the check runs by time: the operations page shows the latest ones.

Built with ``CREATE INDEX CONCURRENTLY`` on PostgreSQL, so the jobs that
record runs are not blocked while it is built (and plainly on SQLite, the
embedded mode). That statement cannot run inside a transaction, hence
``atomic = False``; the migration has this one operation, so there is
nothing else to leave half done.
"""

from django.db import migrations, models

from eventstore.migration_operations import PortableAddIndexConcurrently


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("eventstore", "0008_append_refuses_another_partition"),
    ]

    operations = [
        PortableAddIndexConcurrently(
            model_name="checkrun",
            index=models.Index(
                fields=["-started_at", "-id"], name="eventstore_checkrun_started"
            ),
        ),
    ]
