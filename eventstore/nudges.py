"""Nudges: the Celery messages that wake a partition's runner after a commit.

A partition whose nudge is still waiting in the queue needs no second one:
the runner reads everything committed before it starts. So an append claims
the partition's nudge in the same database call that stores its events
(``eventstore_claim_nudge``, migration 0010): it sets the partition's
``NudgeClaim`` unless a claim younger than 10 seconds is there, and only a
transaction that set it sends a nudge, after commit. The task clears the
claim as it starts, once the partition's open appends have ended (one of
them may have seen the claim and counted on this nudge). A claim rolls back
with its transaction; if a message is lost, the claim expires and meanwhile
the periodic sweep finds the partition.
Publishing a Celery message costs about a millisecond of Python, more than
the append it follows, so this saves most of them under load.

On SQLite (the embedded fallback, where tasks run eagerly) every append
nudges.
"""

import logging

import psycopg.errors
from django.db import OperationalError, connection, transaction

from .models import NudgeClaim

logger = logging.getLogger(__name__)

RELEASE_LOCK_TIMEOUT = "5s"


def send_on_commit(partition: int) -> None:
    """Wake the partition's runner after this transaction commits, once.

    One callback per transaction sends every partition it asked for. It is
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
    """Send a nudge to the runner of each of these partitions."""
    from .tasks import process_partition_task

    for partition in sorted(partitions):
        try:
            process_partition_task.delay(partition)
        except Exception:
            # The sweep will find the partition; a lost nudge only delays.
            logger.exception("could not nudge partition %s; the sweep will", partition)


def release(partition: int) -> None:
    """Let the next append nudge the partition again (the runner is starting).

    First wait for the appends to the partition still open (each holds the
    partition's lock until it ends): one of them may have seen the claim and
    sent no nudge, counting on this runner, which must therefore read after
    it commits. An append that comes later finds no claim and nudges. If the
    lock is held for longer than ``RELEASE_LOCK_TIMEOUT`` (a transaction left
    open), give up: the claim expires and the sweep finds the partition.
    """
    if connection.vendor != "postgresql":
        return
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"SET LOCAL lock_timeout = '{RELEASE_LOCK_TIMEOUT}'")
            cursor.execute("SELECT eventstore_lock_partition(%s)", [partition])
            cursor.execute(
                "UPDATE eventstore_nudgeclaim SET claimed_at = NULL"
                " WHERE partition = %s AND claimed_at IS NOT NULL",
                [partition],
            )
    except OperationalError as error:
        if not isinstance(error.__cause__, psycopg.errors.LockNotAvailable):
            raise
        logger.warning(
            "partition %s: appends held its lock over %s; its claim stays until"
            " it expires",
            partition,
            RELEASE_LOCK_TIMEOUT,
        )


def release_all() -> None:
    """Forget every waiting nudge (after purging the queue)."""
    NudgeClaim.objects.update(claimed_at=None)
