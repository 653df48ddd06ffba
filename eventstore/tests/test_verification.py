"""Verification, repair and checks, on the event store's test app."""

import contextlib
import io
import threading

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from eventstore import subscriptions, verification
from eventstore.models import Checkpoint, CheckRun
from eventstore.store import append
from eventstore.tests.streams import streams_in_partition
from eventstore.tests.test_store import in_thread_transaction
from eventstore.tests.test_subscriptions import (
    checkpoint,
    skip_undecodable,
    store_undecodable,
)
from eventstore.tests.testapp.events import Counted
from eventstore.tests.testapp.models import Handled, Tally
from eventstore.tests.testapp.projections import reset, tallies


@pytest.fixture
def verifiable_tallies():
    tallies.read_models = (Tally, Handled)
    yield tallies
    tallies.read_models = ()


@pytest.fixture
def counted(db, verifiable_tallies):
    """Some hundred events over every partition, projected.

    (The bank's read models are verified on a few thousand events in
    ``tests/test_projection_jobs.py``.)
    """
    streams = [s for p in range(8) for s in streams_in_partition(p, 2)]
    for n, stream in enumerate(streams):
        append(stream, [Counted(amount=n + k) for k in range(1, 41)], 0)
    subscriptions.catch_up([tallies])
    return streams


@pytest.mark.django_db
class TestVerification:
    def test_a_faithful_read_model_verifies_clean(self, counted):
        run = verification.verify(tallies.name)

        assert run.outcome == CheckRun.Outcome.OK, run.summary
        assert run.details["events"] == 640
        assert run.rows_checked == 640 + len(counted)
        assert run.differences == 0

    def test_a_corrupted_read_model_is_found_and_repaired(self, counted):
        Tally.objects.filter(stream_id=counted[3]).update(total=-1)
        Tally.objects.filter(stream_id=counted[7]).delete()

        found = verification.verify(tallies.name)
        repaired = verification.repair(tallies.name)
        again = verification.verify(tallies.name)

        assert found.outcome == CheckRun.Outcome.DRIFT
        assert found.differences == 3  # one changed row (both ways), one missing
        [tally_table] = [
            t for t in found.details["tables"] if t["table"] == Tally._meta.db_table
        ]
        assert tally_table["live_only_sample"][0]["total"] == -1
        assert repaired.outcome == CheckRun.Outcome.OK
        assert again.outcome == CheckRun.Outcome.OK
        assert Tally.objects.get(stream_id=counted[7]).events == 40

    def test_verification_prepares_each_batch_as_the_runner_does(
        self, counted, monkeypatch
    ):
        prepared = []
        monkeypatch.setattr(
            tallies, "prepare_batch", lambda batch: prepared.extend(batch)
        )

        run = verification.verify(tallies.name)

        assert run.outcome == CheckRun.Outcome.OK
        assert len(prepared) == len(counted) * 40

    def test_verification_leaves_the_live_model_and_position_alone(self, counted):
        Tally.objects.filter(stream_id=counted[0]).update(total=12345)
        (stream,) = streams_in_partition(2, 1)
        append(stream, [Counted(amount=1)], 0)  # not yet projected

        verification.verify(tallies.name)

        assert Tally.objects.get(stream_id=counted[0]).total == 12345
        assert not Tally.objects.filter(stream_id=stream).exists()

    def test_a_subscription_without_read_models_cannot_be_verified(self, db):
        run = verification.verify(tallies.name)

        assert run.outcome == CheckRun.Outcome.ERROR
        assert "read models" in run.summary

    def test_drift_is_recorded_and_mailed_to_operations(self, counted, mailoutbox):
        User.objects.create_superuser("root", "root@example.com", "pw")
        User.objects.create_user("clerk", "clerk@example.com", "pw")
        Tally.objects.filter(stream_id=counted[3]).update(total=-1)

        run = verification.verify(tallies.name)

        assert run.outcome == CheckRun.Outcome.DRIFT
        assert run.alerted_at is not None
        assert [m.to for m in mailoutbox] == [["root@example.com"]]
        assert tallies.name in mailoutbox[0].subject

    def test_a_clean_verification_sends_no_mail(self, counted, mailoutbox):
        User.objects.create_superuser("root", "root@example.com", "pw")

        run = verification.verify(tallies.name)

        assert run.ok and run.alerted_at is None and not mailoutbox

    def test_the_scheduled_verification_mails_the_drift_it_finds(
        self, counted, mailoutbox, settings
    ):
        User.objects.create_superuser("root", "root@example.com", "pw")
        Tally.objects.filter(stream_id=counted[3]).delete()

        outcomes = verification.verify_projections_task()

        assert CheckRun.Outcome.DRIFT in outcomes
        drifted = CheckRun.objects.get(outcome=CheckRun.Outcome.DRIFT)
        assert drifted.name == tallies.name and drifted.alerted_at is not None
        assert [m.subject for m in mailoutbox] == [
            f"{settings.EMAIL_SUBJECT_PREFIX}{tallies.name}: "
            f"{drifted.get_outcome_display()}"
        ]

    def test_a_skipped_event_that_cannot_be_decoded_is_skipped_again(
        self, verifiable_tallies
    ):
        """As the live model did: it is not read, the events after it are."""
        (stream,) = streams_in_partition(3, 1)
        skip_undecodable(stream)

        run = verification.verify(tallies.name)

        assert run.outcome == CheckRun.Outcome.OK, run.summary
        assert run.details["events"] == 3

    def test_an_event_that_cannot_be_decoded_past_the_cut_is_not_read(
        self, verifiable_tallies
    ):
        """The partition is stopped at it: verified up to the cut before it."""
        (stream,) = streams_in_partition(3, 1)
        append(stream, [Counted(amount=1), Counted(amount=2)], 0)
        bad = store_undecodable(stream, 3)
        subscriptions.process_partition(3, [tallies])
        assert checkpoint(3).failed_sequence == bad.sequence

        run = verification.verify(tallies.name)

        assert run.outcome == CheckRun.Outcome.OK, run.summary
        assert run.details["events"] == 2

    def test_a_subscription_with_no_handlers_cannot_be_verified(self, monkeypatch):
        """Its handlers' module not imported: an empty shadow says nothing."""
        forgotten = subscriptions.Subscription(
            name="eventstore_tests.forgotten", reset=reset, read_models=(Tally,)
        )
        monkeypatch.setitem(subscriptions._subscriptions, forgotten.name, forgotten)

        run = verification.verify(forgotten.name)

        assert run.outcome == CheckRun.Outcome.ERROR
        assert "no handlers" in run.summary


