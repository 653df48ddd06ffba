"""Subscriptions: named handlers that follow the partitions of the event table.

A subscription (a projection or a process manager) keeps one checkpoint row
per partition. Whoever holds the lock on that row (``SELECT ... FOR UPDATE
SKIP LOCKED``) holds the lease on the partition: it reads the next batch of
events after the checkpoint, runs the handlers, and moves the checkpoint, all
in one transaction. So a handler's database writes happen exactly once even
when a Celery message is delivered twice or a worker dies mid-batch; the
messages are only nudges.

A handler that raises stops its partition at that event: the events before
it are committed, the error is written after the rollback, and the partition
is retried with a backoff kept in the database. An operator can retry at once
or skip the event with a reason.
"""

import dataclasses
import datetime
import logging
import traceback
from collections.abc import Callable, Iterable, Iterator

from django.db import OperationalError, transaction
from django.db.models import Q
from django.utils import timezone

from . import events as event_registry
from . import nudges
from .context import metadata_context
from .errors import ConcurrencyError, UnreadableEvent, is_transient
from .models import Checkpoint, Event, SkippedEvent
from .store import (
    RecordedEvent,
    head_sequence,
    partition_count,
    partition_for,
    partition_heads,
    read_partition,
)

logger = logging.getLogger(__name__)

Handler = Callable[[RecordedEvent], None]
BatchHandler = Callable[[list[RecordedEvent]], None]

MAX_BACKOFF_SECONDS = 300
TRANSIENT_ATTEMPTS = 5


@dataclasses.dataclass
class Subscription:
    """A named set of handlers: one per event type, or one for whole batches."""

    name: str
    batch_size: int = 200
    # Empties the subscription's read model, for a rebuild from the start.
    reset: Callable[[], None] | None = None
    # The models of the read model that ``reset`` empties, for verification.
    read_models: tuple[type, ...] = ()
    # Runs in the batch's transaction before its handlers, with the whole
    # batch: a handler set that appends to several streams locks their
    # partitions here, in order (``store.lock_partitions``), so two batches
    # never deadlock.
    prepare_batch: Callable[[list[RecordedEvent]], None] | None = None
    # Higher runs first in each pass over a partition: a process manager's
    # next step should not wait behind read models.
    priority: int = 0
    handlers: dict[str, Handler] = dataclasses.field(default_factory=dict)
    # Instead of per-event handlers: one function given each whole batch of
    # the event types in ``batch_types``, for read models written in bulk.
    batch_handler: BatchHandler | None = None
    batch_types: tuple[str, ...] = ()
    # What an operator should know before skipping one of its events: shown
    # beside the skip form and after a skip (``skip_failed_event``'s callers).
    skip_advice: str = ""

    def handles(self, *event_classes: type) -> Callable[[Handler], Handler]:
        """Register the decorated function as the handler of these event classes."""
        _require_event_classes(self, event_classes)

        def register(handler: Handler) -> Handler:
            if self.batch_handler is not None:
                raise ValueError(f"{self.name} already has a batch handler")
            for cls in event_classes:
                name = event_registry.event_type_of_class(cls).name
                if name in self.handlers:
                    raise ValueError(f"{self.name} already handles {name}")
                self.handlers[name] = handler
            return handler

        return register

    def handles_batch(
        self, *event_classes: type
    ) -> Callable[[BatchHandler], BatchHandler]:
        """Register the decorated function as the handler of whole batches.

        It gets the batch's events of these classes, in partition order, and
        must handle all of them (in bulk, typically) or raise.
        """
        _require_event_classes(self, event_classes)

        def register(handler: BatchHandler) -> BatchHandler:
            if self.handlers or self.batch_handler is not None:
                raise ValueError(f"{self.name} already has handlers")
            self.batch_handler = handler
            self.batch_types = tuple(
                event_registry.event_type_of_class(cls).name for cls in event_classes
            )
            return handler

        return register

    @property
    def event_types(self) -> list[str]:
        return sorted(self.batch_types or self.handlers)


