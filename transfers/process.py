"""The process manager: the subscription whose handlers run a transfer's steps.

On ``TransferRequested`` it debits the source, on ``Debited`` it credits the
target (or refunds the source). Each handler runs inside the subscription's
batch transaction, which also moves the checkpoint, so the account's money
event, the transfer's outcome and the checkpoint commit together: a worker
killed mid-batch leaves nothing half done, and a redelivered batch finds the
work done (the steps are idempotent anyway).

A batch appends to many partitions (the accounts of its transfers live
anywhere) and holds each partition's head lock until it commits. Two batches
taking those locks in different orders would deadlock, and PostgreSQL only
notices after ``deadlock_timeout``; so the first handler of a batch takes all
head locks at once, in partition order. Batches of this subscription then run
one at a time, which is what they would mostly do anyway since a batch of
transfers touches most partitions; the work is done in few, large
transactions.
"""

from django.conf import settings
from django.db import connection

from eventstore.models import PartitionHead
from eventstore.store import RecordedEvent
from eventstore.subscriptions import subscription

from . import services
from .domain import Transfer
from .events import Debited, TransferRequested

process = subscription("transfers.process", batch_size=100)

_LOCKED_MARK = "_transfers_partition_heads_locked"


@process.handles(TransferRequested)
def on_transfer_requested(recorded: RecordedEvent) -> None:
    lock_partition_heads()
    services.transfer_debit(transfer_id=Transfer.id_from_stream(recorded.stream_id))


@process.handles(Debited)
def on_debited(recorded: RecordedEvent) -> None:
    lock_partition_heads()
    services.transfer_credit(transfer_id=Transfer.id_from_stream(recorded.stream_id))


def lock_partition_heads() -> None:
    """Lock every partition's head row in order, once per transaction."""
    if not connection.in_atomic_block:
        return
    outermost = connection.atomic_blocks[0]
    if getattr(outermost, _LOCKED_MARK, False):
        return
    count = settings.EVENTSTORE_PARTITIONS
    locked = _lock_heads()
    if locked < count:
        PartitionHead.objects.bulk_create(
            [PartitionHead(partition=p) for p in range(count)], ignore_conflicts=True
        )
        _lock_heads()
    setattr(outermost, _LOCKED_MARK, True)


def _lock_heads() -> int:
    return len(
        PartitionHead.objects.select_for_update()
        .order_by("partition")
        .values_list("partition", flat=True)
    )
