"""The process manager: the subscription whose handlers run a transfer's steps.

On ``TransferRequested`` it debits the source, on ``Debited`` it credits the
target (or refunds the source). Each handler runs inside the subscription's
batch transaction, which also moves the checkpoint, so the account's money
event, the transfer's outcome and the checkpoint commit together: a worker
killed mid-batch leaves nothing half done, and a redelivered batch finds the
work done (the steps are idempotent anyway).

A batch appends to many partitions (the accounts of its transfers live
anywhere) and holds each partition's lock until it commits. Two batches
taking those locks in different orders would deadlock, and PostgreSQL only
notices after ``deadlock_timeout``; so before its handlers run, a batch locks
the partitions of every stream it will write, in partition order
(``lock_batch_partitions``). Batches touching the same partitions queue;
writers to other partitions never wait.
"""

import logging

from accounts.domain import Account
from eventstore.store import RecordedEvent, lock_partitions
from eventstore.subscriptions import subscription

from . import services
from .domain import Transfer
from .events import Debited, TransferRequested


def lock_batch_partitions(batch: list[RecordedEvent]) -> None:
    """Lock the partitions of the transfers and accounts this batch writes to."""
    streams = set()
    for recorded in batch:
        event = recorded.event
        streams.add(recorded.stream_id)
        if isinstance(event, TransferRequested):
            streams.add(Account.stream_id_for(event.from_account))
        elif isinstance(event, Debited):
            streams.add(Account.stream_id_for(event.from_account))
            streams.add(Account.stream_id_for(event.to_account))
    lock_partitions(streams)


logger = logging.getLogger(__name__)

# A batch locks the partitions of every account it touches until it commits,
# so a small batch keeps other workers' batches (and requests) waiting less:
# python -m bench.transfers measured 10 faster than 25 or 5, and with a lower p95.
process = subscription(
    "transfers.process",
    batch_size=10,
    prepare_batch=lock_batch_partitions,
    priority=1,
    skip_advice=(
        "Skipping a transfer's step strands the transfer, its money perhaps in"
        " transit: then resume or refund it from its page, or with"
        " manage.py stranded_transfers."
    ),
)


@process.handles(TransferRequested)
def on_transfer_requested(recorded: RecordedEvent) -> None:
    transfer_id = Transfer.id_from_stream(recorded.stream_id)
    log_step(services.transfer_debit(transfer_id=transfer_id), "debit")


@process.handles(Debited)
def on_debited(recorded: RecordedEvent) -> None:
    transfer_id = Transfer.id_from_stream(recorded.stream_id)
    log_step(services.transfer_credit(transfer_id=transfer_id), "credit")


def log_step(transfer: Transfer, step: str) -> None:
    """Log a step's outcome; the line carries the request's correlation id."""
    reason = f" ({transfer.failure_reason})" if transfer.failure_reason else ""
    logger.info(
        "transfer %s: %s step done, %s%s", transfer.id, step, transfer.status, reason
    )
