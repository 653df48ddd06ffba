"""append and read against the real PostgreSQL."""

import datetime
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django.db.transaction import TransactionManagementError
from psycopg.types.json import Jsonb

from eventstore import store, subscriptions
from eventstore.context import metadata_context
from eventstore.errors import (
    ConcurrencyError,
    DuplicateEventError,
    EventDecodeError,
    EventEncodeError,
    InvalidStreamId,
    PartitionCountMismatch,
    UnreadableEvent,
    UnregisteredEventClass,
    UnstorableEvent,
)
from eventstore.events import register_event
from eventstore.models import Event, NudgeClaim, PartitionHead
from eventstore.store import (
    NewEvent,
    append,
    event_exists,
    head_sequence,
    lock_partitions,
    partition_count,
    partition_for,
    read_partition,
    read_stream,
    stream_version,
)
from eventstore.tests.streams import stream_placed_apart, streams_in_partition
from eventstore.tests.testapp.events import Counted


@register_event("eventstore_tests.Dated")
@dataclass(frozen=True)
class Dated:
    day: datetime.date


class AmountAboveLimit(Exception):
    pass


@register_event("eventstore_tests.Limited")
@dataclass(frozen=True)
class Limited:
    """An event class whose rule a later release may tighten (``limit``)."""

    amount: int
    limit: ClassVar[int | None] = None

    def __post_init__(self):
        if self.limit is not None and self.amount > self.limit:
            raise AmountAboveLimit(f"{self.amount} is above {self.limit}")


def new_stream() -> str:
    return f"tally-{uuid.uuid4()}"