@pytest.mark.django_db
class TestChecks:
    @pytest.fixture
    def check(self):
        figures = {"differences": 0}

        def compare():
            return verification.CheckResult(
                rows_checked=10,
                differences=figures["differences"],
                summary=f"{figures['differences']} differ",
            )

        verification.register_check("test.figures", compare)
        yield figures
        verification._checks.pop("test.figures")

    def test_a_difference_is_recorded_and_mailed_to_operations(self, check, mailoutbox):
        operator = User.objects.create_user("op", "op@example.com", "pw")
        operator.user_permissions.add(
            Permission.objects.get(codename="operate_subscriptions")
        )
        User.objects.create_user("clerk", "clerk@example.com", "pw")
        check["differences"] = 2

        run = verification.run_check("test.figures")

        assert run.outcome == CheckRun.Outcome.DRIFT
        assert run.alerted_at is not None
        assert [m.to for m in mailoutbox] == [["op@example.com"]]
        assert "test.figures" in mailoutbox[0].subject

    def test_agreeing_figures_send_no_mail(self, check, mailoutbox):
        run = verification.run_check("test.figures")

        assert run.ok and run.alerted_at is None and not mailoutbox

    def test_a_check_that_raises_is_recorded_as_an_error_and_mailed(
        self, check, mailoutbox
    ):
        User.objects.create_superuser("root", "root@example.com", "pw")

        def broken():
            return {}["currencies"]

        verification.register_check("test.broken", broken)
        try:
            run = verification.run_check("test.broken")
        finally:
            verification._checks.pop("test.broken")

        assert run.outcome == CheckRun.Outcome.ERROR
        assert run.summary == "KeyError: 'currencies'"
        assert run.alerted_at is not None
        assert [m.to for m in mailoutbox] == [["root@example.com"]]

    def test_mails_are_titled_with_the_sites_email_subject_prefix(
        self, check, mailoutbox, settings
    ):
        """Not the bank's: the event store knows nothing of what its app is."""
        settings.EMAIL_SUBJECT_PREFIX = "[library] "
        User.objects.create_superuser("root", "root@example.com", "pw")
        check["differences"] = 1

        run = verification.run_check("test.figures")

        assert [m.subject for m in mailoutbox] == [
            f"[library] test.figures: {run.get_outcome_display()}"
        ]

    def test_the_cut_holds_the_subscriptions_caught_up(self, counted):
        (stream,) = streams_in_partition(5, 1)
        append(stream, [Counted(amount=9)], 0)

        with verification.caught_up_cut([tallies.name]) as cut:
            assert Tally.objects.get(stream_id=stream).total == 9
            assert cut[5] > 0