def _require_event_classes(sub: Subscription, event_classes: tuple) -> None:
    # A handler of no event type would read nothing, and the runner would move
    # the checkpoints past every event, for good and in silence.
    if not event_classes:
        raise ValueError(f"{sub.name}: a handler must handle at least one event class")


_subscriptions: dict[str, Subscription] = {}


def subscription(name: str, **options) -> Subscription:
    """Create and register a subscription (once per name, at import time)."""
    if name in _subscriptions:
        raise ValueError(f"a subscription named {name!r} already exists")
    created = Subscription(name=name, **options)
    _subscriptions[name] = created
    return created


def get_subscription(name: str) -> Subscription:
    try:
        return _subscriptions[name]
    except KeyError:
        raise LookupError(f"no subscription named {name!r}") from None


def all_subscriptions() -> list[Subscription]:
    """Return every subscription, highest priority first."""
    return sorted(_subscriptions.values(), key=lambda sub: -sub.priority)


def partitions() -> range:
    return range(partition_count())


# Running


@dataclasses.dataclass
class _HandlerFailed(Exception):
    # Position in the batch of the event that failed; None when a batch
    # handler failed somewhere in its batch.
    index: int | None
    recorded: RecordedEvent | None
    sequence: int
    error: str


def process_partition(
    partition: int, subscriptions: Iterable[Subscription] | None = None
) -> int:
    """Handle every new event of a partition for each subscription; return the count.

    Each subscription with work to do runs until it has caught up with the
    partition, is stopped by an error, or another worker holds its lease.
    """
    subs = list(subscriptions) if subscriptions is not None else all_subscriptions()
    return sum(
        _run_until_caught_up(sub, partition)
        for sub in _with_work(_with_handlers(subs), partition)
    )


def catching_up(subscription_name: str, stream_id: str) -> bool:
    """Tell whether the subscription is still to handle events of the stream.

    That is, its checkpoint in the stream's partition is behind the head and
    not stopped (or not there yet: its runner has not started). A page that
    waits for a read model asks before it waits again.
    """
    partition = partition_for(stream_id)
    checkpoint = (
        Checkpoint.objects.filter(subscription=subscription_name, partition=partition)
        .values_list("sequence", "failed_sequence")
        .first()
    )
    if checkpoint is None:
        return True
    sequence, failed_sequence = checkpoint
    return failed_sequence is None and sequence < head_sequence(partition)


def _with_handlers(subs: list[Subscription]) -> list[Subscription]:
    """Return the subscriptions that handle some event type; log the others.

    One with no handlers (the module that registers them was not imported in
    this process, say) reads no event type: run, it would move its
    checkpoints past every event, for good and in silence.
    """
    for sub in subs:
        if not sub.event_types and sub.name not in _reported_without_handlers:
            # Once per process: every nudge and sweep would say it again.
            _reported_without_handlers.add(sub.name)
            logger.error(
                "%s: not run, its checkpoints stay where they are",
                no_handlers_message(sub),
            )
    return [sub for sub in subs if sub.event_types]


_reported_without_handlers: set[str] = set()


def no_handlers_message(sub: Subscription) -> str:
    return (
        f"{sub.name} has no handlers in this process (is the module that "
        "registers them imported?)"
    )


def _with_work(subs: list[Subscription], partition: int) -> list[Subscription]:
    """Return the subscriptions not at the partition's head and not backing off.

    One beyond the head has work too: the runner stops it there (see
    ``_stop_beyond_head``).
    """
    head = head_sequence(partition)
    if not head or not subs:
        return []
    idle = set(
        Checkpoint.objects.filter(
            subscription__in=[sub.name for sub in subs], partition=partition
        )
        .filter(
            Q(sequence=head)
            | Q(failed_sequence__isnull=False, retry_at__gt=timezone.now())
        )
        .values_list("subscription", flat=True)
    )
    return [sub for sub in subs if sub.name not in idle]


