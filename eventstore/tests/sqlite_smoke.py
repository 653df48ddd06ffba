"""Run by test_sqlite.py in a subprocess whose DATABASE_URL points at SQLite."""

import uuid

import django

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.test import override_settings  # noqa: E402

from eventstore import store, subscriptions  # noqa: E402
from eventstore.aggregates import Repository  # noqa: E402
from eventstore.errors import (  # noqa: E402
    ConcurrencyError,
    InvalidStreamId,
    PartitionCountMismatch,
    UnstorableEvent,
)
from eventstore.store import (  # noqa: E402
    NewEvent,
    append,
    event_exists,
    read_partition,
    read_stream,
)
from eventstore.tests.streams import count_placing_apart  # noqa: E402
from eventstore.tests.testapp.domain import Counter  # noqa: E402
from eventstore.tests.testapp.events import Counted  # noqa: E402
from eventstore.tests.testapp.models import Tally  # noqa: E402
from eventstore.tests.testapp.projections import tallies  # noqa: E402

assert connection.vendor == "sqlite", connection.vendor
call_command("migrate", verbosity=0)

stream = f"tally-{uuid.uuid4()}"
event_id = uuid.uuid4()
with transaction.atomic():
    append(stream, [NewEvent(Counted(amount=2), event_id=event_id)], 0)
    append(stream, [Counted(amount=3)], 1)
try:
    append(stream, [Counted(amount=4)], 1)
    raise AssertionError("no conflict")
except ConcurrencyError:
    pass
# A process numbering partitions otherwise is refused that stream, even where
# its sample check passed.
other = count_placing_apart(stream, store.partition_count())
with override_settings(EVENTSTORE_PARTITIONS=other):
    store._checked_partition_counts.add((connection.settings_dict["NAME"], other))
    try:
        append(stream, [Counted(amount=4)], 2)
        raise AssertionError("appended in another partition")
    except PartitionCountMismatch:
        pass
# SQLite would store what PostgreSQL cannot: it is refused here too.
try:
    append("s" * 300, [Counted(amount=1)], 0)
    raise AssertionError("a stream id longer than its column was stored")
except InvalidStreamId:
    pass
try:
    append(stream, [Counted(amount=4, note="a\x00b")], 2)
    raise AssertionError("a NUL character was stored")
except UnstorableEvent:
    pass
(again,) = append(stream, [NewEvent(Counted(amount=2), event_id=event_id)], 5)
assert again.version == 1
stored = list(read_stream(stream))
assert [(e.version, e.event.amount) for e in stored] == [(1, 2), (2, 3)], stored
assert stored[0].recorded_at.tzinfo is not None
assert event_exists(event_id) and not event_exists(uuid.uuid4())

events, head = read_partition(stored[0].partition, after_sequence=0, limit=10)
assert [e.event_id for e in events][-2:] == [e.event_id for e in stored]

counters = Repository(Counter)
counter = Counter(uuid.uuid4())
for amount in range(1, 13):
    counter.add(amount)
    counters.save(counter)
assert counters.load(counter.id).total == sum(range(1, 13))

subscriptions.catch_up([tallies])
assert Tally.objects.get(stream_id=stream).total == 5
print("sqlite smoke ok")