@pytest.mark.django_db
def test_rebuild_projections_command_rebuilds_and_reports(counted, capsys):
    Tally.objects.all().delete()

    call_command("rebuild_projections", tallies.name)

    assert Tally.objects.count() == len(counted)
    assert CheckRun.objects.get(kind=CheckRun.Kind.REPAIR).rows_checked == 640


@pytest.mark.django_db
def test_rebuild_projections_refuses_names_with_list(verifiable_tallies):
    with pytest.raises(CommandError, match="--list takes no names"):
        call_command("rebuild_projections", tallies.name, list=True)


@pytest.mark.django_db
def test_rebuild_projections_refuses_unknown_names(verifiable_tallies):
    with pytest.raises(CommandError, match="cannot rebuild no.such; choose from"):
        call_command("rebuild_projections", tallies.name, "no.such")


@pytest.mark.django_db
def test_a_projection_named_twice_is_rebuilt_once_with_one_progress_bar(counted):
    stderr = io.StringIO()

    call_command(
        "rebuild_projections",
        tallies.name,
        tallies.name,
        stdout=io.StringIO(),
        stderr=stderr,
    )

    assert CheckRun.objects.get(kind=CheckRun.Kind.REPAIR).rows_checked == 640
    # A bar is drawn empty once, when it opens; a second bar for the same
    # name would be left on the screen at 0%.
    assert stderr.getvalue().count(f"{tallies.name}:   0%") == 1


@pytest.mark.django_db
def test_a_projection_named_twice_is_verified_once(counted):
    call_command(
        "rebuild_projections",
        tallies.name,
        tallies.name,
        verify=True,
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )

    assert CheckRun.objects.filter(kind=CheckRun.Kind.VERIFY).count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_cut_locks_checkpoints_in_the_order_a_rebuild_does(wait_for):
    # A rebuild locks checkpoints sorted by subscription; a cut asked for the
    # same subscriptions in another order must queue behind it, not deadlock.
    first, second = sorted(s.name for s in subscriptions.all_subscriptions())[:2]
    subscriptions.partitions_behind()  # every checkpoint row exists
    holding, release = threading.Event(), threading.Event()

    def hold_first():
        list(Checkpoint.objects.select_for_update().filter(subscription=first))
        holding.set()
        release.wait(timeout=30)

    def cut_in_reverse_order():
        with verification.caught_up_cut([second, first]):
            return "cut"

    holder, _ = in_thread_transaction(hold_first)
    assert holding.wait(timeout=10)
    cutter, cut = in_thread_transaction(cut_in_reverse_order)
    try:
        wait_for(a_session_waits_for_a_lock, timeout=10, message="the cut's lock wait")
        with transaction.atomic():
            locked = list(
                Checkpoint.objects.select_for_update(nowait=True).filter(
                    subscription=second
                )
            )
        assert locked  # the waiting cut holds none of the second's checkpoints
    finally:
        release.set()
        holder.join()
        cutter.join()
    assert cut == {"value": "cut"}


def a_session_waits_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


# The jobs' own statement timeout: their statements over whole read models and
# the event table grow with the store, past the sessions' 60 seconds.

JOB_TIMEOUT_MS = 1234567


def statement_timeout_ms() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('statement_timeout')::interval")
        return int(cursor.fetchone()[0].total_seconds() * 1000)


