"""Subscriptions: exactly-once handling, errors that stop a partition, nudges."""

import datetime
import threading
import time
import uuid
from io import StringIO

import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.utils import timezone

from eventstore import nudges, subscriptions, verification
from eventstore.models import (
    Checkpoint,
    CheckRun,
    Event,
    NudgeClaim,
    SkippedEvent,
)
from eventstore.store import (
    append,
    head_sequence,
    lock_partitions,
    partition_for,
    read_stream,
)
from eventstore.tasks import process_partition_task, sweep_partitions
from eventstore.tests.streams import store_as_other_code, streams_in_partition
from eventstore.tests.test_store import Limited, append_left_open
from eventstore.tests.testapp.events import Counted, Ignored
from eventstore.tests.testapp.models import Handled, Tally
from eventstore.tests.testapp.projections import tallies


def handled_counts() -> dict[uuid.UUID, int]:
    counts: dict[uuid.UUID, int] = {}
    for event_id in Handled.objects.values_list("event_id", flat=True):
        counts[event_id] = counts.get(event_id, 0) + 1
    return counts


def checkpoint(partition: int) -> Checkpoint:
    return Checkpoint.objects.get(subscription=tallies.name, partition=partition)


def store_undecodable(stream: str, version: int) -> Event:
    """Store a Counted event of a schema newer than this code, which cannot read it.

    The event table is append-only, so the row is written as a release that
    knows the newer schema would have written it.
    """
    return store_as_other_code(stream, version, "testapp.Counted", 9, {"amount": 100})


def skip_undecodable(stream: str) -> Event:
    """Append counts of 1, then 2 and 4 after an undecodable event an operator skipped.

    The live model has then counted 7, past the skipped event.
    """
    partition = partition_for(stream)
    append(stream, [Counted(amount=1)], 0)
    bad = store_undecodable(stream, 2)
    append(stream, [Counted(amount=2), Counted(amount=4)], 2)
    subscriptions.process_partition(partition, [tallies])
    subscriptions.skip_failed_event(
        tallies.name, partition, sequence=bad.sequence, reason="schema from the future"
    )
    subscriptions.process_partition(partition, [tallies])
    assert Tally.objects.get(stream_id=stream).total == 7
    return bad


@pytest.mark.django_db
class TestHandling:
    def test_each_event_is_handled_once_and_the_checkpoint_moves(self):
        (stream,) = streams_in_partition(1, 1)
        events = append(stream, [Counted(amount=n) for n in range(1, 6)], 0)

        handled = subscriptions.process_partition(1, [tallies])
        handled_again = subscriptions.process_partition(1, [tallies])

        assert (handled, handled_again) == (5, 0)
        assert Tally.objects.get(stream_id=stream).total == 15
        assert checkpoint(1).sequence == events[-1].sequence
        assert set(handled_counts().values()) == {1}

    def test_a_batch_larger_than_the_batch_size_is_handled_in_several(self):
        (stream,) = streams_in_partition(1, 1)
        append(
            stream, [Counted(amount=1) for _ in range(tallies.batch_size * 2 + 3)], 0
        )

        subscriptions.process_partition(1, [tallies])

        assert Tally.objects.get(stream_id=stream).events == tallies.batch_size * 2 + 3

    def test_events_of_other_types_move_the_checkpoint_without_a_handler(self):
        (stream,) = streams_in_partition(4, 1)
        (event,) = append(stream, [Ignored()], 0)

        subscriptions.process_partition(4, [tallies])

        assert checkpoint(4).sequence == event.sequence

    def test_status_shows_position_and_lag(self):
        (stream,) = streams_in_partition(2, 1)
        append(stream, [Counted(amount=1), Counted(amount=1)], 0)
        before = {
            (s.subscription, s.partition): s.lag
            for s in subscriptions.subscription_status()
        }

        subscriptions.process_partition(2, [tallies])

        after = {
            (s.subscription, s.partition): s.lag
            for s in subscriptions.subscription_status()
        }
        assert before[(tallies.name, 2)] == 2
        assert after[(tallies.name, 2)] == 0

    def test_the_subscriptions_command_prints_lag_and_stopped_partitions(self):
        (stream,) = streams_in_partition(2, 1)
        append(stream, [Counted(amount=1, fail=True)], 0)
        subscriptions.process_partition(2, [tallies])
        out = StringIO()

        call_command("subscriptions", stdout=out)

        line = next(
            row
            for row in out.getvalue().splitlines()
            if row.startswith(tallies.name) and row.split()[1] == "2"
        )
        assert "STOPPED at 1" in line and "DeliberateFailure" in line
        assert "1 stopped partition(s)" in out.getvalue()

    def test_the_subscriptions_command_skips_only_the_sequence_named(self):
        (stream,) = streams_in_partition(2, 1)
        (failed,) = append(stream, [Counted(amount=1, fail=True)], 0)
        subscriptions.process_partition(2, [tallies])
        operator = User.objects.create_superuser("root", "root@example.com", "pw")
        skip = ["subscriptions", "--skip", tallies.name, "2"]

        with pytest.raises(CommandError, match="look again"):
            call_command(*skip, str(failed.sequence + 1), reason="typo", by="root")
        out = StringIO()
        call_command(
            *skip, str(failed.sequence), reason="bad data", by="root", stdout=out
        )

        assert f"skipped sequence {failed.sequence}" in out.getvalue()
        assert tallies.skip_advice in out.getvalue()
        skipped = SkippedEvent.objects.get()
        assert (skipped.reason, skipped.skipped_by) == ("bad data", operator)

    @pytest.mark.parametrize(
        ("options", "refusal"),
        [
            ({"reason": "bad data"}, "--by USERNAME is required"),
            ({"reason": "bad data", "by": "nobody"}, "no user is named 'nobody'"),
            ({"reason": "bad data", "by": "clerk"}, "not an active operations user"),
        ],
    )
    def test_the_subscriptions_command_names_who_decided_a_skip(self, options, refusal):
        (stream,) = streams_in_partition(2, 1)
        (failed,) = append(stream, [Counted(amount=1, fail=True)], 0)
        subscriptions.process_partition(2, [tallies])
        User.objects.create_user("clerk", is_staff=True)

        with pytest.raises(CommandError, match=refusal):
            call_command(
                "subscriptions",
                "--skip",
                tallies.name,
                "2",
                str(failed.sequence),
                **options,
            )

        assert not SkippedEvent.objects.exists()

    @pytest.mark.parametrize(
        "arguments",
        [["--reason", "why"], ["--by", "root"], ["--retry", "x", "1", "--by", "root"]],
    )
    def test_the_subscriptions_command_refuses_options_without_a_skip(self, arguments):
        with pytest.raises(CommandError, match="--reason and --by go with --skip"):
            call_command("subscriptions", *arguments)

    @pytest.mark.parametrize(
        ("partition", "refusal"),
        [
            ("-1", "no partition"),
            (str(settings.EVENTSTORE_PARTITIONS), "no partition"),
            ("99999999999999999999", "no partition"),
            ("2", "not stopped"),
        ],
    )
    def test_the_subscriptions_command_retries_only_a_stopped_partition(
        self, partition, refusal
    ):
        subscriptions.process_partition(2, [tallies])

        with pytest.raises(CommandError, match=refusal):
            call_command("subscriptions", "--retry", tallies.name, partition)

    @pytest.mark.parametrize(
        ("arguments", "refusal"),
        [
            (["--retry", tallies.name, "three"], "PARTITION must be .* not 'three'"),
            (["--skip", tallies.name, "two", "1"], "PARTITION must be .* not 'two'"),
            (["--skip", tallies.name, "2", "latest"], "SEQUENCE must be .* 'latest'"),
        ],
    )
    def test_the_subscriptions_command_names_an_argument_that_is_not_a_number(
        self, arguments, refusal
    ):
        if arguments[0] == "--skip":
            arguments += ["--reason", "poison", "--by", "root"]
        with pytest.raises(CommandError, match=refusal):
            call_command("subscriptions", *arguments)

    @pytest.mark.parametrize(
        ("schema_version", "reason"),
        [(9, "newer than this code"), (1, "cannot upcast")],  # v1 had "count"
    )
    def test_an_undecodable_event_stops_the_partition_naming_its_position(
        self, schema_version, reason
    ):
        (stream,) = streams_in_partition(7, 1)
        (good,) = append(stream, [Counted(amount=1)], 0)
        bad = store_as_other_code(
            stream, 2, "testapp.Counted", schema_version, {"amount": 1}
        )

        subscriptions.process_partition(7, [tallies])

        stopped = checkpoint(7)
        assert stopped.failed_sequence == good.sequence + 1
        assert reason in stopped.error and f"{stream} v2" in stopped.error
        # Named by its id too, so a skip of it can be traced to its stream.
        assert stopped.failed_event_id == bad.event_id

    def test_an_event_its_class_now_refuses_stops_the_partition(self, monkeypatch):
        limits = subscriptions.Subscription(name="tests.limits")
        limits.handles(Limited)(lambda recorded: None)
        (stream,) = streams_in_partition(7, 1)
        (good,) = append(stream, [Limited(amount=1)], 0)
        (refused,) = append(stream, [Limited(amount=500)], 1)
        monkeypatch.setattr(Limited, "limit", 100)  # a later release

        subscriptions.process_partition(7, [limits])

        stopped = Checkpoint.objects.get(subscription=limits.name, partition=7)
        assert stopped.sequence == good.sequence
        assert stopped.failed_sequence == refused.sequence
        assert "AmountAboveLimit: 500 is above 100" in stopped.error


