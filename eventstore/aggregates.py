"""Aggregates rebuilt from their events, and the repository that stores them.

An aggregate subclass names its stream prefix, applies each event in a
``_when_<event_name_in_snake_case>`` method (which never checks rules: it must
replay any history) and records new events from command methods through
``_record``. ``Repository.save`` appends what was recorded at the version the
aggregate was loaded at, so a concurrent writer makes it raise
``ConcurrencyError``; ``run_command`` reruns the whole command.

A snapshot is a disposable cache of ``snapshot_state()``: loading from it
must give what replaying the events gives. So its JSON keeps the types JSON
has no word for (a tuple, a UUID, an enum, a dict with int keys), each as a
one-key object such as ``{"$uuid": "..."}``; a snapshot that cannot be taken
is logged and the save goes on, and one that does not fit the aggregate any
more (its attributes differ) is passed over for a replay.
"""

import datetime
import enum
import logging
import math
import re
import sys
import uuid
from collections.abc import Callable
from functools import cache
from typing import ClassVar, Generic, TypeVar

from django.db import DatabaseError, OperationalError, transaction

from .errors import AggregateNotFound, ConcurrencyError, is_transient
from .models import Snapshot
from .store import (
    NewEvent,
    RecordedEvent,
    append,
    lock_partitions,
    replay_snapshot_and_stream,
    replay_stream,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
A = TypeVar("A", bound="Aggregate")

DEFAULT_CONFLICT_ATTEMPTS = 10


@cache
def _when_method(event_class: type) -> str:
    """Return the name of the method applying an event class: ``_when_<snake>``."""
    return "_when_" + re.sub(r"(?<!^)(?=[A-Z])", "_", event_class.__name__).lower()


class Aggregate:
    stream_prefix: ClassVar[str]
    # Take a snapshot every this many events; None turns snapshots off.
    snapshot_every: ClassVar[int | None] = None
    # Bump when the aggregate's state changes shape: older snapshots are ignored.
    snapshot_schema_version: ClassVar[int] = 1

    def __init__(self, id: uuid.UUID):
        self.id = id
        self.version = 0
        self._pending: list[NewEvent] = []

    @classmethod
    def stream_id_for(cls, id: uuid.UUID) -> str:
        return f"{cls.stream_prefix}-{id}"

    @property
    def stream_id(self) -> str:
        return self.stream_id_for(self.id)

    @property
    def pending_events(self) -> list[NewEvent]:
        return list(self._pending)

    def apply(self, event: object) -> None:
        """Change state by one event; never refuses (history is history)."""
        getattr(self, _when_method(type(event)))(event)

    def _record(
        self, event: object, *, event_id: uuid.UUID | None = None, metadata=None
    ) -> None:
        self.apply(event)
        self._pending.append(NewEvent(event, event_id, metadata or {}))

    def snapshot_state(self) -> dict:
        """Return the state to snapshot: the public attributes.

        Values may be JSON values, tuples, sets, UUIDs, dates, datetimes,
        enums, and lists and dicts of these; a state holding anything else is
        not snapshotted (it is logged), so its loads replay every event.
        """
        return {
            key: value
            for key, value in vars(self).items()
            if not key.startswith("_") and key not in ("id", "version")
        }

    def restore_state(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


class Repository(Generic[A]):
    def __init__(self, aggregate_class: type[A]):
        self.aggregate_class = aggregate_class

    def load(self, aggregate_id: uuid.UUID) -> A:
        """Rebuild an aggregate from its latest usable snapshot and later events."""
        cls = self.aggregate_class
        aggregate = cls(aggregate_id)
        if cls.snapshot_every:
            version, state, events = replay_snapshot_and_stream(
                aggregate.stream_id, snapshot_schema_version=cls.snapshot_schema_version
            )
            if state is not None and self._restore(aggregate, state):
                aggregate.version = version
            elif state is not None:  # not usable: replay from the start
                events = replay_stream(aggregate.stream_id)
        else:
            events = replay_stream(aggregate.stream_id)
        for version, event in events:
            aggregate.apply(event)
            aggregate.version = version
        if aggregate.version == 0:
            raise AggregateNotFound(aggregate.stream_id)
        return aggregate

    def save(
        self, aggregate: A, *, metadata: dict | None = None
    ) -> list[RecordedEvent]:
        """Append the aggregate's recorded events at the version it was loaded at."""
        pending = aggregate._pending
        if not pending:
            return []
        expected = aggregate.version
        recorded = append(aggregate.stream_id, pending, expected, metadata=metadata)
        aggregate._pending = []
        appended_here = [r.version for r in recorded] == list(
            range(expected + 1, expected + 1 + len(pending))
        )
        if not appended_here:
            # Every event was already stored (an idempotent repeat) somewhere
            # else in the stream: take the stream's real state.
            fresh = self.load(aggregate.id)
            vars(aggregate).update(vars(fresh))
            return recorded
        aggregate.version = recorded[-1].version
        every = self.aggregate_class.snapshot_every
        if every and aggregate.version // every > expected // every:
            self.take_snapshot(aggregate)
        return recorded

    def _restore(self, aggregate: A, state: dict) -> bool:
        """Restore a snapshot into a new aggregate; return False if it does not fit.

        A snapshot whose attributes are not the aggregate's (a release added
        or removed one and did not bump ``snapshot_schema_version``) would
        leave the difference at its default, silently: it is not used.
        """
        try:
            restored = _from_snapshot_json(state)
        except (TypeError, ValueError, AttributeError) as error:
            logger.warning(
                "snapshot of %s not used, it cannot be read: %s",
                aggregate.stream_id,
                error,
            )
            return False
        expected = aggregate.snapshot_state().keys()
        if not isinstance(restored, dict) or restored.keys() != expected:
            logger.warning(
                "snapshot of %s not used: it holds %s where %s has %s "
                "(bump snapshot_schema_version when the state changes shape)",
                aggregate.stream_id,
                sorted(restored) if isinstance(restored, dict) else restored,
                type(aggregate).__qualname__,
                sorted(expected),
            )
            return False
        aggregate.restore_state(restored)
        return True

    def take_snapshot(self, aggregate: A) -> None:
        """Store the aggregate's state as its snapshot, or log why it cannot.

        A snapshot is a cache: failing to take one must not fail the save it
        follows (in a savepoint, so the caller's transaction goes on).
        """
        try:
            state = _to_snapshot_json(aggregate.snapshot_state())
            with transaction.atomic():
                Snapshot.objects.bulk_create(
                    [
                        Snapshot(
                            stream_id=aggregate.stream_id,
                            version=aggregate.version,
                            schema_version=self.aggregate_class.snapshot_schema_version,
                            state=state,
                        )
                    ],
                    update_conflicts=True,
                    unique_fields=["stream_id"],
                    update_fields=["version", "schema_version", "state", "taken_at"],
                )
        except (TypeError, ValueError, DatabaseError):
            logger.exception(
                "no snapshot of %s at v%s", aggregate.stream_id, aggregate.version
            )


# Snapshot state in JSON. Plain JSON values are stored as they are (so a
# snapshot of ints and strings reads as it always did); every other type is
# an object of one key naming it. A dict whose keys are not all strings, or
# could be read as such a name, is stored as a list of pairs.

_TAG = "$"


def _to_snapshot_json(value):
    """Return ``value`` as JSON that ``_from_snapshot_json`` turns back into it."""
    if value is None or type(value) in (str, int, bool):
        return value
    if type(value) is float:
        if not math.isfinite(value):
            raise ValueError(f"{value!r} cannot be stored in JSON")
        return value
    if isinstance(value, enum.Enum):
        kind = type(value)
        return {
            "$enum": [
                kind.__module__,
                kind.__qualname__,
                _to_snapshot_json(value.value),
            ]
        }
    if type(value) is list:
        return [_to_snapshot_json(item) for item in value]
    if type(value) is dict:
        if all(type(key) is str and not key.startswith(_TAG) for key in value):
            return {key: _to_snapshot_json(item) for key, item in value.items()}
        return {
            "$dict": [
                [_to_snapshot_json(key), _to_snapshot_json(item)]
                for key, item in value.items()
            ]
        }
    if type(value) in (tuple, set, frozenset):
        return {_TAG + type(value).__name__: [_to_snapshot_json(v) for v in value]}
    if type(value) is uuid.UUID:
        return {"$uuid": str(value)}
    if type(value) is datetime.datetime:
        return {"$datetime": value.isoformat()}
    if type(value) is datetime.date:
        return {"$date": value.isoformat()}
    raise TypeError(f"a snapshot cannot hold {type(value).__qualname__}: {value!r}")


def _from_snapshot_json(value):
    """Return the value ``_to_snapshot_json`` stored.

    Raise ValueError, TypeError or AttributeError on JSON it did not write.
    """
    if type(value) is list:
        return [_from_snapshot_json(item) for item in value]
    if type(value) is not dict:
        return value
    if len(value) != 1 or not next(iter(value)).startswith(_TAG):
        return {key: _from_snapshot_json(item) for key, item in value.items()}
    [(tag, stored)] = value.items()
    read = _SNAPSHOT_READERS.get(tag)
    if read is None:
        raise ValueError(f"unknown snapshot value {tag!r}")
    return read(stored)


def _read_enum(stored) -> enum.Enum:
    module, qualname, stored_value = stored
    # Only from modules already imported (the aggregate's own imports): a
    # stored name never makes this process import anything.
    kind = sys.modules.get(module)
    for name in qualname.split("."):
        kind = getattr(kind, name, None)
    if not (isinstance(kind, type) and issubclass(kind, enum.Enum)):
        raise ValueError(f"no enum {module}.{qualname}")
    return kind(_from_snapshot_json(stored_value))


def _read_items(kind: type) -> Callable:
    return lambda stored: kind(_from_snapshot_json(item) for item in stored)


_SNAPSHOT_READERS: dict[str, Callable] = {
    "$enum": _read_enum,
    "$dict": lambda stored: {
        _from_snapshot_json(key): _from_snapshot_json(item) for key, item in stored
    },
    "$tuple": _read_items(tuple),
    "$set": _read_items(set),
    "$frozenset": _read_items(frozenset),
    "$uuid": uuid.UUID,
    "$datetime": datetime.datetime.fromisoformat,
    "$date": datetime.date.fromisoformat,
}


def run_command(
    command: Callable[[], T], *, attempts: int = DEFAULT_CONFLICT_ATTEMPTS
) -> T:
    """Run a load-act-save command, rerunning it when it lost a race.

    It lost when another writer won a stream it saves, or when PostgreSQL
    broke a deadlock with another transaction by failing it. Each attempt
    runs in ``transaction.atomic()``: a transaction of its own, or a
    savepoint in the caller's (a subscription handler's batch). So a rerun
    starts from what the caller had, even after the failed attempt saved one
    aggregate before another's save conflicted.

    A rerun first locks the partitions of the streams it lost (held to the
    end of the transaction, as its appends would hold them), so it loads
    them after the writers that won and no one else can win them again:
    under contention a busy stream costs one rerun, not a run of them.
    """
    lost: set[str] = set()
    for attempt in range(1, attempts + 1):
        try:
            with transaction.atomic():
                if lost:
                    lock_partitions(lost)
                return command()
        except (ConcurrencyError, OperationalError) as error:
            if not is_transient(error) or attempt == attempts:
                raise
            if isinstance(error, ConcurrencyError):
                lost.add(error.stream_id)
    raise AssertionError("unreachable")
