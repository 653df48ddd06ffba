"""The operations page: who sees it, and retry, skip and jobs through the client."""

import contextlib
import dataclasses

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from banksite.celery import app as celery_app
from banksite.tests.servers import closed_port
from eventstore import subscriptions, verification
from eventstore.models import Checkpoint, CheckRun, SkippedEvent
from eventstore.store import append
from eventstore.tests.plans import reads
from eventstore.tests.streams import streams_in_partition
from eventstore.tests.testapp.events import Counted
from eventstore.tests.testapp.projections import tallies

OPERATIONS = reverse("admin:operations")


def staff(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def viewer(db):
    return staff("viewer", "view_checkpoint")


@pytest.fixture
def operator(db):
    return staff("operator", "view_checkpoint", "operate_subscriptions")


@pytest.fixture
def stopped(db):
    """Partition 3 of the tallies stopped at a failing event."""
    (stream,) = streams_in_partition(3, 1)
    append(stream, [Counted(amount=1), Counted(amount=2, fail=True)], 0)
    subscriptions.process_partition(3, [tallies])
    checkpoint = Checkpoint.objects.get(subscription=tallies.name, partition=3)
    assert checkpoint.is_stopped
    return checkpoint


def post(client, name: str, data: dict):
    return client.post(reverse(f"admin:{name}"), data, follow=True)


def skip(client, *, partition: int, sequence: int, reason: str):
    data = {"partition": partition, "sequence": sequence, "reason": reason}
    return post(client, "operations_skip", {"subscription": tallies.name, **data})


def page_messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


@pytest.mark.django_db
class TestWhoSeesIt:
    def test_anonymous_users_are_sent_to_the_login(self, client):
        response = client.get(OPERATIONS)

        assert response.status_code == 302
        assert "/admin/login/" in response["Location"]

    def test_staff_without_permission_are_refused(self, client):
        client.force_login(staff("clerk"))

        assert client.get(OPERATIONS).status_code == 403

    def test_a_viewer_sees_partitions_and_the_chart_but_no_buttons(
        self, client, viewer, stopped
    ):
        client.force_login(viewer)

        page = client.get(OPERATIONS)
        index = client.get(reverse("admin:index"))

        assert page.status_code == 200
        content = page.content.decode()
        assert "Stopped at 2" in content
        assert "DeliberateFailure" in content
        assert "<svg" in content
        assert "Retry now" not in content and "Skip event" not in content
        assert OPERATIONS in index.content.decode()

    def test_an_operator_sees_the_buttons(self, client, operator, stopped):
        client.force_login(operator)

        content = client.get(OPERATIONS).content.decode()

        assert "Retry now" in content and "Skip event" in content
        assert tallies.skip_advice in content


@pytest.mark.django_db
class TestActions:
    def test_a_viewer_may_not_retry_skip_or_start_jobs(self, client, viewer, stopped):
        client.force_login(viewer)
        target = {"subscription": tallies.name, "partition": 3}

        statuses = [
            client.post(reverse("admin:operations_retry"), target).status_code,
            client.post(
                reverse("admin:operations_skip"), {**target, "reason": "x"}
            ).status_code,
            client.post(
                reverse("admin:operations_verify"), {"name": tallies.name}
            ).status_code,
        ]

        assert statuses == [403, 403, 403]
        assert Checkpoint.objects.get(pk=stopped.pk).is_stopped
        assert not SkippedEvent.objects.exists()

    def test_retry_lets_the_partition_try_now_and_is_logged(
        self, client, operator, stopped
    ):
        client.force_login(operator)

        response = post(
            client,
            "operations_retry",
            {"subscription": tallies.name, "partition": 3},
        )

        checkpoint = Checkpoint.objects.get(pk=stopped.pk)
        assert checkpoint.retry_at <= stopped.retry_at
        assert "will retry" in page_messages(response)[0]
        entry = LogEntry.objects.get(user=operator)
        assert entry.object_id == str(stopped.pk)
        assert "Retried" in entry.change_message

    def test_retry_logs_the_event_retried_though_a_worker_cleared_the_stop(
        self, client, operator, stopped, monkeypatch
    ):
        # The fix for the failing event is released; the worker the retry's
        # nudge wakes handles the event before the page logs the retry.
        handler = tallies.handlers["testapp.Counted"]

        def fixed(recorded):
            event = dataclasses.replace(recorded.event, fail=False)
            handler(dataclasses.replace(recorded, event=event))

        retry_partition = subscriptions.retry_partition

        def retry_then_a_worker_runs(subscription, partition):
            retry_partition(subscription, partition)
            subscriptions.process_partition(partition, [tallies])

        monkeypatch.setitem(tallies.handlers, "testapp.Counted", fixed)
        monkeypatch.setattr(subscriptions, "retry_partition", retry_then_a_worker_runs)
        client.force_login(operator)

        post(client, "operations_retry", {"subscription": tallies.name, "partition": 3})

        assert not Checkpoint.objects.get(pk=stopped.pk).is_stopped
        assert LogEntry.objects.get(user=operator).change_message == (
            f"Retried {stopped} stopped at sequence {stopped.failed_sequence}."
        )

    def test_retrying_an_unregistered_subscription_is_refused_with_a_message(
        self, client, operator
    ):
        """A subscription renamed or removed leaves its checkpoints behind."""
        Checkpoint.objects.create(
            subscription="testapp.renamed", partition=1, failed_sequence=5, error="x"
        )
        client.force_login(operator)

        response = post(
            client,
            "operations_retry",
            {"subscription": "testapp.renamed", "partition": 1},
        )

        assert "Not retried: no subscription named" in page_messages(response)[0]
        assert not LogEntry.objects.exists()

    @pytest.mark.parametrize(
        "data",
        [
            {"subscription": tallies.name, "partition": "abc"},
            {"subscription": tallies.name, "partition": "-3"},
            {"partition": "3"},
        ],
    )
    def test_a_malformed_retry_is_refused_with_a_message(
        self, client, operator, stopped, data
    ):
        client.force_login(operator)

        response = post(client, "operations_retry", data)

        assert page_messages(response)[0].startswith("Not retried.")
        assert Checkpoint.objects.get(pk=stopped.pk).retry_at == stopped.retry_at

    def test_a_skip_needs_a_reason(self, client, operator, stopped):
        client.force_login(operator)

        response = skip(
            client, partition=3, sequence=stopped.failed_sequence, reason="   "
        )

        assert "Not skipped" in page_messages(response)[0]
        assert Checkpoint.objects.get(pk=stopped.pk).is_stopped

    def test_a_skip_records_who_and_why_and_moves_on(self, client, operator, stopped):
        client.force_login(operator)

        response = skip(
            client,
            partition=3,
            sequence=stopped.failed_sequence,
            reason="bad test data",
        )

        skipped = SkippedEvent.objects.get()
        assert (skipped.sequence, skipped.reason, skipped.skipped_by) == (
            stopped.failed_sequence,
            "bad test data",
            operator,
        )
        assert not Checkpoint.objects.get(pk=stopped.pk).is_stopped
        assert "skipped sequence" in page_messages(response)[0]
        assert tallies.skip_advice in page_messages(response)[0]
        assert LogEntry.objects.get(user=operator).change_message == (
            "Skipped: bad test data"
        )

    def test_skipping_a_running_partition_is_refused(self, client, operator):
        client.force_login(operator)
        client.get(OPERATIONS)

        response = skip(client, partition=4, sequence=1, reason="why not")

        assert "not stopped" in page_messages(response)[0]

    def test_the_skip_form_names_the_event_shown_and_another_is_not_skipped(
        self, client, operator, stopped
    ):
        client.force_login(operator)
        page = client.get(OPERATIONS).content.decode()
        shown = f'name="sequence" value="{stopped.failed_sequence}"'
        # Since the page was loaded, another operator skipped the event
        # shown, and the partition stopped at the next one.
        (stream,) = streams_in_partition(3, 1)
        append(stream, [Counted(amount=3, fail=True)], 0)
        subscriptions.skip_failed_event(
            tallies.name, 3, sequence=stopped.failed_sequence, reason="seen first"
        )
        subscriptions.process_partition(3, [tallies])

        response = skip(
            client,
            partition=3,
            sequence=stopped.failed_sequence,
            reason="bad test data",
        )

        assert shown in page
        assert "look again" in page_messages(response)[0]
        assert SkippedEvent.objects.get().reason == "seen first"
        assert Checkpoint.objects.get(pk=stopped.pk).is_stopped

    def test_a_job_is_queued_after_commit_and_logged(
        self, client, operator, django_capture_on_commit_callbacks
    ):
        client.force_login(operator)

        with django_capture_on_commit_callbacks() as queued:
            response = post(client, "operations_repair", {"name": tallies.name})

        assert len(queued) == 1
        assert "queued" in page_messages(response)[0]
        assert "repair of testapp.tallies" in str(LogEntry.objects.get())

    def test_an_unknown_job_name_is_refused(self, client, operator):
        client.force_login(operator)

        response = post(client, "operations_check", {"name": "no.such"})

        assert "no check named" in page_messages(response)[0]

    def test_the_page_shows_the_latest_results(self, client, operator):
        tallies.read_models = ()
        verification.verify(tallies.name)  # cannot: no read models
        client.force_login(operator)

        content = client.get(OPERATIONS).content.decode()

        assert CheckRun.objects.get().outcome == CheckRun.Outcome.ERROR
        assert "Could not run" in content


@pytest.mark.django_db
def test_the_page_reads_a_few_runs_not_every_run(client, viewer):
    """A check every 15 minutes is 35,000 runs a year, and nothing prunes them."""
    verification.register_check("test.quarterly", lambda: None)
    with connection.cursor() as cursor:
        # Written in one INSERT: running the check that often would take minutes.
        cursor.execute(
            "INSERT INTO eventstore_checkrun (name, kind, outcome, started_at,"
            " duration, rows_checked, differences, summary, details, alert_error)"
            " SELECT 'test.quarterly', 'check', 'ok',"
            " now() - make_interval(secs => g * 900), interval '1 second', 3, 0,"
            " 'ok ' || g, '{}'::jsonb, '' FROM generate_series(1, 35000) AS g"
        )
        cursor.execute("ANALYZE eventstore_checkrun")
    client.force_login(viewer)

    try:
        with CaptureQueriesContext(connection) as captured:
            content = client.get(OPERATIONS).content.decode()
    finally:
        verification._checks.pop("test.quarterly")

    read = reads(captured, "eventstore_checkrun")
    assert {sql: n for sql, n in read.items() if n > 1_000} == {}
    assert 'data-check="test.quarterly"' in content and "ok 1<" in content


@contextlib.contextmanager
def broker_down():
    """Point this process's Celery app at a port that refuses connections."""
    before = celery_app.conf.broker_write_url
    with closed_port() as port:
        celery_app.conf.broker_write_url = f"redis://127.0.0.1:{port}/0"
        # Drop the pooled connections to the real broker (what a fork does).
        celery_app._after_fork()
        try:
            yield
        finally:
            celery_app.conf.broker_write_url = before
            celery_app._after_fork()


# Requests are not atomic, so a job is published inside the view: these need
# real transactions to publish there rather than in a captured on_commit.
@pytest.mark.django_db(transaction=True)
def test_a_job_the_broker_cannot_take_is_an_error_message_and_not_logged(
    client, operator
):
    client.force_login(operator)

    with broker_down():
        response = post(client, "operations_repair", {"name": tallies.name})

    assert response.status_code == 200
    assert "Could not queue the" in page_messages(response)[0]
    # Nothing was started, so nothing says it was: no log entry, no run.
    assert not LogEntry.objects.exists()
    assert not CheckRun.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_job_run_in_process_says_how_it_ended_not_that_it_is_queued(
    client, operator, settings
):
    # As in the embedded mode: the task has ended before the page answers.
    settings.CELERY_TASK_ALWAYS_EAGER = True

    def broken():
        raise ValueError("no figures")

    verification.register_check("test.broken", broken)
    client.force_login(operator)
    try:
        response = post(client, "operations_check", {"name": "test.broken"})
    finally:
        verification._checks.pop("test.broken")

    assert page_messages(response) == [
        "The check of test.broken has run: Could not run; its result is below."
    ]
    assert CheckRun.objects.get().summary == "ValueError: no figures"