@pytest.mark.django_db
class TestAppend:
    def test_events_are_stored_with_consecutive_versions_and_sequences(self):
        stream = new_stream()
        append(stream, [Counted(amount=1), Counted(amount=2)], 0)
        append(stream, [Counted(amount=3)], 2)

        stored = list(read_stream(stream))

        assert [e.version for e in stored] == [1, 2, 3]
        assert [e.event.amount for e in stored] == [1, 2, 3]
        assert {e.partition for e in stored} == {partition_for(stream)}
        sequences = [e.sequence for e in stored]
        assert sequences == sorted(sequences)
        assert stream_version(stream) == 3

    def test_a_wrong_expected_version_names_stream_and_versions(self):
        stream = new_stream()
        append(stream, [Counted(amount=1)], 0)

        with pytest.raises(ConcurrencyError) as raised:
            append(stream, [Counted(amount=2)], 0)

        error = raised.value
        assert (error.stream_id, error.expected_version, error.actual_version) == (
            stream,
            0,
            1,
        )
        assert stream in str(error) and "expected 0" in str(error)

    def test_a_conflict_leaves_the_callers_transaction_usable(self):
        stream = new_stream()
        with transaction.atomic():
            append(stream, [Counted(amount=1)], 0)
            with pytest.raises(ConcurrencyError):
                append(stream, [Counted(amount=2)], 0)
            append(stream, [Counted(amount=3)], 1)

        assert [e.event.amount for e in read_stream(stream)] == [1, 3]

    def test_event_exists_finds_stored_event_ids_only(self):
        event_id = uuid.uuid4()
        append(new_stream(), [NewEvent(Counted(amount=1), event_id=event_id)], 0)

        assert event_exists(event_id)
        assert not event_exists(uuid.uuid4())

    def test_reappending_a_stored_event_id_is_a_no_op_returning_it(self):
        stream = new_stream()
        event_id = uuid.uuid4()
        (first,) = append(stream, [NewEvent(Counted(amount=5), event_id=event_id)], 0)

        (again,) = append(stream, [NewEvent(Counted(amount=5), event_id=event_id)], 0)

        assert again.id == first.id and again.version == 1
        assert Event.objects.filter(stream_id=stream).count() == 1

    def test_a_batch_with_some_stored_event_ids_is_refused_whole(self):
        stream = new_stream()
        stored_id = uuid.uuid4()
        append(stream, [NewEvent(Counted(amount=1), event_id=stored_id)], 0)

        with pytest.raises(DuplicateEventError):
            append(
                stream,
                [NewEvent(Counted(amount=1), event_id=stored_id), Counted(amount=2)],
                1,
            )

        assert stream_version(stream) == 1

    def test_a_batch_naming_one_event_id_twice_is_refused_leaving_the_transaction(
        self,
    ):
        stream, repeated = new_stream(), uuid.uuid4()
        with transaction.atomic():
            with pytest.raises(DuplicateEventError, match="twice"):
                append(
                    stream,
                    [
                        NewEvent(Counted(amount=1), event_id=repeated),
                        NewEvent(Counted(amount=2), event_id=repeated),
                    ],
                    0,
                )
            append(stream, [Counted(amount=3)], 0)

        assert [e.event.amount for e in read_stream(stream)] == [3]

    def test_reappending_an_event_id_stored_in_another_stream_is_refused(self):
        event_id = uuid.uuid4()
        elsewhere = new_stream()
        append(elsewhere, [NewEvent(Counted(amount=1), event_id=event_id)], 0)
        stream = new_stream()

        with pytest.raises(DuplicateEventError, match=elsewhere):
            append(stream, [NewEvent(Counted(amount=1), event_id=event_id)], 0)

        assert stream_version(stream) == 0

    def test_an_unregistered_event_in_a_batch_stores_nothing(self):
        stream = new_stream()

        with pytest.raises(UnregisteredEventClass):
            append(stream, [Counted(amount=1), object()], 0)

        assert stream_version(stream) == 0

    @pytest.mark.parametrize(
        "event",
        [
            Counted(amount="5"),
            Counted(amount=True),
            Counted(amount=2.5),
            Dated(day=datetime.datetime(2024, 5, 1, 12, 0)),
        ],
        ids=["str-in-int", "bool-in-int", "float-in-int", "datetime-in-date"],
    )
    def test_an_event_that_would_not_read_back_is_refused_before_it_is_sent(
        self, event, django_assert_num_queries
    ):
        # Stored, it could never be read again: the table is append-only.
        stream = new_stream()
        with transaction.atomic():
            with django_assert_num_queries(0), pytest.raises(EventEncodeError):
                append(stream, [Counted(amount=1), event], 0)
            assert stream_version(stream) == 0  # the transaction is still usable

    @pytest.mark.parametrize(
        "stream",
        ["", "tally-" + "x" * 195, "tally-\x00"],
        ids=["empty", "longer-than-its-column", "nul"],
    )
    def test_a_stream_id_the_table_cannot_hold_is_refused_leaving_the_transaction(
        self, stream, django_assert_num_queries
    ):
        with transaction.atomic():
            with django_assert_num_queries(0), pytest.raises(InvalidStreamId):
                append(stream, [Counted(amount=1)], 0)
            append(new_stream(), [Counted(amount=1)], 0)

    def test_a_stream_id_as_long_as_its_column_is_stored(self):
        stream = "tally-" + "x" * 194

        append(stream, [Counted(amount=1)], 0)

        assert stream_version(stream) == 1

    def test_an_event_type_longer_than_its_column_is_refused(self):
        @register_event("eventstore_tests." + "Long" * 50)
        @dataclass(frozen=True)
        class Long:
            pass

        stream = new_stream()
        with transaction.atomic():
            with pytest.raises(UnstorableEvent, match="longer than 200"):
                append(stream, [Long()], 0)
            assert stream_version(stream) == 0

    @pytest.mark.parametrize(
        ("event", "metadata", "named"),
        [
            (Counted(amount=1, note="a\x00b"), None, "data 'note'"),
            (Counted(amount=1, sleep_seconds=float("nan")), None, "'sleep_seconds'"),
            (Counted(amount=1, sleep_seconds=float("inf")), None, "'sleep_seconds'"),
            (Counted(amount=1, note="\ud800"), None, "data 'note'"),
            (Counted(amount=1), {"score": float("nan")}, "metadata 'score'"),
            (Counted(amount=1), {"a\x00": "b"}, "metadata 'a\\x00'"),
            (Counted(amount=1), {"at": datetime.datetime.now()}, "metadata 'at'"),
        ],
        ids=[
            "nul",
            "nan",
            "inf",
            "lone-surrogate",
            "nan-in-metadata",
            "nul-in-a-metadata-key",
            "not-json-in-metadata",
        ],
    )
    def test_data_jsonb_cannot_hold_is_refused_leaving_the_transaction(
        self, event, metadata, named, django_assert_num_queries
    ):
        stream = new_stream()
        with transaction.atomic():
            with (
                django_assert_num_queries(0),
                pytest.raises(UnstorableEvent) as raised,
            ):
                append(stream, [event], 0, metadata=metadata)
            assert stream_version(stream) == 0  # the transaction is still usable

        assert named in str(raised.value) and stream in str(raised.value)

    def test_text_that_only_spells_a_nul_escape_is_stored(self):
        stream = new_stream()
        note = "\\u0000 and \\\\u0000"  # backslashes, not NUL characters

        append(stream, [Counted(amount=1, note=note)], 0, metadata={"n": note})

        (stored,) = read_stream(stream)
        assert (stored.event.note, stored.metadata["n"]) == (note, note)

    @pytest.mark.parametrize("expected_version", [None, -1])
    def test_an_expected_version_below_zero_is_a_bug_not_a_conflict(
        self, expected_version
    ):
        # A ConcurrencyError would have the command retried, in vain.
        with pytest.raises(ValueError, match="expected_version"):
            append(new_stream(), [Counted(amount=1)], expected_version)

    def test_recorded_time_is_the_moment_of_the_write_not_the_transaction_start(self):
        stream = new_stream()
        with transaction.atomic():
            (first,) = append(stream, [Counted(amount=1)], 0)
            time.sleep(0.01)
            (second,) = append(stream, [Counted(amount=1)], 1)

        assert second.recorded_at > first.recorded_at

    def test_metadata_from_the_context_and_the_call_are_stored(self):
        stream = new_stream()
        with metadata_context(correlation_id="c-1", actor_id=7):
            append(stream, [Counted(amount=1)], 0, metadata={"request_id": "r-1"})

        (stored,) = read_stream(stream)
        assert stored.metadata == {
            "correlation_id": "c-1",
            "actor_id": 7,
            "request_id": "r-1",
        }

    def test_a_stream_is_read_in_batches(self, django_assert_num_queries):
        stream = new_stream()
        append(stream, [Counted(amount=n) for n in range(1, 11)], 0)

        with django_assert_num_queries(4):
            amounts = [e.event.amount for e in read_stream(stream, batch_size=3)]

        assert amounts == list(range(1, 11))

    def test_an_event_its_class_now_refuses_is_an_error_naming_its_position(
        self, monkeypatch
    ):
        stream = new_stream()
        (recorded,) = append(stream, [Limited(amount=500)], 0)
        monkeypatch.setattr(Limited, "limit", 100)  # a later release

        with pytest.raises(EventDecodeError, match=f"{stream} v1.*AmountAboveLimit"):
            list(read_stream(stream))
        # What stops a subscription's partition there, recorded.
        with pytest.raises(UnreadableEvent) as raised:
            read_partition(
                recorded.partition, after_sequence=recorded.sequence - 1, limit=10
            )
        assert raised.value.sequence == recorded.sequence

    def test_a_partition_is_read_after_a_checkpoint(self):
        first, second = streams_in_partition(3, 2)
        append(first, [Counted(amount=1), Counted(amount=2)], 0)
        append(second, [Counted(amount=3)], 0)
        all_events, head = read_partition(3, after_sequence=0, limit=100)

        later, _ = read_partition(3, after_sequence=all_events[0].sequence, limit=100)

        assert head == all_events[-1].sequence
        assert [e.event.amount for e in later] == [2, 3]