@pytest.mark.django_db(transaction=True)
class TestFailures:
    def test_a_failing_handler_stops_its_partition_at_that_event(self):
        (stream,) = streams_in_partition(3, 1)
        recorded = append(
            stream,
            [
                Counted(amount=1),
                Counted(amount=2),
                Counted(amount=4, fail=True),
                Counted(amount=8),
            ],
            0,
        )

        subscriptions.process_partition(3, [tallies])

        stopped = checkpoint(3)
        assert Tally.objects.get(stream_id=stream).total == 3  # before the failure
        assert stopped.sequence == recorded[1].sequence
        assert stopped.failed_sequence == recorded[2].sequence
        assert stopped.failed_event_id == recorded[2].event_id
        assert "DeliberateFailure" in stopped.error and "Traceback" in stopped.error
        assert stopped.attempts == 1
        assert stopped.retry_at > timezone.now()

    def test_a_failure_while_handling_the_events_before_a_failure_is_recorded(
        self, monkeypatch
    ):
        """The runner commits the events before a failing one, handling them again.

        If one of those fails this time (a handler that fails now and then),
        that failure is recorded, like the first.
        """
        (stream,) = streams_in_partition(3, 1)
        recorded = append(stream, [Counted(amount=n) for n in (1, 2, 4)], 0)
        handler = tallies.handlers["testapp.Counted"]
        failures = [recorded[2].sequence, recorded[0].sequence]  # in this order

        def fails_now_and_then(event):
            if failures and event.sequence == failures[0]:
                raise RuntimeError(f"failing at {failures.pop(0)}")
            handler(event)

        monkeypatch.setitem(tallies.handlers, "testapp.Counted", fails_now_and_then)
        subscriptions.process_partition(3, [tallies])

        stopped = checkpoint(3)
        assert stopped.failed_sequence == recorded[0].sequence
        assert f"failing at {recorded[0].sequence}" in stopped.error
        assert not Tally.objects.filter(stream_id=stream).exists()

    def test_a_stopped_partition_waits_for_its_backoff_then_retries(self):
        (stream,) = streams_in_partition(3, 1)
        append(stream, [Counted(amount=1, fail=True)], 0)
        subscriptions.process_partition(3, [tallies])

        subscriptions.process_partition(3, [tallies])
        assert checkpoint(3).attempts == 1  # still in its backoff

        Checkpoint.objects.filter(partition=3).update(retry_at=timezone.now())
        subscriptions.process_partition(3, [tallies])
        second = checkpoint(3)
        assert second.attempts == 2
        assert second.retry_at - second.failed_at >= datetime.timedelta(seconds=4)

    def test_other_partitions_go_on_while_one_is_stopped(self):
        (bad,) = streams_in_partition(3, 1)
        (good,) = streams_in_partition(4, 1)
        append(bad, [Counted(amount=1, fail=True)], 0)
        append(good, [Counted(amount=1)], 0)

        subscriptions.catch_up([tallies])

        assert Tally.objects.filter(stream_id=good).exists()
        assert checkpoint(3).is_stopped and not checkpoint(4).is_stopped

    def test_an_operator_retry_runs_the_event_again_at_once(self):
        (stream,) = streams_in_partition(3, 1)
        append(stream, [Counted(amount=1, fail=True)], 0)
        subscriptions.process_partition(3, [tallies])

        subscriptions.retry_partition(tallies.name, 3)
        subscriptions.process_partition(3, [tallies])

        assert checkpoint(3).attempts == 2

    def test_skipping_a_failed_event_records_the_reason_and_goes_on(
        self, django_user_model
    ):
        operator = django_user_model.objects.create_user("operator")
        (stream,) = streams_in_partition(3, 1)
        recorded = append(
            stream,
            [Counted(amount=1, fail=True), Counted(amount=2), Counted(amount=3)],
            0,
        )
        subscriptions.process_partition(3, [tallies])

        subscriptions.skip_failed_event(
            tallies.name,
            3,
            sequence=recorded[0].sequence,
            reason="bad test data",
            actor=operator,
        )
        subscriptions.process_partition(3, [tallies])

        skipped = SkippedEvent.objects.get()
        assert (skipped.sequence, skipped.event_id) == (
            recorded[0].sequence,
            recorded[0].event_id,
        )
        assert (skipped.reason, skipped.skipped_by) == ("bad test data", operator)
        assert "DeliberateFailure" in skipped.error
        assert Tally.objects.get(stream_id=stream).total == 5
        assert not checkpoint(3).is_stopped

    def test_a_skip_needs_a_reason_and_a_stopped_partition(self):
        with pytest.raises(ValueError, match="reason"):
            subscriptions.skip_failed_event(tallies.name, 3, sequence=1, reason=" ")
        subscriptions.process_partition(3, [tallies])
        with pytest.raises(ValueError, match="not stopped"):
            subscriptions.skip_failed_event(
                tallies.name, 3, sequence=1, reason="why not"
            )

    def test_a_retry_needs_a_stopped_partition_that_exists(self):
        with pytest.raises(ValueError, match="no partition"):
            subscriptions.retry_partition(tallies.name, settings.EVENTSTORE_PARTITIONS)
        with pytest.raises(ValueError, match="not stopped"):
            subscriptions.retry_partition(tallies.name, 3)  # no checkpoint yet
        subscriptions.process_partition(3, [tallies])
        with pytest.raises(ValueError, match="not stopped"):
            subscriptions.retry_partition(tallies.name, 3)

    def test_a_skip_sent_twice_does_not_skip_the_next_failed_event(self):
        (stream,) = streams_in_partition(3, 1)
        first, second = append(
            stream, [Counted(amount=1, fail=True), Counted(amount=2, fail=True)], 0
        )
        subscriptions.process_partition(3, [tallies])
        subscriptions.skip_failed_event(
            tallies.name, 3, sequence=first.sequence, reason="bad test data"
        )
        subscriptions.process_partition(3, [tallies])

        with pytest.raises(ValueError, match="look again"):
            subscriptions.skip_failed_event(
                tallies.name, 3, sequence=first.sequence, reason="bad test data"
            )

        assert checkpoint(3).failed_sequence == second.sequence
        assert list(SkippedEvent.objects.values_list("sequence", flat=True)) == [
            first.sequence
        ]

    def test_a_skip_with_unhandled_events_before_the_failed_one_is_refused(self):
        (stream,) = streams_in_partition(3, 1)
        first, failing = append(
            stream, [Counted(amount=1), Counted(amount=2, fail=True)], 0
        )
        subscriptions.process_partition(3, [tallies])
        # As a runner that lost the lease between its failed batch and the
        # events before the failure would have left it: stopped at the
        # failing event, the checkpoint still before the first.
        Checkpoint.objects.filter(subscription=tallies.name, partition=3).update(
            sequence=first.sequence - 1
        )

        with pytest.raises(ValueError, match="not handled yet"):
            subscriptions.skip_failed_event(
                tallies.name, 3, sequence=failing.sequence, reason="bad data"
            )

        assert not SkippedEvent.objects.exists()
        assert checkpoint(3).sequence == first.sequence - 1

    def test_a_runner_that_lost_the_partition_before_its_failure_records_none(
        self, monkeypatch
    ):
        """A batch failed at its second event; the runner commits the first again.

        If another runner took the lease in between, the first one leaves the
        failure to it: recorded, it would stop the partition at the failing
        event with the first one unhandled before it.
        """
        (stream,) = streams_in_partition(3, 1)
        append(stream, [Counted(amount=1), Counted(amount=2, fail=True)], 0)
        real_handle_batch = subscriptions._handle_batch
        calls = []

        def lease_taken_on_the_second_call(sub, partition, limit):
            calls.append(limit)
            if len(calls) == 2:
                return None  # what _handle_batch answers when the lease is taken
            return real_handle_batch(sub, partition, limit)

        monkeypatch.setattr(
            subscriptions, "_handle_batch", lease_taken_on_the_second_call
        )

        subscriptions.process_partition(3, [tallies])

        assert calls[:2] == [tallies.batch_size, 1]
        assert not Checkpoint.objects.filter(
            subscription=tallies.name, partition=3, failed_sequence__isnull=False
        ).exists()

    def test_a_failure_another_runner_has_since_handled_is_not_recorded(
        self, monkeypatch
    ):
        """A runner writes its failure after its transaction rolled back.

        If meanwhile another runner took the lease and handled the event (the
        failure was transient), the partition is not stopped: a stop recorded
        there could be skipped, moving the checkpoint back, and the events
        after it would be handled twice.
        """
        (stream,) = streams_in_partition(3, 1)
        events = append(stream, [Counted(amount=1), Counted(amount=2)], 0)
        handler = tallies.handlers["testapp.Counted"]
        failures = iter([RuntimeError("transient: statement timeout")])

        def fails_once(recorded):
            failure = next(failures, None)
            if failure is not None:
                raise failure
            handler(recorded)

        record_failure = subscriptions._record_failure

        def another_runner_first(sub, partition, failure):
            subscriptions.process_partition(partition, [tallies])
            record_failure(sub, partition, failure)

        monkeypatch.setitem(tallies.handlers, "testapp.Counted", fails_once)
        monkeypatch.setattr(subscriptions, "_record_failure", another_runner_first)
        subscriptions.process_partition(3, [tallies])

        assert not checkpoint(3).is_stopped
        assert checkpoint(3).sequence == events[-1].sequence
        assert Tally.objects.get(stream_id=stream).total == 3
        assert set(handled_counts().values()) == {1}


