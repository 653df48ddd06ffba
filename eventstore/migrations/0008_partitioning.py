"""Record the partition count the events are numbered with (``store.partition_count``).

The row is written by the first process that uses the store, not here: a
store migrated before this knows no count yet.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("eventstore", "0007_append_locks_head_row"),
    ]

    operations = [
        migrations.CreateModel(
            name="Partitioning",
            fields=[
                (
                    "id",
                    models.PositiveSmallIntegerField(
                        default=1, primary_key=True, serialize=False
                    ),
                ),
                ("partitions", models.PositiveSmallIntegerField()),
            ],
            options={
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("id", 1)),
                        name="eventstore_partitioning_one_row",
                    )
                ],
            },
        ),
    ]
