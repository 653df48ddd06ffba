"""Aggregates rebuilt from their events, and the repository that stores them.

An aggregate subclass names its stream prefix, applies each event in a
``_when_<event_name_in_snake_case>`` method (which never checks rules: it must
replay any history) and records new events from command methods through
``_record``. ``Repository.save`` appends what was recorded at the version the
aggregate was loaded at, so a concurrent writer makes it raise
``ConcurrencyError``; ``run_command`` reruns the whole command.
"""

import re
import uuid
from collections.abc import Callable
from functools import cache
from typing import ClassVar, Generic, TypeVar

from django.db import OperationalError, transaction

from .errors import AggregateNotFound, ConcurrencyError, is_transient
from .models import Snapshot
from .store import (
    NewEvent,
    RecordedEvent,
    append,
    replay_snapshot_and_stream,
    replay_stream,
)

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
        """Return the state to snapshot: public attributes, which must be JSON."""
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
            if state is not None:
                aggregate.restore_state(state)
                aggregate.version = version
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

    def take_snapshot(self, aggregate: A) -> None:
        Snapshot.objects.bulk_create(
            [
                Snapshot(
                    stream_id=aggregate.stream_id,
                    version=aggregate.version,
                    schema_version=self.aggregate_class.snapshot_schema_version,
                    state=aggregate.snapshot_state(),
                )
            ],
            update_conflicts=True,
            unique_fields=["stream_id"],
            update_fields=["version", "schema_version", "state", "taken_at"],
        )


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
    """
    for attempt in range(1, attempts + 1):
        try:
            with transaction.atomic():
                return command()
        except (ConcurrencyError, OperationalError) as error:
            if not is_transient(error) or attempt == attempts:
                raise
    raise AssertionError("unreachable")