@pytest.mark.django_db(transaction=True)
class TestRedelivery:
    def test_running_the_same_batch_twice_handles_it_once(self):
        (stream,) = streams_in_partition(5, 1)
        append(stream, [Counted(amount=1) for _ in range(10)], 0)

        subscriptions.process_partition(5, [tallies])
        subscriptions.process_partition(5, [tallies])

        assert len(handled_counts()) == 10 and set(handled_counts().values()) == {1}

    def test_two_runners_racing_for_one_partition_handle_each_event_once(self):
        streams = streams_in_partition(5, 3)
        for stream in streams:
            append(
                stream, [Counted(amount=1, sleep_seconds=0.005) for _ in range(40)], 0
            )
        barrier = threading.Barrier(3)

        def runner():
            try:
                barrier.wait()
                subscriptions.process_partition(5, [tallies])
            finally:
                connection.close()

        threads = [threading.Thread(target=runner) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        subscriptions.process_partition(5, [tallies])  # whatever a loser left

        assert len(handled_counts()) == 120 and set(handled_counts().values()) == {1}
        assert all(Tally.objects.get(stream_id=s).total == 40 for s in streams)


@pytest.mark.django_db(transaction=True)
class TestRebuild:
    def test_a_rebuild_from_the_start_gives_the_same_read_model(self):
        for stream in streams_in_partition(1, 3) + streams_in_partition(6, 2):
            append(stream, [Counted(amount=n) for n in range(1, 30)], 0)
        subscriptions.catch_up([tallies])
        live = sorted(Tally.objects.values_list("stream_id", "total", "events"))
        Tally.objects.update(total=0)  # damage it

        handled = subscriptions.rebuild(tallies.name)

        assert handled == 5 * 29
        assert sorted(Tally.objects.values_list("stream_id", "total", "events")) == live

    def test_an_event_an_operator_skipped_stays_skipped(self, django_user_model):
        (stream,) = streams_in_partition(3, 1)
        append(
            stream,
            [Counted(amount=1, fail=True), Counted(amount=2), Counted(amount=3)],
            0,
        )
        subscriptions.process_partition(3, [tallies])
        subscriptions.skip_failed_event(
            tallies.name,
            3,
            sequence=checkpoint(3).failed_sequence,
            reason="bad test data",
            actor=django_user_model.objects.create_user("operator"),
        )
        subscriptions.process_partition(3, [tallies])

        handled = subscriptions.rebuild(tallies.name)

        assert handled == 2
        assert Tally.objects.get(stream_id=stream).total == 5

    def test_a_skipped_event_that_cannot_be_decoded_stays_skipped(self, monkeypatch):
        """It is not read: the events before and after it are handled.

        A subscription rebuilt with it that does not handle its type need
        not have skipped it.
        """
        others = subscriptions.Subscription(
            name="eventstore_tests.others", reset=lambda: None
        )
        others.handles(Ignored)(lambda recorded: None)
        monkeypatch.setitem(subscriptions._subscriptions, others.name, others)
        (stream,) = streams_in_partition(3, 1)
        skip_undecodable(stream)
        Tally.objects.update(total=0)  # damage it

        handled = subscriptions.rebuild_together([tallies.name, others.name])

        assert handled == {tallies.name: 3, others.name: 0}
        assert Tally.objects.get(stream_id=stream).total == 7
        assert checkpoint(3).sequence == head_sequence(3)

    def test_an_event_that_cannot_be_decoded_fails_the_rebuild_unless_skipped(
        self, monkeypatch
    ):
        """Skipped for one of the subscriptions rebuilt, not for another."""
        copies = subscriptions.Subscription(
            name="eventstore_tests.copies", reset=lambda: None
        )
        copies.handles(Counted)(lambda recorded: None)
        monkeypatch.setitem(subscriptions._subscriptions, copies.name, copies)
        (stream,) = streams_in_partition(3, 1)
        bad = skip_undecodable(stream)

        with pytest.raises(
            RuntimeError, match=f"partition 3 sequence {bad.sequence}: .*newer"
        ):
            subscriptions.rebuild_together([tallies.name, copies.name])

        assert Tally.objects.get(stream_id=stream).total == 7  # rolled back


def broker_queue_length() -> int:
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    return client.llen(settings.CELERY_TASK_DEFAULT_QUEUE)


def purge_broker_queue_only() -> None:
    redis.Redis.from_url(settings.CELERY_BROKER_URL).delete(
        settings.CELERY_TASK_DEFAULT_QUEUE
    )


def purge_broker_queue() -> None:
    purge_broker_queue_only()
    nudges.release_all()


def run_closing_connection(function, *args):
    """Return a thread target that runs ``function`` and closes its connection."""

    def run():
        try:
            function(*args)
        finally:
            connection.close()

    return run


@pytest.mark.django_db(transaction=True)
class TestDelivery:
    def test_one_nudge_per_partition_and_transaction_after_commit(self):
        purge_broker_queue()
        first, second = streams_in_partition(1, 2)
        (third,) = streams_in_partition(2, 1)

        with transaction.atomic():
            append(first, [Counted(amount=1)], 0)
            append(second, [Counted(amount=1)], 0)
            append(first, [Counted(amount=1)], 1)
            append(third, [Counted(amount=1)], 0)
            assert broker_queue_length() == 0  # nothing before commit

        assert broker_queue_length() == 2

    def test_no_second_nudge_while_one_waits_in_the_queue(self):
        purge_broker_queue()
        first, second = streams_in_partition(1, 2)

        with transaction.atomic():
            append(first, [Counted(amount=1)], 0)
        with transaction.atomic():
            append(second, [Counted(amount=1)], 0)
        waiting = broker_queue_length()
        nudges.release(1)  # as the task does when a worker starts it
        with transaction.atomic():
            append(first, [Counted(amount=1)], 1)

        assert (waiting, broker_queue_length()) == (1, 2)

    def test_a_rolled_back_transaction_sends_no_nudge(self):
        purge_broker_queue()
        (stream,) = streams_in_partition(1, 1)

        with pytest.raises(RuntimeError), transaction.atomic():
            append(stream, [Counted(amount=1)], 0)
            raise RuntimeError("roll back")
        with transaction.atomic():
            append(f"tally-{uuid.uuid4()}", [Counted(amount=1)], 0)

        assert broker_queue_length() == 1

    def test_a_rolled_back_claim_lets_the_next_append_nudge(self):
        purge_broker_queue()
        first, second = streams_in_partition(1, 2)

        with pytest.raises(RuntimeError), transaction.atomic():
            append(first, [Counted(amount=1)], 0)
            raise RuntimeError("roll back")
        with transaction.atomic():
            append(second, [Counted(amount=1)], 0)

        assert broker_queue_length() == 1

    def test_a_claim_whose_nudge_was_lost_expires(self):
        purge_broker_queue()
        first, second = streams_in_partition(1, 2)
        append(first, [Counted(amount=1)], 0)
        purge_broker_queue_only()  # the nudge is lost; its claim stays
        NudgeClaim.objects.filter(partition=1).update(
            claimed_at=timezone.now() - datetime.timedelta(seconds=11)
        )

        append(second, [Counted(amount=1)], 0)

        assert broker_queue_length() == 1

    def test_a_partition_locked_before_its_first_append_still_nudges(self):
        purge_broker_queue()
        (stream,) = streams_in_partition(3, 1)

        with transaction.atomic():
            lock_partitions([stream])
            append(stream, [Counted(amount=1)], 0)

        assert broker_queue_length() == 1

    def test_an_append_that_waited_for_its_partition_sees_a_claim_released_meanwhile(
        self,
    ):
        # An INSERT's snapshot is taken before it waits for the partition's
        # lock; the claim must be read after the wait, or a runner that
        # released it meanwhile (and may have read the partition already)
        # is counted on to handle the event.
        purge_broker_queue()
        first, second, third = streams_in_partition(1, 3)
        append(first, [Counted(amount=1)], 0)  # its nudge waits in the queue
        holder, held, commit = append_left_open(second)  # saw the claim
        waiter = threading.Thread(
            target=run_closing_connection(append, third, [Counted(amount=1)], 0)
        )
        waiter.start()
        time.sleep(0.2)
        assert waiter.is_alive()  # waiting for the partition
        NudgeClaim.objects.filter(partition=1).update(claimed_at=None)  # released

        commit.set()
        holder.join(10)
        waiter.join(10)

        assert "error" not in held
        assert broker_queue_length() == 2

    def test_the_sweep_puts_back_a_deleted_claim_row(self):
        first, second = streams_in_partition(3, 2)
        append(first, [Counted(amount=1)], 0)
        NudgeClaim.objects.all().delete()
        sweep_partitions()  # run here: the nudges it sends are dropped below
        purge_broker_queue()

        append(second, [Counted(amount=1)], 0)

        assert broker_queue_length() == 1

    def test_a_runner_starting_beside_an_open_append_handles_it_once_committed(
        self,
    ):
        # Given a nudge waiting for partition 1, and an append that saw its
        # claim (so it sends no nudge of its own) in a transaction still open
        purge_broker_queue()
        first, second = streams_in_partition(1, 2)
        append(first, [Counted(amount=1)], 0)
        holder, held, commit = append_left_open(second)

        # When the nudge's task starts, and the append commits meanwhile
        task = threading.Thread(
            target=run_closing_connection(process_partition_task, 1)
        )
        task.start()
        task.join(1)  # a task that does not wait for the append ends by now
        commit.set()
        holder.join(10)
        task.join(20)

        # Then the task handled the late append too: no event waits for the sweep
        assert "error" not in held and not task.is_alive()
        assert Handled.objects.filter(stream_id=second).exists()
        assert broker_queue_length() == 1  # the first append's nudge only

    def test_release_gives_up_on_an_append_left_open(self, monkeypatch, caplog):
        purge_broker_queue()
        first, second = streams_in_partition(1, 2)
        append(first, [Counted(amount=1)], 0)
        holder, held, commit = append_left_open(second)
        monkeypatch.setattr(nudges, "RELEASE_LOCK_TIMEOUT", "200ms")
        try:
            nudges.release(1)
            claimed_at = NudgeClaim.objects.get(partition=1).claimed_at
        finally:
            commit.set()
            holder.join(10)

        assert claimed_at is not None  # left to expire
        assert "held its lock" in caplog.text
        assert "error" not in held

    def test_a_runner_turned_away_by_the_lease_leaves_its_events_to_the_holder(
        self, monkeypatch
    ):
        # Given a runner holding the partition's lease, after a read that
        # found nothing new
        first, second = streams_in_partition(1, 2)
        append(first, [Counted(amount=1)], 0)
        read_nothing, go_on = threading.Event(), threading.Event()
        real_read_partition = subscriptions.read_partition

        def read_partition_then_pause(*args, **kwargs):
            events, head = real_read_partition(*args, **kwargs)
            if threading.current_thread() is holder and not events:
                read_nothing.set()
                go_on.wait(10)
            return events, head

        monkeypatch.setattr(subscriptions, "read_partition", read_partition_then_pause)
        holder = threading.Thread(
            target=run_closing_connection(subscriptions.process_partition, 1, [tallies])
        )
        holder.start()
        assert read_nothing.wait(10)

        # When an event is appended and its runner finds the lease taken
        append(second, [Counted(amount=1)], 0)
        assert subscriptions.process_partition(1, [tallies]) == 0
        go_on.set()
        holder.join(20)

        # Then the holder handled it before it stopped
        assert not holder.is_alive()
        assert Handled.objects.filter(stream_id=second).exists()

    def test_the_sweep_finds_partitions_with_work(self):
        (stream,) = streams_in_partition(6, 1)
        append(stream, [Counted(amount=1)], 0)

        assert 6 in subscriptions.partitions_behind()
        subscriptions.process_partition(6)
        assert 6 not in subscriptions.partitions_behind()


@pytest.mark.django_db(transaction=True)
class TestWithARealWorker:
    def test_a_lost_nudge_is_made_good_by_the_sweep(
        self, start_celery_worker, wait_for
    ):
        (stream,) = streams_in_partition(4, 1)
        with transaction.atomic():
            append(stream, [Counted(amount=3)], 0)
        purge_broker_queue()  # the nudge is lost

        start_celery_worker(beat=True)

        tally = wait_for(lambda: Tally.objects.filter(stream_id=stream).first())
        assert tally.total == 3

    def test_a_worker_killed_mid_batch_loses_and_doubles_nothing(
        self, start_celery_worker, wait_for
    ):
        (stream,) = streams_in_partition(2, 1)
        count = tallies.batch_size * 3
        with transaction.atomic():
            append(
                stream, [Counted(amount=1, sleep_seconds=0.02) for _ in range(count)], 0
            )
        worker = start_celery_worker()
        wait_for(lambda: Handled.objects.count() >= tallies.batch_size, timeout=60)
        worker.kill()  # while it holds the lease on the next batch
        handled_at_kill = Handled.objects.count()
        assert handled_at_kill < count

        start_celery_worker(beat=True)

        wait_for(lambda: Handled.objects.count() >= count, timeout=90)
        assert set(handled_counts().values()) == {1}
        assert Tally.objects.get(stream_id=stream).total == count
        assert partition_for(stream) == 2


@pytest.mark.django_db
class TestBatchHooks:
    def test_prepare_batch_sees_the_whole_batch_before_any_handler(self):
        from eventstore.subscriptions import Subscription

        seen = []
        sub = Subscription(
            name="eventstore_tests.prepared",
            batch_size=3,
            prepare_batch=lambda batch: seen.append(("batch", len(batch))),
        )
        sub.handlers["testapp.Counted"] = lambda r: seen.append(("event", r.version))
        (stream,) = streams_in_partition(1, 1)
        append(stream, [Counted(amount=1) for _ in range(4)], 0)

        subscriptions.process_partition(1, [sub])

        assert seen == [
            ("batch", 3),
            ("event", 1),
            ("event", 2),
            ("event", 3),
            ("batch", 1),
            ("event", 4),
        ]

    def test_a_caught_up_subscription_is_not_run(self, django_assert_num_queries):
        (stream,) = streams_in_partition(1, 1)
        append(stream, [Counted(amount=1)], 0)
        subscriptions.process_partition(1, [tallies])

        with django_assert_num_queries(2):  # the head and the checkpoints
            assert subscriptions.process_partition(1, [tallies]) == 0

    def test_catch_up_handles_events_that_handlers_append(self):
        from eventstore.subscriptions import Subscription

        chain = Subscription(name="eventstore_tests.chain")

        def append_next(recorded):
            if recorded.event.amount < 3:
                target = f"tally-{uuid.uuid4()}"
                append(target, [Counted(amount=recorded.event.amount + 1)], 0)

        chain.handlers["testapp.Counted"] = append_next
        append(f"tally-{uuid.uuid4()}", [Counted(amount=1)], 0)

        handled = subscriptions.catch_up([chain, tallies])

        assert sorted(Tally.objects.values_list("total", flat=True)) == [1, 2, 3]
        assert handled == 6

    def test_events_a_handler_appends_to_its_own_partition_are_handled_at_once(self):
        from eventstore.subscriptions import Subscription

        chain = Subscription(name="eventstore_tests.same_partition_chain")
        (stream,) = streams_in_partition(1, 1)

        def append_next(recorded):
            if recorded.event.amount < 3:
                append(
                    stream,
                    [Counted(amount=recorded.event.amount + 1)],
                    recorded.version,
                )

        chain.handlers["testapp.Counted"] = append_next
        append(stream, [Counted(amount=1)], 0)

        handled = subscriptions.process_partition(1, [chain])

        assert handled == 3
        assert [e.event.amount for e in read_stream(stream)] == [1, 2, 3]


@pytest.mark.django_db(transaction=True)
class TestBatchHandlers:
    def make_bulk_tallies(self, name):
        from eventstore.subscriptions import Subscription

        bulk = Subscription(name=name, batch_size=10)
        batches = []

        @bulk.handles_batch(Counted)
        def add_all(batch):
            batches.append(len(batch))
            for recorded in batch:
                if recorded.event.fail:
                    raise RuntimeError(f"cannot add {recorded.version}")
            for recorded in batch:
                Handled.objects.create(
                    event_id=recorded.event_id,
                    stream_id=recorded.stream_id,
                    version=recorded.version,
                    partition=recorded.partition,
                    sequence=recorded.sequence,
                )

        return bulk, batches

    def test_a_batch_handler_gets_each_whole_batch_in_order(self):
        bulk, batches = self.make_bulk_tallies("eventstore_tests.bulk")
        (stream,) = streams_in_partition(1, 1)
        append(stream, [Counted(amount=1) for _ in range(25)], 0)

        subscriptions.process_partition(1, [bulk])

        assert batches == [10, 10, 5]
        versions = list(
            Handled.objects.order_by("sequence").values_list("version", flat=True)
        )
        assert versions == list(range(1, 26))

    def test_a_failing_batch_is_narrowed_down_to_the_failing_event(self):
        bulk, _ = self.make_bulk_tallies("eventstore_tests.bulk_failing")
        (stream,) = streams_in_partition(1, 1)
        recorded = append(
            stream, [Counted(amount=1, fail=(n == 7)) for n in range(1, 11)], 0
        )

        subscriptions.process_partition(1, [bulk])

        stopped = Checkpoint.objects.get(subscription=bulk.name, partition=1)
        assert Handled.objects.count() == 6  # the events before the failing one
        assert stopped.failed_sequence == recorded[6].sequence
        assert stopped.failed_event_id == recorded[6].event_id
        assert "cannot add 7" in stopped.error

    def test_a_failure_before_an_unreadable_event_is_narrowed_down_too(self):
        """The batch stops at an event it cannot decode; the ones before it run again.

        If the batch handler then fails on one of them, the stop names that
        one, not the first of the batch: a skip of the named event would
        otherwise pass over good ones.
        """
        bulk, _ = self.make_bulk_tallies("eventstore_tests.bulk_unreadable")
        (stream,) = streams_in_partition(1, 1)
        good, failing = append(
            stream, [Counted(amount=1), Counted(amount=2, fail=True)], 0
        )
        store_as_other_code(stream, 3, "testapp.Counted", 9, {"amount": 1})  # newer

        subscriptions.process_partition(1, [bulk])

        stopped = Checkpoint.objects.get(subscription=bulk.name, partition=1)
        assert (stopped.sequence, stopped.failed_sequence) == (
            good.sequence,
            failing.sequence,
        )

    def test_a_failing_prepare_batch_stops_the_partition_at_its_event(self):
        """Before, the error escaped the runner: no stop, retried on every sweep."""
        from eventstore.subscriptions import Subscription

        def prepare(batch):
            if any(recorded.event.amount == 13 for recorded in batch):
                raise RuntimeError("cannot prepare 13")

        prepared = Subscription(
            name="eventstore_tests.prepared", batch_size=10, prepare_batch=prepare
        )

        @prepared.handles(Counted)
        def record(recorded):
            Handled.objects.create(
                event_id=recorded.event_id,
                stream_id=recorded.stream_id,
                version=recorded.version,
                partition=recorded.partition,
                sequence=recorded.sequence,
            )

        (stream,) = streams_in_partition(1, 1)
        recorded = append(stream, [Counted(amount=n) for n in (1, 2, 13, 4)], 0)

        subscriptions.process_partition(1, [prepared])

        stopped = Checkpoint.objects.get(subscription=prepared.name, partition=1)
        assert stopped.failed_sequence == recorded[2].sequence
        assert stopped.failed_event_id == recorded[2].event_id
        assert "cannot prepare 13" in stopped.error
        assert Handled.objects.count() == 2

    def test_a_subscription_has_handlers_or_a_batch_handler_not_both(self):
        bulk, _ = self.make_bulk_tallies("eventstore_tests.bulk_only")

        with pytest.raises(ValueError, match="batch handler"):
            bulk.handles(Counted)(lambda recorded: None)


@pytest.mark.parametrize("register", ["handles", "handles_batch"])
def test_a_handler_of_no_event_class_is_refused(register):
    """Registered for no type, it would let the runner pass every event over."""
    sub = subscriptions.Subscription(name="eventstore_tests.of_nothing")

    with pytest.raises(ValueError, match="at least one event class"):
        getattr(sub, register)()


@pytest.mark.django_db
class TestSubscriptionWithNoHandlers:
    """Its handlers' module was never imported in this process, say.

    It reads no event type: run, it would move its checkpoints past every
    event, for good and in silence.
    """

    @pytest.fixture
    def forgotten(self, monkeypatch):
        forgotten = subscriptions.Subscription(
            name="eventstore_tests.forgotten", reset=lambda: None
        )
        monkeypatch.setitem(subscriptions._subscriptions, forgotten.name, forgotten)
        monkeypatch.setattr(subscriptions, "_reported_without_handlers", set())
        (stream,) = streams_in_partition(2, 1)
        append(stream, [Counted(amount=1)], 0)
        return forgotten

    def moved(self, sub) -> bool:
        return Checkpoint.objects.filter(subscription=sub.name, sequence__gt=0).exists()

    def test_it_is_not_run_and_the_error_names_it(self, forgotten, caplog):
        handled = subscriptions.process_partition(2, [forgotten, tallies])

        assert handled == 1  # by the others
        assert not self.moved(forgotten)
        assert checkpoint(2).sequence == head_sequence(2)
        [logged] = [r for r in caplog.records if forgotten.name in r.getMessage()]
        assert logged.levelname == "ERROR" and "no handlers" in logged.getMessage()

    def test_the_error_is_logged_once_per_process(self, forgotten, caplog):
        """Every nudge and every sweep would say it again."""
        for _ in range(3):
            subscriptions.process_partition(2, [forgotten])

        logged = [r for r in caplog.records if forgotten.name in r.getMessage()]
        assert len(logged) == 1
        assert not self.moved(forgotten)

    def test_it_is_not_rebuilt(self, forgotten):
        with pytest.raises(ValueError, match=f"{forgotten.name} has no handlers"):
            subscriptions.rebuild(forgotten.name)

        assert not self.moved(forgotten)


@pytest.mark.django_db
class TestCheckpointBeyondItsHead:
    """A checkpoint past its partition's last event: the partitions were renumbered.

    README's offline change of the number of partitions renumbers every
    event; a subscription whose checkpoints were not moved then (a process
    manager has no rebuild to move them) would take its new events for
    handled ones until they reached the old checkpoint.
    """

    def stopped_beyond_its_head(self, partition: int):
        (stream,) = streams_in_partition(partition, 1)
        Checkpoint.objects.create(
            subscription=tallies.name, partition=partition, sequence=1_000_000
        )
        (recorded,) = append(stream, [Counted(amount=1)], 0)
        subscriptions.process_partition(partition, [tallies])
        return recorded

    def test_the_partition_stops_there_instead_of_passing_new_events_over(self):
        recorded = self.stopped_beyond_its_head(5)

        stopped = checkpoint(5)
        assert not Handled.objects.exists()
        assert stopped.sequence == 1_000_000  # not moved back past the event
        assert stopped.failed_sequence == recorded.sequence
        assert stopped.failed_event_id == recorded.event_id
        assert (
            f"checkpoint at 1000000 beyond the partition's head {recorded.sequence}:"
            " the partitions were renumbered?" in stopped.error
        )

    def test_it_shows_as_stopped_with_every_event_of_the_partition_as_lag(self):
        recorded = self.stopped_beyond_its_head(5)
        out = StringIO()

        call_command("subscriptions", stdout=out)

        (status,) = [
            s
            for s in subscriptions.subscription_status()
            if (s.subscription, s.partition) == (tallies.name, 5)
        ]
        assert status.failed_sequence == recorded.sequence
        assert status.lag == recorded.sequence
        assert "beyond the partition's head" in out.getvalue()

    def test_the_sweep_sends_a_runner_to_it(self):
        (stream,) = streams_in_partition(5, 1)
        append(stream, [Counted(amount=1)], 0)
        subscriptions.process_partition(5)
        assert 5 not in subscriptions.partitions_behind()

        Checkpoint.objects.filter(subscription=tallies.name, partition=5).update(
            sequence=1_000_000
        )

        assert 5 in subscriptions.partitions_behind()

    def test_it_cannot_be_skipped(self):
        """A skip would move the checkpoint to the head, past unhandled events."""
        recorded = self.stopped_beyond_its_head(5)

        with pytest.raises(ValueError, match="a skip cannot help"):
            subscriptions.skip_failed_event(
                tallies.name, 5, sequence=recorded.sequence, reason="renumbered"
            )

        assert checkpoint(5).sequence == 1_000_000

    def test_moving_every_checkpoint_to_its_head_handles_only_later_events(self):
        """README's procedure, once every event was handled before the change."""
        earlier = self.stopped_beyond_its_head(5)  # as if handled before
        gone = settings.EVENTSTORE_PARTITIONS  # a partition no longer there
        Checkpoint.objects.create(subscription=tallies.name, partition=gone)

        subscriptions.move_checkpoints_to_heads()

        heads = {p: head_sequence(p) for p in subscriptions.partitions()}
        for sub in subscriptions.all_subscriptions():
            assert {
                c.partition: c.sequence
                for c in Checkpoint.objects.filter(subscription=sub.name)
            } == heads
        assert not checkpoint(5).is_stopped
        (later,) = append(earlier.stream_id, [Counted(amount=2)], 1)
        subscriptions.process_partition(5, [tallies])
        assert list(Handled.objects.values_list("event_id", flat=True)) == [
            later.event_id
        ]


def _stream_moving(partition: int, old: int, new: int, *, moves: bool) -> str:
    """Return a stream in ``partition`` under ``old`` partitions that under
    ``new`` moves to another partition (``moves``) or stays in it."""
    while True:
        stream = f"tally-{uuid.uuid4()}"
        if partition_for(stream, old) == partition and (
            partition_for(stream, new) != partition
        ) == (moves):
            return stream


def _renumber_events(new_count: int) -> None:
    """README's step 3, as its outcome: each event in its stream's partition
    under ``new_count``, numbered per partition in global id order."""
    numbered: dict[int, int] = {}
    placed = []
    for event_id, stream_id in Event.objects.order_by("id").values_list(
        "id", "stream_id"
    ):
        partition = partition_for(stream_id, new_count)
        numbered[partition] = numbered.get(partition, 0) + 1
        placed.append((partition, numbered[partition], event_id))
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE eventstore_event DISABLE TRIGGER USER")
        cursor.execute("UPDATE eventstore_event SET sequence = -id")
        cursor.executemany(
            "UPDATE eventstore_event SET partition = %s, sequence = %s WHERE id = %s",
            placed,
        )
        cursor.execute("ALTER TABLE eventstore_event ENABLE TRIGGER USER")


@pytest.mark.django_db
class TestRenumberingPartitions:
    """README's "Changing the number of partitions" keeps an operator's skips.

    A skip names the event's position then; renumbering moves the event, and
    another one may take that position.
    """

    @pytest.fixture
    def renumbered_after_a_skip(self, settings, unchecked_partition_count):
        old, new = settings.EVENTSTORE_PARTITIONS, settings.EVENTSTORE_PARTITIONS * 2
        stays = _stream_moving(3, old, new, moves=False)
        moves = _stream_moving(3, old, new, moves=True)
        append(stays, [Counted(amount=1), Counted(amount=2), Counted(amount=4)], 0)
        (failing,) = append(moves, [Counted(amount=100, fail=True)], 0)
        append(stays, [Counted(amount=8)], 3)
        subscriptions.process_partition(3, [tallies])
        subscriptions.skip_failed_event(
            tallies.name, 3, sequence=failing.sequence, reason="bad data"
        )
        subscriptions.process_partition(3, [tallies])
        assert Tally.objects.get(stream_id=stays).total == 15
        _renumber_events(new)
        settings.EVENTSTORE_PARTITIONS = new
        # The event now at the skipped position is one of "stays".
        assert Event.objects.get(partition=3, sequence=failing.sequence).stream_id == (
            stays
        )
        subscriptions.move_checkpoints_to_heads()
        return stays, moves

    def test_a_rebuild_passes_over_the_skipped_event_and_only_it(
        self, renumbered_after_a_skip
    ):
        stays, moves = renumbered_after_a_skip

        subscriptions.rebuild(tallies.name)

        assert Tally.objects.get(stream_id=stays).total == 15
        assert not Tally.objects.filter(stream_id=moves).exists()

    def test_a_verification_finds_no_drift(self, monkeypatch, renumbered_after_a_skip):
        # Tally only: Handled keeps each event's position, which renumbering
        # changed (README's step 5 rebuilds it).
        monkeypatch.setattr(tallies, "read_models", (Tally,))

        run = verification.verify(tallies.name)

        assert run.outcome == CheckRun.Outcome.OK, run.summary