@pytest.fixture
def job_timeout(settings):
    assert statement_timeout_ms() != JOB_TIMEOUT_MS  # the sessions' timeout
    settings.DATABASE_JOB_STATEMENT_TIMEOUT_MS = JOB_TIMEOUT_MS


def record_timeouts(monkeypatch) -> list[int]:
    """Record the statement timeout whenever the tallies replay a batch."""
    seen = []
    monkeypatch.setattr(
        tallies, "prepare_batch", lambda batch: seen.append(statement_timeout_ms())
    )
    return seen


@pytest.mark.django_db
class TestJobStatementTimeout:
    def test_verification_runs_with_the_jobs_timeout(
        self, counted, job_timeout, monkeypatch
    ):
        seen = record_timeouts(monkeypatch)

        run = verification.verify(tallies.name)

        assert run.outcome == CheckRun.Outcome.OK
        assert seen and set(seen) == {JOB_TIMEOUT_MS}

    def test_a_repair_runs_with_the_jobs_timeout(
        self, counted, job_timeout, monkeypatch
    ):
        seen = record_timeouts(monkeypatch)

        run = verification.repair(tallies.name)

        assert run.outcome == CheckRun.Outcome.OK
        assert seen and set(seen) == {JOB_TIMEOUT_MS}

    def test_a_check_at_a_cut_runs_with_the_jobs_timeout(self, counted, job_timeout):
        seen = []

        def check():
            with verification.caught_up_cut([tallies.name]):
                seen.append(statement_timeout_ms())
            return verification.CheckResult(rows_checked=0, differences=0, summary="")

        verification.register_check("test.timeout", check)
        try:
            run = verification.run_check("test.timeout")
        finally:
            verification._checks.pop("test.timeout")

        assert run.ok
        assert seen == [JOB_TIMEOUT_MS]


@pytest.mark.django_db(transaction=True)
def test_the_jobs_timeout_ends_with_their_transaction(
    verifiable_tallies, job_timeout, monkeypatch
):
    before = statement_timeout_ms()
    for n, stream in enumerate(streams_in_partition(3, 2)):
        append(stream, [Counted(amount=n + 1)], 0)
    subscriptions.catch_up([tallies])
    seen = record_timeouts(monkeypatch)

    verification.verify(tallies.name)
    verification.repair(tallies.name)

    assert seen and set(seen) == {JOB_TIMEOUT_MS}
    assert statement_timeout_ms() == before


# A job that fails (a statement timeout, a lost connection) is recorded as an
# error run and mailed, and the scheduled tasks go on with the next job.


@contextlib.contextmanager
def checkpoint_locked(subscription: str):
    """Hold a subscription's checkpoint of partition 0 locked, as a long batch does."""
    subscriptions.partitions_behind()  # every checkpoint row exists, committed
    holding, release = threading.Event(), threading.Event()

    def hold():
        list(
            Checkpoint.objects.select_for_update().filter(
                subscription=subscription, partition=0
            )
        )
        holding.set()
        release.wait(timeout=30)

    holder, _ = in_thread_transaction(hold)
    assert holding.wait(timeout=10)
    try:
        yield
    finally:
        release.set()
        holder.join()


@pytest.fixture
def short_job_timeout(settings):
    settings.DATABASE_JOB_STATEMENT_TIMEOUT_MS = 300


@pytest.fixture
def ops(db):
    return User.objects.create_superuser("ops", "ops@example.com", "pw")


@pytest.fixture
def checks_at_a_cut(monkeypatch):
    """Only two checks: one at a cut of the tallies, then one that always agrees."""

    def at_a_cut():
        with verification.caught_up_cut([tallies.name]):
            return verification.CheckResult(rows_checked=0, differences=0, summary="")

    def agrees():
        return verification.CheckResult(rows_checked=1, differences=0, summary="")

    monkeypatch.setattr(
        verification, "_checks", {"test.at_a_cut": at_a_cut, "test.agrees": agrees}
    )