@pytest.mark.django_db
class TestAppendOnly:
    def test_raw_sql_cannot_update_an_event(self):
        stream = new_stream()
        (event,) = append(stream, [Counted(amount=1)], 0)

        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(
                "UPDATE eventstore_event SET data = '{}'::jsonb WHERE id = %s",
                [event.id],
            )

        assert Event.objects.get(id=event.id).data["amount"] == 1

    def test_raw_sql_cannot_delete_an_event(self):
        stream = new_stream()
        (event,) = append(stream, [Counted(amount=1)], 0)

        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute("DELETE FROM eventstore_event WHERE id = %s", [event.id])

        assert Event.objects.filter(id=event.id).exists()


def test_the_partition_of_a_stream_is_the_same_in_another_process():
    stream = "account-2f1c7d3e-0000-4000-8000-000000000001"
    code = (
        "import django; django.setup();"
        "from eventstore.store import partition_for;"
        f"print(partition_for({stream!r}))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "banksite.test_settings"},
    )
    assert int(other.stdout.strip()) == partition_for(stream)


@pytest.mark.django_db
@pytest.mark.usefixtures("unchecked_partition_count")
class TestPartitionCount:
    def test_a_process_with_another_count_refuses_to_append_or_run(self, settings):
        written = settings.EVENTSTORE_PARTITIONS
        other = written + 1
        stream = stream_placed_apart(written, other)
        append(stream, [Counted(amount=1)], 0)
        stored = Event.objects.count()
        settings.EVENTSTORE_PARTITIONS = other

        with pytest.raises(PartitionCountMismatch) as raised:
            append(new_stream(), [Counted(amount=2)], 0)
        with pytest.raises(PartitionCountMismatch):
            lock_partitions([new_stream()])
        with pytest.raises(PartitionCountMismatch):
            subscriptions.partitions()
        with pytest.raises(CommandError, match="EVENTSTORE_PARTITIONS is"):
            call_command("subscriptions")

        assert str(raised.value) == (
            f"EVENTSTORE_PARTITIONS is {other} in this process, but the stored"
            f" events were partitioned by another count: {stream!r} is in"
            f" partition {partition_for(stream, written)}, not"
            f" {partition_for(stream, other)}. Every process must use the count"
            " the events were written with."
        )
        assert Event.objects.count() == stored

    @pytest.mark.parametrize("expected_version", [1, 0])
    def test_an_append_refuses_a_stream_whose_events_are_in_another_partition(
        self, settings, expected_version
    ):
        """Even where the sample check passed (a hot stream, say): exact per stream."""
        written = settings.EVENTSTORE_PARTITIONS
        other = written * 2
        stream = stream_placed_apart(written, other)
        append(stream, [Counted(amount=1)], 0)
        settings.EVENTSTORE_PARTITIONS = other
        name = connection.settings_dict["NAME"]
        store._checked_partition_counts.add((name, other))  # the sample passed

        with transaction.atomic():
            with pytest.raises(PartitionCountMismatch) as raised:
                append(stream, [Counted(amount=2)], expected_version)
            still_usable = Event.objects.filter(stream_id=stream).count()

        assert f"{stream!r} is in partition {partition_for(stream, written)}" in str(
            raised.value
        )
        assert still_usable == 1

    def test_a_new_store_takes_any_count_and_then_every_partitions_rows(self, settings):
        empty_the_store()
        settings.EVENTSTORE_PARTITIONS = 5

        for _ in range(store.PARTITION_CHECK_STREAMS):
            append(new_stream(), [Counted(amount=1)], 0)

        every = set(range(5))
        assert set(PartitionHead.objects.values_list("partition", flat=True)) == every
        assert set(NudgeClaim.objects.values_list("partition", flat=True)) == every

    def test_a_full_sample_settles_the_check_whatever_its_streams(
        self, settings, monkeypatch
    ):
        empty_the_store()
        monkeypatch.setattr(store, "PARTITION_CHECK_SAMPLE", 5)
        stream = new_stream()
        key = (connection.settings_dict["NAME"], settings.EVENTSTORE_PARTITIONS)

        append(stream, [Counted(amount=1)] * 4, 0)
        partition_count()
        assert key not in store._checked_partition_counts  # 4 events, 1 stream

        append(stream, [Counted(amount=1)], 4)
        partition_count()
        assert key in store._checked_partition_counts  # a full sample

    def test_processes_that_started_on_a_new_store_are_checked_until_it_tells(
        self, settings
    ):
        empty_the_store()
        settings.EVENTSTORE_PARTITIONS = 8
        partition_count()  # a web process starts
        settings.EVENTSTORE_PARTITIONS = 16
        partition_count()  # and a worker configured unlike it

        stream = stream_placed_apart(8, 16)
        settings.EVENTSTORE_PARTITIONS = 8
        append(stream, [Counted(amount=1)], 0)
        settings.EVENTSTORE_PARTITIONS = 16

        with pytest.raises(PartitionCountMismatch):
            append(stream, [Counted(amount=2)], 1)


