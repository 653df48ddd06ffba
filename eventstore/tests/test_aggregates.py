"""Aggregates, the repository and snapshots."""

import contextlib
import threading
import uuid

import pytest
from django.db import connection, transaction

from eventstore.aggregates import Repository, run_command
from eventstore.errors import AggregateNotFound, ConcurrencyError
from eventstore.models import Snapshot
from eventstore.store import partition_for, stream_version
from eventstore.tests.testapp.domain import (
    Colour,
    Counter,
    CounterV2,
    CounterWithAnAverage,
    CounterWithASeparator,
    CounterWithLargest,
    Shelf,
    UnsnapshottedCounter,
)

pytestmark = pytest.mark.django_db

counters = Repository(Counter)
shelves = Repository(Shelf)


def counter_with(amounts: list[int]) -> uuid.UUID:
    """Save a counter one event per command, as a service would."""
    counter = Counter(uuid.uuid4())
    for amount in amounts:
        counter.add(amount)
        counters.save(counter)
    return counter.id


def test_an_aggregate_is_rebuilt_from_its_events():
    counter_id = counter_with([1, 2, 3])

    loaded = counters.load(counter_id)

    assert (loaded.total, loaded.count, loaded.version) == (6, 3, 3)
    assert loaded.pending_events == []


def test_loading_an_unknown_aggregate_raises():
    with pytest.raises(AggregateNotFound, match="counter-"):
        counters.load(uuid.uuid4())


def test_saving_a_stale_aggregate_raises_a_conflict():
    counter_id = counter_with([1])
    first, second = counters.load(counter_id), counters.load(counter_id)
    first.add(1)
    counters.save(first)
    second.add(2)

    with pytest.raises(ConcurrencyError):
        counters.save(second)


@pytest.mark.django_db(transaction=True)
def test_run_command_reruns_the_whole_command_when_another_writer_won():
    counter_id = counter_with([1])
    runs = []

    def another_writer_adds_100():
        try:
            rival = counters.load(counter_id)
            rival.add(100)
            counters.save(rival)
        finally:
            connection.close()

    def add_ten():
        counter = counters.load(counter_id)
        if not runs:  # another writer gets in between load and save, once
            rival = threading.Thread(target=another_writer_adds_100)
            rival.start()
            rival.join(10)
        runs.append(counter.version)
        counter.add(10)
        counters.save(counter)
        return counter

    result = run_command(add_ten)

    assert runs == [1, 2]
    assert result.total == 111
    assert counters.load(counter_id).total == 111


@pytest.mark.django_db(transaction=True)
def test_a_rerun_goes_first_so_a_busy_stream_costs_one_rerun():
    """Each run of the command, another writer saves the stream in between.

    The rerun holds the stream's partition lock from before it loads, so that
    writer waits for it (and then loses) instead of winning again.
    """
    counter_id = counter_with([1])
    runs = []
    rivals = []

    def another_writer_adds_100():
        try:
            rival = counters.load(counter_id)
            rival.add(100)
            counters.save(rival)
        except ConcurrencyError:
            pass
        finally:
            connection.close()

    def add_ten():
        counter = counters.load(counter_id)
        rival = threading.Thread(target=another_writer_adds_100)
        rival.start()
        rival.join(2)  # done, unless it waits for this transaction's lock
        rivals.append(rival)
        runs.append(counter.version)
        counter.add(10)
        counters.save(counter)
        return counter

    result = run_command(add_ten, attempts=2)
    for rival in rivals:
        rival.join(10)

    assert runs == [1, 2]
    assert result.total == 111
    assert counters.load(counter_id).total == 111


def _counter_in(partition: int) -> uuid.UUID:
    while True:
        counter = Counter(uuid.uuid4())
        if partition_for(counter.stream_id) == partition:
            counter.add(1)
            counters.save(counter)
            return counter.id