def catch_up(subscriptions: Iterable[Subscription] | None = None) -> int:
    """Run every partition in this process until nothing is left (tests, fallback).

    Handlers may append events that other subscriptions (or they themselves)
    handle, so passes repeat until one handles nothing.
    """
    subs = list(subscriptions) if subscriptions is not None else all_subscriptions()
    total = 0
    while True:
        handled = sum(process_partition(partition, subs) for partition in partitions())
        total += handled
        if not handled:
            return total


def _run_until_caught_up(sub: Subscription, partition: int) -> int:
    handled = 0
    transient_failures = 0
    while True:
        try:
            batch = _handle_batch(sub, partition, sub.batch_size)
        except _HandlerFailed as failure:
            if failure.index is None:
                return handled + _handle_one_by_one(sub, partition)
            if failure.index > 0:
                # Commit the events before the failing one, then stop there.
                # They are handled again, and one of them may fail this time.
                try:
                    batch = _handle_batch(sub, partition, failure.index)
                except _HandlerFailed as earlier:
                    if earlier.index is None:  # a batch handler: find which
                        return handled + _handle_one_by_one(sub, partition)
                    failure = earlier
                else:
                    if batch is None:
                        # Another runner has the partition now and meets the
                        # failure itself. Recorded here, it would stop the
                        # partition at an event with unhandled ones before it.
                        return handled
                    handled += batch[0]
            _record_failure(sub, partition, failure)
            return handled
        except (OperationalError, ConcurrencyError) as error:
            if not is_transient(error) or transient_failures >= TRANSIENT_ATTEMPTS:
                raise
            transient_failures += 1
            logger.info("retrying %s[%s] after %s", sub.name, partition, error)
            continue
        if batch is None:  # another runner holds the lease, or a backoff waits
            return handled
        count, _ = batch
        handled += count
        # A batch that handled something may have appended events to this
        # very partition (a process manager's next step): look again. After
        # one that found nothing, look at the head once more, now that the
        # lease is free: a runner nudged while this one held it was turned
        # away and left its events to this one.
        if not count and not _with_work([sub], partition):
            return handled


def _handle_one_by_one(sub: Subscription, partition: int) -> int:
    """Handle single-event batches until the failing event shows itself."""
    handled = 0
    for _ in range(sub.batch_size):
        try:
            batch = _handle_batch(sub, partition, 1)
        except _HandlerFailed as failure:
            _record_failure(sub, partition, failure)
            return handled
        if batch is None:
            break
        count, more = batch
        handled += count
        if not more:
            break
    return handled


def handling_context(recorded: RecordedEvent):
    """Carry the event's correlation id into whatever its handler appends.

    Events a handler appends are caused by the handled event and share its
    correlation id, so one request can be followed across processes.
    """
    return metadata_context(
        correlation_id=recorded.metadata.get("correlation_id")
        or str(recorded.event_id),
        causation_id=str(recorded.event_id),
    )


def _handle_batch(
    sub: Subscription, partition: int, limit: int
) -> tuple[int, bool] | None:
    """Handle up to ``limit`` events in one transaction; return (count, more to do).

    Return None, reading nothing, if another worker holds the lease or the
    partition waits for its backoff.
    """
    with transaction.atomic():
        checkpoint = _lease(sub, partition)
        if checkpoint is None:  # another worker holds the lease
            return None
        if (
            checkpoint.is_stopped
            and checkpoint.retry_at
            and checkpoint.retry_at > timezone.now()
        ):
            return None
        try:
            events, head = read_partition(
                partition,
                after_sequence=checkpoint.sequence,
                limit=limit,
                event_types=sub.event_types,
            )
        except UnreadableEvent as error:
            raise _HandlerFailed(
                error.index, None, error.sequence, str(error)
            ) from error
        if checkpoint.sequence > head:
            _stop_beyond_head(sub, checkpoint, head)
            return 0, False
        handle(sub, events)
        full = len(events) == limit
        new_sequence = events[-1].sequence if full else head
        if new_sequence != checkpoint.sequence or checkpoint.is_stopped:
            checkpoint.sequence = new_sequence
            _clear_failure(checkpoint)
            checkpoint.save()
    return len(events), full