def empty_the_store():
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE eventstore_event, eventstore_partitionhead, eventstore_nudgeclaim"
        )


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("unchecked_partition_count")
def test_a_worker_configured_with_another_count_refuses_to_append(settings):
    from conftest import database_url

    written = settings.EVENTSTORE_PARTITIONS
    append(stream_placed_apart(written, written * 2), [Counted(amount=1)], 0)
    code = (
        "import django; django.setup();"
        "from eventstore.store import append;"
        "from eventstore.tests.testapp.events import Counted;"
        "append('tally-other-process', [Counted(amount=1)], 0)"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "banksite.settings",
        "DATABASE_URL": database_url(connection.settings_dict["NAME"]),
        "SECRET_KEY": "test",
        "EVENTSTORE_PARTITIONS": str(written * 2),
    }
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env
    )

    assert other.returncode != 0
    assert "PartitionCountMismatch" in other.stderr
    assert not Event.objects.filter(stream_id="tally-other-process").exists()


def in_thread_transaction(work, *args, atomic=True):
    """Run ``work`` in a thread with its own connection and transaction.

    ``atomic=False``: outside any transaction, each append a transaction of
    its own.
    """
    result = {}

    def run():
        try:
            with transaction.atomic() if atomic else nullcontext():
                result["value"] = work(*args)
        except Exception as error:  # reported to the test below
            result["error"] = error
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def append_left_open(stream: str):
    """Append one event to a new stream in a thread whose transaction stays open.

    Return the thread, its result dict and the event that lets it commit.
    """
    appended, commit = threading.Event(), threading.Event()

    def append_and_wait():
        append(stream, [Counted(amount=1)], 0)
        appended.set()
        commit.wait(10)

    holder, held = in_thread_transaction(append_and_wait)
    assert appended.wait(10)
    return holder, held, commit


