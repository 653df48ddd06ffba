"""Celery tasks of the event store: thin wrappers around the runner.

Messages are nudges only. Each task is safe to run twice or never: the
checkpoint lock decides who handles what, and the sweep finds any partition a
lost message would have woken.
"""

from celery import shared_task

# verification: imported to register its tasks with the worker.
from . import nudges, subscriptions, verification  # noqa: F401
from .store import create_partitions


@shared_task(acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def process_partition_task(partition: int) -> int:
    nudges.release(partition)
    return subscriptions.process_partition(partition)


@shared_task(name="eventstore.tasks.sweep_partitions", ignore_result=True)
def sweep_partitions() -> list[int]:
    # Puts back a nudge claim row someone deleted (appends would not nudge).
    create_partitions(subscriptions.partitions())
    behind = subscriptions.partitions_behind()
    for partition in behind:
        process_partition_task.delay(partition)
    return behind