@pytest.mark.django_db(transaction=True)
def test_run_command_reruns_the_command_postgresql_failed_to_break_a_deadlock():
    """Two commands save two counters in opposite orders, in two partitions.

    Each holds the first one's partition lock when it asks for the other's:
    PostgreSQL fails one of them, which runs again once the other is done.
    """
    first, second = _counter_in(1), _counter_in(2)
    both_hold_one = threading.Barrier(2)
    failures = []

    def add_to(counter_ids):
        attempts = []

        def add_one_to_each():
            attempts.append(1)
            for number, counter_id in enumerate(counter_ids):
                if number == 1 and len(attempts) == 1:
                    both_hold_one.wait(10)
                counter = counters.load(counter_id)
                counter.add(1)
                counters.save(counter)

        try:
            run_command(add_one_to_each)
        except Exception as error:
            failures.append(error)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=add_to, args=(order,))
        for order in ([first, second], [second, first])
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert failures == []
    assert (counters.load(first).total, counters.load(second).total) == (3, 3)


def test_run_command_gives_up_after_its_attempts():
    def always_conflicts():
        raise ConcurrencyError("s", 1, 2)

    with pytest.raises(ConcurrencyError):
        run_command(always_conflicts, attempts=3)


def test_a_snapshot_is_taken_every_n_events():
    counter_id = counter_with(list(range(1, 26)))

    snapshot = Snapshot.objects.get(stream_id=Counter.stream_id_for(counter_id))

    assert snapshot.version == 20
    assert snapshot.state == {"total": sum(range(1, 21)), "count": 20}


def test_loading_reads_only_the_events_after_the_snapshot(django_assert_num_queries):
    counter_id = counter_with(list(range(1, 26)))

    with django_assert_num_queries(1):  # the snapshot with events 21..25
        loaded = counters.load(counter_id)

    assert (loaded.total, loaded.version) == (sum(range(1, 26)), 25)


def test_deleting_every_snapshot_changes_no_loaded_state():
    ids = [counter_with(list(range(1, n))) for n in (5, 12, 31, 47)]
    with_snapshots = [vars(counters.load(i)) for i in ids]

    Snapshot.objects.all().delete()

    assert [vars(counters.load(i)) for i in ids] == with_snapshots
    assert [vars(Repository(UnsnapshottedCounter).load(i)) for i in ids] == [
        {**state} for state in with_snapshots
    ]


def test_a_bumped_snapshot_schema_version_ignores_old_snapshots():
    counter_id = counter_with(list(range(1, 12)))
    # Tamper with the stored snapshot: if it were used, the total would show it.
    Snapshot.objects.filter(stream_id=Counter.stream_id_for(counter_id)).update(
        state={"total": -1, "count": 10}
    )

    assert counters.load(counter_id).total == -1 + 11  # v1 uses its snapshot at 10
    assert Repository(CounterV2).load(counter_id).total == sum(range(1, 12))


def test_a_snapshot_gives_the_same_aggregate_as_a_replay():
    """Tuples, UUIDs, enums, int dict keys and datetimes come back as they were."""
    shelf = Shelf(uuid.uuid4())
    shelf.shelve("apple", owner=uuid.uuid4(), size=1, colour=Colour.RED)
    shelf.shelve("pear", owner=uuid.uuid4(), size=1, colour=Colour.BLUE)
    shelves.save(shelf)  # version 2: a snapshot is taken
    assert Snapshot.objects.filter(stream_id=shelf.stream_id).exists()

    from_snapshot = shelves.load(shelf.id)
    Snapshot.objects.all().delete()
    replayed = shelves.load(shelf.id)

    assert vars(from_snapshot) == vars(replayed) == vars(shelf)
    assert from_snapshot.items == ("apple", "pear")
    assert from_snapshot.items_by_size == {1: 2}
    assert from_snapshot.colour is Colour.BLUE
    # Its next event applies as to the replayed one (a tuple plus a tuple).
    from_snapshot.shelve("plum", owner=uuid.uuid4(), size=2, colour=Colour.RED)
    assert from_snapshot.items == ("apple", "pear", "plum")


def test_an_aggregate_holding_a_uuid_saves_past_its_snapshot_point():
    """A snapshot due at a save holds what events hold: UUIDs and datetimes."""
    shelf_id, owner = uuid.uuid4(), uuid.uuid4()

    def shelve_two():
        shelf = Shelf(shelf_id)
        shelf.shelve("apple", owner=uuid.uuid4(), size=1, colour=Colour.RED)
        shelf.shelve("pear", owner=owner, size=1, colour=Colour.RED)
        shelves.save(shelf)  # version 2: a snapshot is due

    run_command(shelve_two)

    loaded = shelves.load(shelf_id)
    assert (loaded.version, loaded.owner) == (2, owner)
    assert Snapshot.objects.get(stream_id=loaded.stream_id).version == 2