@pytest.mark.django_db(transaction=True)
class TestConcurrentWriters:
    # Outside a transaction an append is a transaction of its own, in one
    # statement: its version check must still see what the winner committed.
    @pytest.mark.parametrize("in_atomic", [True, False], ids=["atomic", "own"])
    def test_exactly_one_writer_wins_each_version(self, in_atomic):
        stream = new_stream()
        writers, rounds = 8, 5
        barrier = threading.Barrier(writers)
        wins = []
        conflicts = []
        lock = threading.Lock()

        def writer(name):
            try:
                for round_ in range(rounds):
                    barrier.wait()
                    expected = round_
                    try:
                        with transaction.atomic() if in_atomic else nullcontext():
                            append(stream, [Counted(amount=1, note=name)], expected)
                        with lock:
                            wins.append((expected + 1, name))
                    except ConcurrencyError:
                        with lock:
                            conflicts.append((expected + 1, name))
            finally:
                connection.close()

        threads = [
            threading.Thread(target=writer, args=(f"w{n}",)) for n in range(writers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        stored = list(read_stream(stream))
        assert sorted(version for version, _ in wins) == list(range(1, rounds + 1))
        assert len(conflicts) == writers * rounds - rounds
        assert [(e.version, e.event.note) for e in stored] == sorted(wins)


@pytest.mark.django_db(transaction=True)
class TestAppendAsItsOwnTransaction:
    def test_it_is_committed_when_append_returns(self):
        stream = new_stream()
        assert not connection.in_atomic_block

        append(stream, [Counted(amount=4)], 0)

        thread, seen = in_thread_transaction(
            lambda: [e.event.amount for e in read_stream(stream)]
        )
        thread.join()
        assert seen == {"value": [4]}

    def test_a_conflict_changes_nothing(self):
        stream = new_stream()
        append(stream, [Counted(amount=1)], 0)
        partition = partition_for(stream)
        head = head_sequence(partition)

        with pytest.raises(ConcurrencyError):
            append(stream, [Counted(amount=2)], 0)

        assert [e.event.amount for e in read_stream(stream)] == [1]
        assert head_sequence(partition) == head
        # The refused append took no number: the next one leaves no gap.
        (recorded,) = append(stream, [Counted(amount=3)], 1)
        assert recorded.sequence == head + 1

    def test_it_locks_the_partition_head_without_writing_a_new_version(self):
        # A new row version per append could not be pruned while any
        # transaction stays open (a rebuild runs in one), and finding the
        # row would cost more with every append.
        stream = new_stream()
        append(stream, [Counted(amount=1)], 0)
        partition = partition_for(stream)

        def head_row():
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT ctid, xmin FROM eventstore_partitionhead"
                    " WHERE partition = %s",
                    [partition],
                )
                return cursor.fetchone()

        before = head_row()
        append(stream, [Counted(amount=2)], 1)

        assert head_row() == before
        assert head_sequence(partition) == max(e.sequence for e in read_stream(stream))

    def test_it_works_on_a_new_connection_after_a_close(self):
        # The append keeps a cursor per connection; a reconnect needs a new one.
        stream = new_stream()
        append(stream, [Counted(amount=1)], 0)

        connection.close()
        append(stream, [Counted(amount=2)], 1)

        assert [e.event.amount for e in read_stream(stream)] == [1, 2]


@pytest.mark.django_db(transaction=True)
class TestReadersNeverSkip:
    def test_a_late_commit_in_a_partition_is_not_passed_over(self):
        early, late = streams_in_partition(5, 2)
        holder, held, commit = append_left_open(early)
        # A second writer to the same partition waits for its lock...
        second, second_result = in_thread_transaction(
            append, late, [Counted(amount=2)], 0
        )
        time.sleep(0.2)
        assert second.is_alive()
        # ...and a reader sees nothing that could later be overtaken.
        seen, head = read_partition(5, after_sequence=0, limit=100)
        assert (seen, head) == ([], 0)

        commit.set()
        holder.join(10)
        second.join(10)

        assert "error" not in held and "error" not in second_result
        seen, _ = read_partition(5, after_sequence=0, limit=100)
        assert [(e.stream_id, e.sequence) for e in seen] == [(early, 1), (late, 2)]

    def test_version_n_plus_1_from_an_older_transaction_comes_after_version_n(self):
        (stream,) = streams_in_partition(6, 1)
        append(stream, [Counted(amount=1)], 0)
        older_has_xid = threading.Event()
        version_2_committed = threading.Event()

        def older_writer():
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_current_xact_id()")
                xid = cursor.fetchone()[0]
            older_has_xid.set()
            version_2_committed.wait(10)
            (event,) = append(stream, [Counted(amount=3)], 2)
            return xid, event

        older, older_result = in_thread_transaction(older_writer)
        assert older_has_xid.wait(10)
        newer, newer_result = in_thread_transaction(
            lambda: append(stream, [Counted(amount=2)], 1)
        )
        newer.join(10)
        # A reader follows the partition and checkpoints after version 2.
        seen, _ = read_partition(6, after_sequence=0, limit=100)
        checkpoint = seen[-1].sequence
        version_2_committed.set()
        older.join(10)

        assert "error" not in older_result, older_result
        older_xid, version_3 = older_result["value"]
        (version_2,) = newer_result["value"]
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT xmin::text::bigint FROM eventstore_event WHERE id = %s",
                [version_2.id],
            )
            newer_xid = cursor.fetchone()[0]
        assert int(str(older_xid)) < newer_xid  # the interleaving the design warns of
        after_checkpoint, _ = read_partition(6, after_sequence=checkpoint, limit=100)
        assert [e.version for e in seen] == [1, 2]
        assert [e.version for e in after_checkpoint] == [3]
        assert version_3.sequence > version_2.sequence

    def test_a_following_reader_sees_every_event_once_in_stream_order(self):
        partition = 2
        streams = streams_in_partition(partition, 6)
        writers_done = threading.Event()
        errors = []

        def writer(my_streams):
            rng = random.Random()
            try:
                for version in range(8):
                    for stream in my_streams:
                        with transaction.atomic():
                            append(stream, [Counted(amount=version + 1)], version)
                            time.sleep(rng.uniform(0, 0.004))
            except Exception as error:
                errors.append(error)
            finally:
                connection.close()

        seen = []

        def reader():
            checkpoint = 0
            try:
                while True:
                    finished = writers_done.is_set()
                    batch, head = read_partition(
                        partition, after_sequence=checkpoint, limit=7
                    )
                    seen.extend(batch)
                    if batch:
                        checkpoint = batch[-1].sequence
                    elif finished:
                        return
            finally:
                connection.close()

        writers = [
            threading.Thread(target=writer, args=(streams[i::3],)) for i in range(3)
        ]
        follower = threading.Thread(target=reader)
        follower.start()
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join()
        writers_done.set()
        follower.join(30)

        assert not errors
        assert len(seen) == 6 * 8
        assert len({e.id for e in seen}) == len(seen)
        assert [e.sequence for e in seen] == list(range(1, len(seen) + 1))
        for stream in streams:
            assert [e.version for e in seen if e.stream_id == stream] == list(
                range(1, 9)
            )