@pytest.mark.django_db(transaction=True)
class TestJobsThatFail:
    def test_a_check_that_hits_the_jobs_timeout_is_recorded_and_mailed(
        self, ops, short_job_timeout, checks_at_a_cut, mailoutbox
    ):
        # The cut waits on a checkpoint lock past the jobs' timeout.
        with checkpoint_locked(tallies.name):
            run = verification.run_check("test.at_a_cut")

        assert run.outcome == CheckRun.Outcome.ERROR
        assert "statement timeout" in run.summary
        assert CheckRun.objects.get() == run
        assert run.alerted_at is not None
        assert [m.to for m in mailoutbox] == [["ops@example.com"]]

    def test_the_scheduled_checks_go_on_after_one_that_fails(
        self, ops, short_job_timeout, checks_at_a_cut, mailoutbox
    ):
        with checkpoint_locked(tallies.name):
            outcomes = verification.run_checks_task()

        assert outcomes == [CheckRun.Outcome.OK, CheckRun.Outcome.ERROR]
        assert dict(CheckRun.objects.values_list("name", "outcome")) == {
            "test.agrees": CheckRun.Outcome.OK,
            "test.at_a_cut": CheckRun.Outcome.ERROR,
        }
        assert len(mailoutbox) == 1

    def test_the_scheduled_verification_goes_on_after_a_read_model_that_fails(
        self, ops, short_job_timeout, verifiable_tallies, mailoutbox
    ):
        with checkpoint_locked(tallies.name):
            verification.verify_projections_task()

        runs = dict(CheckRun.objects.values_list("name", "outcome"))
        assert runs == {
            sub.name: (
                CheckRun.Outcome.ERROR if sub is tallies else CheckRun.Outcome.OK
            )
            for sub in verification.verifiable()
        }
        assert "statement timeout" in CheckRun.objects.get(name=tallies.name).summary
        assert len(mailoutbox) == 1

    def test_a_repair_that_hits_the_jobs_timeout_is_recorded_for_each_read_model(
        self, ops, short_job_timeout, verifiable_tallies, mailoutbox
    ):
        other = next(s.name for s in verification.rebuildable() if s is not tallies)

        with checkpoint_locked(tallies.name):
            runs = verification.repair_together([other, tallies.name])

        assert [run.name for run in runs] == [other, tallies.name]
        assert {run.outcome for run in runs} == {CheckRun.Outcome.ERROR}
        assert "statement timeout" in runs[0].summary
        assert CheckRun.objects.count() == 2
        assert len(mailoutbox) == 2

    @pytest.mark.parametrize("in_transaction", [True, False])
    def test_a_check_whose_connection_is_lost_is_recorded_on_a_new_one(
        self, ops, mailoutbox, in_transaction
    ):
        def lose_the_connection():
            held = transaction.atomic() if in_transaction else contextlib.nullcontext()
            with held, connection.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")

        verification.register_check("test.lost", lose_the_connection)
        try:
            run = verification.run_check("test.lost")
        finally:
            verification._checks.pop("test.lost")
            # Had run_check raised, the test database's flush would need this.
            connection.close_if_unusable_or_obsolete()

        assert run.outcome == CheckRun.Outcome.ERROR
        assert run.summary.startswith("OperationalError: ")
        assert CheckRun.objects.get() == run
        assert len(mailoutbox) == 1


JOBS = (
    verification.verify_projections_task,
    verification.verify_projection_task,
    verification.repair_projection_task,
    verification.run_checks_task,
    verification.run_check_task,
)


@pytest.mark.parametrize("task", JOBS, ids=lambda task: task.name)
def test_a_job_runs_at_most_once_within_its_time_limit(task, settings):
    # Acknowledged when taken: Redis would hand an unacknowledged job, which
    # may run longer than its visibility timeout, to a second worker.
    assert (task.acks_late, task.reject_on_worker_lost) == (False, False)
    assert task.soft_time_limit == settings.JOB_TIME_LIMIT_SECONDS
    assert task.time_limit > task.soft_time_limit


@pytest.mark.parametrize("task", JOBS, ids=lambda task: task.name)
def test_a_jobs_time_limits_are_read_from_the_settings_not_at_import(task, settings):
    # A worker reads them as it starts, after Django's settings are loaded.
    settings.JOB_TIME_LIMIT_SECONDS = 120

    assert (task.soft_time_limit, task.time_limit) == (120, 180)
