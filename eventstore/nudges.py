"""Nudges: the Celery messages that wake a partition's runner after a commit.

Publishing a Celery message costs about a millisecond of Python, more than
the append it follows. A partition whose nudge is still waiting in the queue
needs no second one: the runner reads everything committed before it starts.
So each nudge claims a short-lived Redis key per partition, and the task
releases it as it starts; while the key is held, appends send nothing. If a
message is lost, the key expires and the periodic sweep finds the partition.
"""

import logging
from functools import cache

import redis
from django.conf import settings
from django.db import connection, transaction

logger = logging.getLogger(__name__)

# Longer than a nudge waits in a healthy queue; after it, appends nudge again.
CLAIM_SECONDS = 10


def send_on_commit(partition: int) -> None:
    """Wake the partition's runner after this transaction commits, once.

    One callback per transaction sends every partition it appended to. It is
    found again among the connection's commit hooks, so a rolled-back
    transaction (whose hooks Django discards) gets a new one next time.
    """
    if not connection.in_atomic_block:
        send({partition})
        return
    pending = getattr(connection, "_eventstore_nudges", None)
    if pending is None or not any(
        callback is pending for _, callback, _ in connection.run_on_commit
    ):
        pending = _PendingNudges()
        connection._eventstore_nudges = pending
        transaction.on_commit(pending)
    pending.partitions.add(partition)


class _PendingNudges:
    def __init__(self):
        self.partitions: set[int] = set()

    def __call__(self):
        send(self.partitions)


def send(partitions: set[int]) -> None:
    """Wake the runners of these partitions, unless a nudge is already waiting."""
    from .tasks import process_partition_task

    for partition in sorted(partitions):
        try:
            if claim(partition):
                try:
                    process_partition_task.delay(partition)
                except Exception:
                    release(partition)
                    raise
        except Exception:
            # The sweep will find the partition; a lost nudge only delays.
            logger.exception("could not nudge partition %s; the sweep will", partition)


def claim(partition: int) -> bool:
    """Mark a nudge for the partition as waiting; False if one already is."""
    client = _redis()
    if client is None:
        return True
    return bool(client.set(_key(partition), 1, nx=True, ex=CLAIM_SECONDS))


def release(partition: int) -> None:
    """Let the next append nudge the partition again (the runner is starting)."""
    client = _redis()
    if client is not None:
        client.delete(_key(partition))


def release_all() -> None:
    """Forget every waiting nudge of this queue (after purging the queue)."""
    client = _redis()
    if client is not None:
        client.delete(*[_key(p) for p in range(settings.EVENTSTORE_PARTITIONS)])


def _key(partition: int) -> str:
    return f"eventstore:nudge:{settings.CELERY_TASK_DEFAULT_QUEUE}:{partition}"


@cache
def _redis() -> redis.Redis | None:
    """Return a client of the broker's Redis, or None when there is none to ask."""
    url = settings.CELERY_BROKER_URL
    if settings.CELERY_TASK_ALWAYS_EAGER or not url.startswith(
        ("redis://", "rediss://")
    ):
        return None
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