def handle(sub: Subscription, events: list[RecordedEvent]) -> None:
    """Run a subscription's ``prepare_batch`` and handlers over a batch of events.

    The runner, a rebuild and verification all handle batches this way;
    raises ``_HandlerFailed`` on a handler's or ``prepare_batch``'s failure.
    """
    if not events:
        return
    if sub.prepare_batch is not None:
        try:
            sub.prepare_batch(events)
        except Exception as error:
            if is_transient(error):
                raise
            # Not known which event it cannot prepare for: the runner finds
            # it one by one, and the stop shows the error, as a handler's.
            raise _HandlerFailed(
                None, None, events[0].sequence, traceback.format_exc()
            ) from error
    if sub.batch_handler is not None:
        _run_batch_handler(sub, events)
    else:
        _run_handlers(sub, events)


def _run_handlers(sub: Subscription, events: list[RecordedEvent]) -> None:
    for index, recorded in enumerate(events):
        try:
            with handling_context(recorded):
                sub.handlers[recorded.event_type](recorded)
                logger.debug(
                    "%s handled %s %s v%s",
                    sub.name,
                    recorded.event_type,
                    recorded.stream_id,
                    recorded.version,
                )
        except Exception as error:
            raise _HandlerFailed(
                index, recorded, recorded.sequence, traceback.format_exc()
            ) from error


def _run_batch_handler(sub: Subscription, events: list[RecordedEvent]) -> None:
    try:
        sub.batch_handler(events)
    except Exception as error:
        if len(events) == 1:
            raise _HandlerFailed(
                0, events[0], events[0].sequence, traceback.format_exc()
            ) from error
        # Not known which event failed: the runner finds it one by one.
        raise _HandlerFailed(
            None, None, events[0].sequence, traceback.format_exc()
        ) from error


# A checkpoint's fields with no stop recorded.
_NO_FAILURE = {
    "failed_sequence": None,
    "failed_event_id": None,
    "error": "",
    "attempts": 0,
    "failed_at": None,
    "retry_at": None,
}


def _clear_failure(checkpoint: Checkpoint) -> None:
    for field, value in _NO_FAILURE.items():
        setattr(checkpoint, field, value)


def _stop_beyond_head(sub: Subscription, checkpoint: Checkpoint, head: int) -> None:
    """Stop a partition whose checkpoint is past its last event, with the error.

    Sequences only grow, so a checkpoint beyond its head was set under other
    partition numbers (or by hand). Read as caught up, it would pass over the
    partition's new events in silence until they reached it; moved back to
    the head, it would pass over those already there. Which of them were
    handled only an operator can say. Nothing was handled in this
    transaction, so the stop is written in it, under the lease.
    """
    _stop_at(
        checkpoint,
        head,
        Event.objects.filter(partition=checkpoint.partition, sequence=head)
        .values_list("event_id", flat=True)
        .first(),
        f"checkpoint at {checkpoint.sequence} beyond the partition's head "
        f"{head}: the partitions were renumbered? Place this subscription's "
        "checkpoints as README's 'Changing the number of partitions' says.",
    )
    logger.error(
        "subscription %s stopped at partition %s: %s",
        sub.name,
        checkpoint.partition,
        checkpoint.error,
    )


def _stop_at(checkpoint: Checkpoint, sequence: int, event_id, error: str) -> None:
    """Save the checkpoint stopped at ``sequence``, retried after a backoff."""
    now = timezone.now()
    same_event = checkpoint.failed_sequence == sequence
    checkpoint.attempts = checkpoint.attempts + 1 if same_event else 1
    checkpoint.failed_sequence = sequence
    checkpoint.failed_event_id = event_id
    checkpoint.error = error
    checkpoint.failed_at = now
    checkpoint.retry_at = now + datetime.timedelta(
        seconds=min(2**checkpoint.attempts, MAX_BACKOFF_SECONDS)
    )
    checkpoint.save()