@pytest.mark.django_db(transaction=True)
class TestAWriterThatWaitedForItsPartition:
    """What an append reads, it reads as of after its partition's lock is granted.

    One event goes in one INSERT, whose snapshot is taken before it waits for
    the lock: the partition's last sequence is read in a snapshot of its own,
    and a stream that moved meanwhile is refused without an error.
    """

    @pytest.mark.parametrize("in_atomic", [True, False], ids=["atomic", "own"])
    def test_it_numbers_its_event_after_the_one_it_waited_for(self, in_atomic):
        early, late = streams_in_partition(7, 2)
        holder, held, commit = append_left_open(early)
        second, second_result = in_thread_transaction(
            append, late, [Counted(amount=2)], 0, atomic=in_atomic
        )
        time.sleep(0.2)
        assert second.is_alive()  # waiting for the partition

        commit.set()
        holder.join(10)
        second.join(10)

        assert "error" not in held and "error" not in second_result, second_result
        (recorded,) = second_result["value"]
        assert recorded.sequence == 2
        assert head_sequence(7) == 2

    def test_a_stream_that_moved_meanwhile_is_a_conflict_leaving_the_transaction(self):
        (stream,) = streams_in_partition(3, 1)
        holder, held, commit = append_left_open(stream)  # version 1, not committed

        def second_writer():
            try:
                append(stream, [Counted(amount=2)], 0)
            except ConcurrencyError as error:
                refused = error
            (after,) = append(stream, [Counted(amount=3)], 1)
            return refused, after

        second, second_result = in_thread_transaction(second_writer)
        time.sleep(0.2)
        assert second.is_alive()

        commit.set()
        holder.join(10)
        second.join(10)

        assert "error" not in held and "error" not in second_result, second_result
        refused, after = second_result["value"]
        assert (refused.expected_version, refused.actual_version) == (0, 1)
        assert after.version == 2
        assert [e.event.amount for e in read_stream(stream)] == [1, 3]


