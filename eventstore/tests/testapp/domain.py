"""Aggregates for the event store's tests: a counter, and a shelf of every type."""

import datetime
import enum
import fractions
import uuid

from eventstore.aggregates import Aggregate

from .events import Counted, Shelved


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


class CounterWithLargest(Counter):
    """A later release: one more attribute, ``snapshot_schema_version`` not bumped."""

    def __init__(self, id):
        super().__init__(id)
        self.largest = 0

    def _when_counted(self, event: Counted) -> None:
        super()._when_counted(event)
        self.largest = max(self.largest, event.amount)


class CounterWithAnAverage(Counter):
    """Keeps a value a snapshot cannot hold: its snapshots are not taken."""

    def __init__(self, id):
        super().__init__(id)
        self.average = fractions.Fraction(0)

    def _when_counted(self, event: Counted) -> None:
        super()._when_counted(event)
        self.average = fractions.Fraction(self.total, self.count)


class CounterWithASeparator(Counter):
    """Keeps a text PostgreSQL's ``jsonb`` refuses: its snapshots are not taken."""

    def __init__(self, id):
        super().__init__(id)
        self.separator = "\x00"


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Shelf(Aggregate):
    """State of each type JSON has no word for, as aggregates hold them."""

    stream_prefix = "shelf"
    snapshot_every = 2

    def __init__(self, id):
        super().__init__(id)
        self.items: tuple[str, ...] = ()
        self.owner: uuid.UUID | None = None
        self.colour: Colour | None = None
        self.items_by_size: dict[int, int] = {}
        self.last_shelved_at: datetime.datetime | None = None

    def shelve(self, item: str, *, owner: uuid.UUID, size: int, colour: Colour) -> None:
        self._record(
            Shelved(
                item=item,
                owner=owner,
                size=size,
                colour=colour.value,
                at=datetime.datetime.now(datetime.UTC),
            )
        )

    def _when_shelved(self, event: Shelved) -> None:
        self.items = (*self.items, event.item)
        self.owner = event.owner
        self.colour = Colour(event.colour)
        self.items_by_size = {
            **self.items_by_size,
            event.size: self.items_by_size.get(event.size, 0) + 1,
        }
        self.last_shelved_at = event.at