def _record_failure(sub: Subscription, partition: int, failure: _HandlerFailed) -> None:
    """Write the error after the handler's transaction rolled back."""
    ensure_checkpoints([sub], [partition])  # if created by the rolled-back batch
    with transaction.atomic():
        checkpoint = Checkpoint.objects.select_for_update().get(
            subscription=sub.name, partition=partition
        )
        if checkpoint.sequence >= failure.sequence:
            # Another runner took the lease after the rollback and handled
            # the event: the failure was transient. Recording it would show
            # a stop that is not there, and a skip would move the
            # checkpoint back, handling events twice.
            logger.info(
                "%s[%s] failed at sequence %s, which it has passed since",
                sub.name,
                partition,
                failure.sequence,
            )
            return
        _stop_at(
            checkpoint,
            failure.sequence,
            failure.recorded.event_id
            if failure.recorded
            # An event that could not be decoded: its id from its row.
            else Event.objects.filter(partition=partition, sequence=failure.sequence)
            .values_list("event_id", flat=True)
            .first(),
            failure.error,
        )
    logger.error(
        "subscription %s stopped at partition %s sequence %s (attempt %s): %s",
        sub.name,
        partition,
        failure.sequence,
        checkpoint.attempts,
        failure.error.strip().splitlines()[-1] if failure.error.strip() else "",
    )


def _lease(sub: Subscription, partition: int) -> Checkpoint | None:
    """Lock the checkpoint of (sub, partition), creating it first if missing.

    Return None if another worker holds it. Inside a transaction.
    """
    leases = Checkpoint.objects.select_for_update(skip_locked=True)
    for _ in range(2):
        try:
            return leases.get(subscription=sub.name, partition=partition)
        except Checkpoint.DoesNotExist:  # missing, or locked by another worker
            ensure_checkpoints([sub], [partition])
    return None


def ensure_checkpoints(subs: Iterable[Subscription], parts: Iterable[int]) -> None:
    """Create these subscriptions' missing checkpoint rows in these partitions."""
    Checkpoint.objects.bulk_create(
        [Checkpoint(subscription=sub.name, partition=p) for sub in subs for p in parts],
        ignore_conflicts=True,
    )


# Delivery


def partitions_behind() -> list[int]:
    """Return the partitions where some subscription has work it may do now."""
    subs = all_subscriptions()
    ensure_checkpoints(subs, partitions())
    waiting = Q(failed_sequence__isnull=False, retry_at__gt=timezone.now())
    checkpoints = list(
        Checkpoint.objects.filter(subscription__in=[sub.name for sub in subs])
        .exclude(waiting)
        .values_list("partition", "sequence")
    )
    # Read after the checkpoints, the heads are at or past every one of them
    # but those set beyond their head: a runner stops those, for all to see.
    heads = partition_heads()
    return sorted(
        {
            partition
            for partition, sequence in checkpoints
            if heads.get(partition, 0) and sequence != heads[partition]
        }
    )


# Operations


@dataclasses.dataclass(frozen=True)
class PartitionStatus:
    subscription: str
    partition: int
    sequence: int
    head: int
    failed_sequence: int | None
    error: str
    attempts: int
    retry_at: datetime.datetime | None

    @property
    def lag(self) -> int:
        """Return how many events may wait: all of them past a checkpoint's head.

        A checkpoint beyond its head (partitions renumbered) tells nothing of
        which events it has handled.
        """
        if self.sequence > self.head:
            return self.head
        return self.head - self.sequence