@pytest.mark.django_db(transaction=True)
class TestLockingSeveralPartitions:
    """Two transactions appending to the same two partitions in opposite orders."""

    def run_crossed_writers(self, *, lock_first: bool):
        first = streams_in_partition(1, 2)
        second = streams_in_partition(2, 2)
        both_started = threading.Barrier(2)

        def writer(streams):
            if lock_first:
                lock_partitions(streams)  # the second writer waits here
            append(streams[0], [Counted(amount=1)], 0)
            if not lock_first:
                both_started.wait(5)  # each holds its first partition
            time.sleep(0.1)
            append(streams[1], [Counted(amount=1)], 0)

        a, a_result = in_thread_transaction(writer, [first[0], second[0]])
        b, b_result = in_thread_transaction(writer, [second[1], first[1]])
        a.join(30)
        b.join(30)
        return [r.get("error") for r in (a_result, b_result)]

    def test_outside_a_transaction_it_is_refused_not_a_lock_that_ends_at_once(self):
        with pytest.raises(TransactionManagementError):
            lock_partitions([new_stream()])

    def test_without_ordered_locks_crossed_writers_deadlock(self):
        errors = self.run_crossed_writers(lock_first=False)

        assert any(error is not None and "deadlock" in str(error) for error in errors)

    def test_locking_the_partitions_first_makes_them_queue_instead(self):
        errors = self.run_crossed_writers(lock_first=True)

        assert errors == [None, None]
        assert Event.objects.count() == 4


