"""A counter aggregate for the event store's tests."""

from eventstore.aggregates import Aggregate

from .events import Counted


class Counter(Aggregate):
    stream_prefix = "counter"
    snapshot_every = 10

    def __init__(self, id):
        super().__init__(id)
        self.total = 0
        self.count = 0

    def add(self, amount: int, *, event_id=None) -> None:
        if amount <= 0:
            raise ValueError("amount must be positive")
        self._record(Counted(amount=amount), event_id=event_id)

    def _when_counted(self, event: Counted) -> None:
        self.total += event.amount
        self.count += 1


class UnsnapshottedCounter(Counter):
    snapshot_every = None


class CounterV2(Counter):
    """The same counter after a change of state shape: old snapshots are ignored."""

    snapshot_schema_version = 2