def subscription_status() -> list[PartitionStatus]:
    """Return each subscription's position, lag and error in every partition.

    Reads only: a partition no runner has visited yet shows position 0.
    """
    stored = {
        (c.subscription, c.partition): c
        for c in Checkpoint.objects.filter(
            subscription__in=[s.name for s in all_subscriptions()]
        )
    }
    # Read after the checkpoints, so a checkpoint a runner moved meanwhile
    # does not show as beyond its head (and every event as lag).
    heads = partition_heads()
    statuses = []
    for sub in all_subscriptions():
        for partition in partitions():
            c = stored.get((sub.name, partition)) or Checkpoint(
                subscription=sub.name, partition=partition
            )
            statuses.append(
                PartitionStatus(
                    subscription=sub.name,
                    partition=partition,
                    sequence=c.sequence,
                    head=heads.get(partition, 0),
                    failed_sequence=c.failed_sequence,
                    error=c.error,
                    attempts=c.attempts,
                    retry_at=c.retry_at,
                )
            )
    return statuses


def retry_partition(subscription_name: str, partition: int) -> None:
    """Let a stopped partition try its failed event again now."""
    get_subscription(subscription_name)
    if partition not in partitions():
        raise ValueError(f"there is no partition {partition}")
    stopped = Checkpoint.objects.filter(
        subscription=subscription_name,
        partition=partition,
        failed_sequence__isnull=False,
    ).update(retry_at=timezone.now())
    if not stopped:
        raise ValueError(f"{subscription_name}[{partition}] is not stopped")
    nudges.send_on_commit(partition)


def skip_failed_event(
    subscription_name: str, partition: int, *, sequence: int, reason: str, actor=None
) -> SkippedEvent:
    """Move a stopped partition past its failed event, recording who and why.

    ``sequence`` is the failed event the operator looked at. If the partition
    has since moved on and stopped at another event (or the same skip is sent
    twice), refuse: skipping an event nobody looked at may strand money.
    """
    if not reason.strip():
        raise ValueError("a reason is required to skip an event")
    sub = get_subscription(subscription_name)
    if partition not in partitions():
        raise ValueError(f"there is no partition {partition}")
    ensure_checkpoints([sub], [partition])
    with transaction.atomic():
        checkpoint = Checkpoint.objects.select_for_update().get(
            subscription=subscription_name, partition=partition
        )
        if not checkpoint.is_stopped:
            raise ValueError(f"{subscription_name}[{partition}] is not stopped")
        if checkpoint.failed_sequence != sequence:
            raise ValueError(
                f"{subscription_name}[{partition}] is stopped at sequence "
                f"{checkpoint.failed_sequence} now, not {sequence}; look again"
            )
        if checkpoint.sequence >= sequence:
            # Stopped beyond its head: a skip would pass over events nobody
            # knows were handled.
            raise ValueError(
                f"{subscription_name}[{partition}] is at sequence "
                f"{checkpoint.sequence}, past {sequence}: a skip cannot help; "
                "see its error"
            )
        # A skip moves the checkpoint to the failed event: every event of the
        # subscription before it must be handled already, or it would be
        # passed over with no record. (Sequences only: the failed event may
        # be one that cannot be decoded.)
        first_unhandled = (
            Event.objects.filter(
                partition=partition,
                sequence__gt=checkpoint.sequence,
                event_type__in=sub.event_types,
            )
            .order_by("sequence")
            .values_list("sequence", flat=True)
            .first()
        )
        if first_unhandled is not None and first_unhandled < sequence:
            raise ValueError(
                f"{subscription_name}[{partition}] has events before sequence "
                f"{sequence} not handled yet (from {first_unhandled}); retry "
                "the partition first"
            )
        skipped = SkippedEvent.objects.create(
            subscription=subscription_name,
            partition=partition,
            sequence=checkpoint.failed_sequence,
            event_id=checkpoint.failed_event_id,
            error=checkpoint.error,
            reason=reason,
            skipped_by=actor,
        )
        checkpoint.sequence = checkpoint.failed_sequence
        _clear_failure(checkpoint)
        checkpoint.save()
        nudges.send_on_commit(partition)
    return skipped