@contextmanager
def readme_production_role():
    """Yield a connection as a role with README's grants, a psycopg admin
    connection as the owner, and drop the role after."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Production database role", 1)[1]
    grants = section.split("```sql", 1)[1].split("```", 1)[0]
    role = f"bank_app_{uuid.uuid4().hex[:8]}"
    database = connection.settings_dict["NAME"]
    grants = (
        grants.replace("bank_app", role)
        .replace("PASSWORD '...'", "PASSWORD 'test'")
        .replace("DATABASE bank ", f'DATABASE "{database}" ')
    )
    server = {
        "host": connection.settings_dict["HOST"],
        "port": connection.settings_dict["PORT"],
        "dbname": database,
    }
    with psycopg.connect(user="postgres", autocommit=True, **server) as owner:
        try:
            owner.execute(grants)
            with psycopg.connect(user=role, autocommit=True, **server) as app:
                yield app, owner
        finally:
            if owner.execute(
                "SELECT FROM pg_roles WHERE rolname = %s", [role]
            ).rowcount:
                owner.execute(f"DROP OWNED BY {role}")
                owner.execute(f"DROP ROLE {role}")


@pytest.mark.django_db(transaction=True)
def test_the_readmes_production_role_may_only_insert_and_read_events():
    (recorded,) = append(new_stream(), [Counted(amount=1)], 0)
    stream = new_stream()
    event = {
        "event_id": str(uuid.uuid4()),
        "event_type": "t",
        "schema_version": 1,
        "data": {},
        "metadata": {},
    }
    with readme_production_role() as (app, _):
        app.execute(
            "SELECT * FROM eventstore_append(%s, %s, 0, %s, false)",
            [stream, partition_for(stream), Jsonb([event])],
        )
        (stored,) = app.execute(
            "SELECT count(*) FROM eventstore_event WHERE stream_id = %s",
            [stream],
        ).fetchone()
        assert stored == 1
        where = f"WHERE id = {recorded.id}"
        for statement in (
            f"UPDATE eventstore_event SET data = '{{}}' {where}",
            f"DELETE FROM eventstore_event {where}",
            "TRUNCATE eventstore_event",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(statement)
    assert Event.objects.filter(id=recorded.id).exists()


@pytest.mark.django_db(transaction=True)
def test_the_readmes_production_role_may_use_a_table_a_later_migration_adds():
    """Migrations run as the owner, and a release's new table must not need
    the grants run again."""
    table = f"later_{uuid.uuid4().hex[:8]}"
    with readme_production_role() as (app, owner):
        try:
            owner.execute(
                f"CREATE TABLE {table} (id bigint GENERATED BY DEFAULT AS IDENTITY"
                " PRIMARY KEY, note text)"
            )
            app.execute(f"INSERT INTO {table} (note) VALUES ('x')")
            app.execute(f"UPDATE {table} SET note = 'y'")
            assert app.execute(f"SELECT note FROM {table}").fetchall() == [("y",)]
        finally:
            owner.execute(f"DROP TABLE IF EXISTS {table}")