@pytest.mark.parametrize(
    "aggregate_class",
    [CounterWithAnAverage, CounterWithASeparator],
    ids=["not-json", "refused-by-postgresql"],
)
def test_a_snapshot_that_cannot_be_taken_is_logged_and_the_save_goes_on(
    aggregate_class, caplog
):
    """A snapshot is a cache: it never fails a save, nor the caller's transaction."""
    repository = Repository(aggregate_class)
    counter = aggregate_class(uuid.uuid4())
    for amount in range(1, 11):
        counter.add(amount)

    with transaction.atomic():
        repository.save(counter)  # version 10: a snapshot is due
        assert stream_version(counter.stream_id) == 10  # the transaction goes on

    assert not Snapshot.objects.exists()
    assert f"no snapshot of {counter.stream_id} at v10" in caplog.text
    assert repository.load(counter.id).total == 55


@pytest.mark.parametrize(
    ("writer", "reader"),
    [(Counter, CounterWithLargest), (CounterWithLargest, Counter)],
    ids=["attribute-added", "attribute-removed"],
)
def test_a_snapshot_of_other_attributes_than_the_aggregate_has_is_not_used(
    writer, reader, caplog
):
    """A release changed the attributes and forgot ``snapshot_schema_version``.

    Restored, the old snapshot would leave an added attribute at its default
    (the largest amount 1, where the events say 7), or keep one the aggregate
    no longer has, silently: the repository replays the events instead.
    """
    counter = writer(uuid.uuid4())
    for amount in [7, 3] * 5 + [1]:
        counter.add(amount)
    Repository(writer).save(counter)  # a snapshot at version 11
    assert Snapshot.objects.filter(stream_id=counter.stream_id).exists()

    loaded = Repository(reader).load(counter.id)
    Snapshot.objects.all().delete()
    replayed = Repository(reader).load(counter.id)

    assert vars(loaded) == vars(replayed)
    assert (loaded.total, loaded.count) == (51, 11)
    assert f"snapshot of {counter.stream_id} not used" in caplog.text


def test_a_snapshot_that_cannot_be_read_is_not_used(caplog):
    counter_id = counter_with(list(range(1, 12)))
    # As an enum renamed since, or a value of a kind this code does not know.
    Snapshot.objects.filter(stream_id=Counter.stream_id_for(counter_id)).update(
        state={"total": {"$enum": ["nowhere", "Gone", 1]}, "count": 10}
    )

    loaded = counters.load(counter_id)

    assert (loaded.total, loaded.count) == (66, 11)
    assert "cannot be read: no enum nowhere.Gone" in caplog.text


def test_a_long_history_without_a_snapshot_is_read_in_several_batches():
    counter = Counter(uuid.uuid4())
    for _ in range(1203):
        counter.add(1)
    counters.save(counter)
    Snapshot.objects.all().delete()

    loaded = counters.load(counter.id)

    assert (loaded.total, loaded.version) == (1203, 1203)


@pytest.mark.django_db(transaction=True)
def test_run_command_outside_a_transaction_is_all_or_nothing():
    counter_id = counter_with([1])

    def add_then_fail():
        counter = counters.load(counter_id)
        counter.add(5)
        counters.save(counter)
        raise RuntimeError("after the append")

    with pytest.raises(RuntimeError):
        run_command(add_then_fail)

    assert counters.load(counter_id).total == 1


@pytest.mark.parametrize(
    "caller", [contextlib.nullcontext, transaction.atomic], ids=["alone", "nested"]
)
def test_a_rerun_command_keeps_nothing_of_the_failed_attempt(caller):
    """The first save succeeds, the second conflicts: the first is undone.

    Inside a caller's transaction (a handler's batch) too: each attempt has a
    savepoint.
    """
    first_id, second_id = counter_with([1]), counter_with([1])
    attempts = []

    def add_one_to_both():
        attempts.append(1)
        first = counters.load(first_id)
        first.add(1)
        counters.save(first)
        second = counters.load(second_id)
        if len(attempts) == 1:
            second.version -= 1  # as if another writer had got in
        second.add(1)
        counters.save(second)

    with caller():
        run_command(add_one_to_both)

    assert len(attempts) == 2
    assert (counters.load(first_id).total, counters.load(second_id).total) == (2, 2)