def move_checkpoints_to_heads() -> None:
    """Put every subscription's checkpoints at their partitions' heads, unstopped.

    Only for the offline change of the number of partitions (README): the
    new sequences say nothing of the old checkpoints, so every subscription
    must have handled every event before the change; then the heads are
    where they are. Checkpoints of partitions no longer there go.
    """
    names = [sub.name for sub in all_subscriptions()]
    with transaction.atomic():
        Checkpoint.objects.filter(subscription__in=names).exclude(
            partition__in=partitions()
        ).delete()
        ensure_checkpoints(all_subscriptions(), partitions())
        checkpoints = Checkpoint.objects.filter(subscription__in=names)
        # Wait for any runner still at work; hold the others off until commit.
        list(checkpoints.select_for_update().order_by("subscription", "partition"))
        for partition in partitions():
            checkpoints.filter(partition=partition).update(
                **_cleared_at(head_sequence(partition))
            )


# Rebuilding

# A rebuild reads this many events at a time. More than a live batch: nobody
# waits on a rebuild's batches, and each one costs a few round trips per read
# model however many events it holds. Memory grows with this, not with the
# number of events.
REBUILD_BATCH_SIZE = 5000


def rebuild(
    subscription_name: str, *, progress: Callable[[int], None] | None = None
) -> int:
    """Empty a subscription's read model and replay every event into it.

    Runs in one transaction, so readers see the old read model until the new
    one is complete. Return the number of events handled.
    """
    report = None
    if progress is not None:

        def report(name: str, count: int) -> None:
            progress(count)

    return rebuild_together([subscription_name], progress=report)[subscription_name]


def rebuild_together(
    names: Iterable[str], *, progress: Callable[[str, int], None] | None = None
) -> dict[str, int]:
    """Empty several subscriptions' read models and replay every event into them.

    One pass: each partition is read once, in batches, and every batch goes
    to each subscription with the events it handles, so rebuilding several
    read models reads the event table once, not once each. Runs in one
    transaction, so readers see the old read models until all the new ones
    are complete. Events an operator skipped stay skipped, as they are in the
    live read model (one that cannot be decoded is not read: see
    ``read_for_replay``). Return the number of events each subscription
    handled.
    """
    subs = [get_subscription(name) for name in dict.fromkeys(names)]
    for sub in subs:
        if sub.reset is None:
            raise ValueError(f"{sub.name} has no reset and cannot be rebuilt")
        if not sub.event_types:  # it would be emptied and given nothing
            raise ValueError(f"{no_handlers_message(sub)} and cannot be rebuilt")
    types_of = {sub.name: set(sub.event_types) for sub in subs}
    handled = dict.fromkeys(types_of, 0)
    ensure_checkpoints(subs, partitions())
    with transaction.atomic():
        checkpoints = Checkpoint.objects.filter(subscription__in=handled)
        # Wait for the runners' batches to end; hold them off until commit.
        list(checkpoints.select_for_update().order_by("subscription", "partition"))
        # Read under the locks: a skip takes its checkpoint's lock too.
        skipped = skipped_events(handled)
        for sub in subs:
            sub.reset()
        for partition in partitions():
            batches = read_for_replay(
                partition, subs, skipped, limit=REBUILD_BATCH_SIZE
            )
            caught_up_to = 0
            try:
                for events, read_to in batches:
                    for sub in subs:
                        mine = [
                            e
                            for e in events
                            if e.event_type in types_of[sub.name]
                            and not skipped(sub.name, e)
                        ]
                        if mine:
                            _rebuild_batch(sub, partition, mine)
                            handled[sub.name] += len(mine)
                            if progress:
                                progress(sub.name, len(mine))
                    caught_up_to = read_to
            except UnreadableEvent as error:
                raise RuntimeError(
                    f"rebuild failed at partition {partition} "
                    f"sequence {error.sequence}: {error}"
                ) from None
            checkpoints.filter(partition=partition).update(**_cleared_at(caught_up_to))
    return handled


def read_for_replay(
    partition: int,
    subs: list[Subscription],
    skipped: Callable[[str, RecordedEvent | Event], bool],
    *,
    limit: int,
    up_to: int | None = None,
) -> Iterator[tuple[list[RecordedEvent], int]]:
    """Yield a partition's events of these subscriptions from the start, in batches.

    Each batch comes with the sequence it was read up to: at the end, the
    partition's head as read with the last batch, or ``up_to`` (a cut: the
    events after it are left out). A rebuild and a verification replay this
    way. An event that cannot be decoded raises ``UnreadableEvent``, unless
    each of these subscriptions that handles its type skipped it (see
    ``skipped_events``) or it lies after ``up_to``: then it is passed over
    unread, as the live runner passed over the skipped event.
    """
    event_types = sorted({name for sub in subs for name in sub.event_types})
    after = 0
    while up_to is None or after < up_to:
        try:
            events, head = read_partition(
                partition, after_sequence=after, limit=limit, event_types=event_types
            )
        except UnreadableEvent as error:
            if not _passed_over(error, subs, skipped, up_to):
                raise
            # The events before it, read again; the next read starts after it.
            events = (
                read_partition(
                    partition,
                    after_sequence=after,
                    limit=error.index,
                    event_types=event_types,
                )[0]
                if error.index
                else []
            )
            after, caught_up = error.sequence, False
        else:
            caught_up = len(events) < limit
            after = head if caught_up else events[-1].sequence
        if up_to is not None and after >= up_to:
            yield [e for e in events if e.sequence <= up_to], up_to
            return
        yield events, after
        if caught_up:
            return


def _passed_over(
    error: UnreadableEvent,
    subs: list[Subscription],
    skipped: Callable[[str, RecordedEvent | Event], bool],
    up_to: int | None,
) -> bool:
    """Return whether ``read_for_replay`` may pass over an event it cannot decode."""
    if up_to is not None and error.sequence > up_to:
        return True
    # Its id and type, from its row: the event cannot be decoded.
    event = Event.objects.only("event_id", "partition", "sequence", "event_type").get(
        partition=error.partition, sequence=error.sequence
    )
    return all(
        skipped(sub.name, event) for sub in subs if event.event_type in sub.event_types
    )


def skipped_events(
    subscription_names: Iterable[str],
) -> Callable[[str, RecordedEvent | Event], bool]:
    """Return a test: did an operator skip this event for this subscription?

    A skip is found by its event id, which renumbering partitions (README)
    keeps, or by its position if it was recorded without one. The event is
    one read (a ``RecordedEvent``) or a stored row that cannot be decoded.
    """
    by_id = set()
    by_position = set()
    for name, partition, sequence, event_id in SkippedEvent.objects.filter(
        subscription__in=list(subscription_names)
    ).values_list("subscription", "partition", "sequence", "event_id"):
        if event_id is None:
            by_position.add((name, partition, sequence))
        else:
            by_id.add((name, event_id))

    def skipped(name: str, event: RecordedEvent | Event) -> bool:
        return (name, event.event_id) in by_id or (
            name,
            event.partition,
            event.sequence,
        ) in by_position

    return skipped


def _rebuild_batch(
    sub: Subscription, partition: int, events: list[RecordedEvent]
) -> None:
    try:
        handle(sub, events)
    except _HandlerFailed as failure:
        raise RuntimeError(
            f"rebuild of {sub.name} failed at partition {partition} "
            f"sequence {failure.sequence}: {failure.error}"
        ) from None


def _cleared_at(sequence: int) -> dict:
    """The fields of a checkpoint moved to ``sequence``, with no stop recorded."""
    return {"sequence": sequence, **_NO_FAILURE, "updated_at": timezone.now()}
