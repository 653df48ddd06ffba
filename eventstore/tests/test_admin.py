"""The event store in the admin: read-only for everyone, superusers included."""

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from eventstore import subscriptions
from eventstore.models import Checkpoint, Event, SkippedEvent
from eventstore.store import append, partition_for
from eventstore.tests.plans import reads
from eventstore.tests.streams import streams_in_partition
from eventstore.tests.testapp.events import Counted
from eventstore.tests.testapp.projections import tallies

# A page of the event list shows 100 events: reading more than this many of
# the table's is reading the table.
PAGE_OF_ROWS = 5_000


@pytest.fixture
def superuser(db):
    return User.objects.create_superuser("root", "root@example.com", "pw")


@pytest.fixture
def events(db):
    append("counter-a", [Counted(amount=1), Counted(amount=2)], 0)
    append("counter-b", [Counted(amount=3)], 0)
    return list(Event.objects.order_by("id"))


def _kind_choices(response) -> list[dict]:
    [kind_filter] = [
        spec
        for spec in response.context["cl"].filter_specs
        if getattr(spec, "parameter_name", None) == "kind"
    ]
    return list(kind_filter.choices(response.context["cl"]))


@pytest.mark.django_db
class TestEventBrowser:
    def test_lists_events_filtered_by_stream_and_type(self, client, superuser, events):
        client.force_login(superuser)
        url = reverse("admin:eventstore_event_changelist")

        everything = client.get(url)
        one_stream = client.get(url, {"stream": "counter-a"})
        by_type = client.get(url, {"event_type": "testapp.Counted"})

        assert everything.status_code == 200
        assert list(one_stream.context["cl"].result_list) == events[1::-1]
        assert by_type.context["cl"].result_count == 3

    def test_a_stream_kind_lists_its_streams_not_those_of_a_longer_kind(
        self, client, superuser
    ):
        """Kind "order" is not a prefix: "order-line-5" is of kind "order-line"."""
        for stream in ("order-1", "order-line-5", "order-2"):
            append(stream, [Counted(amount=1)], 0)
        client.force_login(superuser)
        url = reverse("admin:eventstore_event_changelist")

        orders = client.get(url, {"kind": "order"})
        lines = client.get(url, {"kind": "order-line"})

        assert [e.stream_id for e in orders.context["cl"].result_list] == [
            "order-2",
            "order-1",
        ]
        assert [e.stream_id for e in lines.context["cl"].result_list] == [
            "order-line-5"
        ]
        choices = [choice["display"] for choice in _kind_choices(orders)]
        assert choices == ["All", "order", "order-line"]

    def test_a_drill_down_into_the_last_year_is_bad_input_not_a_500(
        self, client, superuser
    ):
        """Django bounds the year by the next one, which 9999 does not have."""
        client.force_login(superuser)
        url = reverse("admin:eventstore_event_changelist")

        response = client.get(url, {"recorded_at__year": "9999"})

        assert response.status_code == 302
        assert response["Location"] == f"{url}?e=1"

    def test_an_event_page_shows_its_data_read_only(self, client, superuser, events):
        client.force_login(superuser)

        page = client.get(reverse("admin:eventstore_event_change", args=[events[0].pk]))

        assert page.status_code == 200
        assert b"&quot;amount&quot;: 1" in page.content
        assert b'name="_save"' not in page.content

    @pytest.mark.parametrize("action", ["add", "delete", "change_post"])
    def test_nobody_adds_changes_or_deletes_events(
        self, client, superuser, events, action
    ):
        client.force_login(superuser)
        event = events[0]

        if action == "add":
            response = client.get(reverse("admin:eventstore_event_add"))
        elif action == "delete":
            response = client.post(
                reverse("admin:eventstore_event_delete", args=[event.pk]),
                {"post": "yes"},
            )
        else:
            response = client.post(
                reverse("admin:eventstore_event_change", args=[event.pk]),
                {"stream_id": "changed", "version": 9},
            )

        assert response.status_code == 403
        assert Event.objects.get(pk=event.pk).stream_id == "counter-a"

    def test_staff_without_the_view_permission_see_no_events(self, client, events):
        clerk = User.objects.create_user("clerk", password="pw", is_staff=True)
        client.force_login(clerk)
        url = reverse("admin:eventstore_event_changelist")

        refused = client.get(url)
        clerk.user_permissions.add(Permission.objects.get(codename="view_event"))
        allowed = client.get(url)

        assert (refused.status_code, allowed.status_code) == (403, 200)

    def test_checkpoints_and_skipped_events_are_read_only(self, client, superuser):
        client.force_login(superuser)

        pages = [
            "admin:eventstore_checkpoint_changelist",
            "admin:eventstore_skippedevent_changelist",
            "admin:eventstore_checkpoint_add",
        ]

        statuses = [client.get(reverse(name)).status_code for name in pages]

        assert statuses == [200, 200, 403]


@pytest.fixture
def a_year_of_events(db):
    """200,000 events of the last year, 10 per stream, in five types.

    Written in one INSERT: appending them would take minutes, and PostgreSQL
    plans a table of this size as it would a big one. Each stream is in the
    partition its id hashes to, as the store requires.
    """
    count = 200_000
    partitions = [partition_for(f"account-{n}") for n in range(count // 10 + 1)]
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO eventstore_event (stream_id, version, partition, sequence,"
            " event_type, schema_version, data, metadata, event_id, recorded_at)"
            " SELECT 'account-' || (g / 10), (g %% 10) + 1,"
            " (%s::integer[])[1 + g / 10], g,"
            " (ARRAY['accounts.AccountOpened','accounts.Deposited',"
            "'accounts.Withdrawn','transfers.TransferRequested',"
            "'transfers.Credited'])[1 + g %% 5],"
            " 1, '{\"amount\": 1}'::jsonb, '{}'::jsonb, gen_random_uuid(),"
            " clock_timestamp() - make_interval(secs => (%s - g) * 150)"
            " FROM generate_series(1, %s) AS g",
            [partitions, count, count],
        )
        cursor.execute("ANALYZE eventstore_event")


def event_list_reads(client, superuser, data=None) -> dict[str, int]:
    """Return the rows of the event table each query of the event list read."""
    client.force_login(superuser)
    with CaptureQueriesContext(connection) as captured:
        response = client.get(reverse("admin:eventstore_event_changelist"), data)
    assert response.status_code == 200
    return reads(captured, "eventstore_event")


@pytest.mark.django_db
class TestEventBrowserAtScale:
    """A page of the event list reads about a page of events, never all of them."""

    def test_the_list_does_not_count_every_event(
        self, client, superuser, a_year_of_events
    ):
        """Django's paginator counts every event (a second count is off already)."""
        read = event_list_reads(client, superuser)

        counts = {sql: n for sql, n in read.items() if "COUNT(*)" in sql.upper()}
        assert {sql: n for sql, n in counts.items() if n > PAGE_OF_ROWS} == {}

    def test_the_date_drill_down_does_not_read_every_event(
        self, client, superuser, a_year_of_events
    ):
        """Django lists the years that hold events with a DISTINCT over them all."""
        read = event_list_reads(client, superuser)

        periods = {sql: n for sql, n in read.items() if "DATE_TRUNC" in sql.upper()}
        assert {sql: n for sql, n in periods.items() if n > PAGE_OF_ROWS} == {}

    def test_the_filters_do_not_read_every_event(
        self, client, superuser, a_year_of_events
    ):
        """A filter on a plain field lists its values with a DISTINCT over the table."""
        read = event_list_reads(client, superuser)

        values = {
            sql: n
            for sql, n in read.items()
            if "SELECT DISTINCT" in sql.upper() and "DATE_TRUNC" not in sql.upper()
        }
        assert {sql: n for sql, n in values.items() if n > PAGE_OF_ROWS} == {}

    def test_the_list_offers_the_pages_it_counted_and_says_there_are_more(
        self, client, superuser, a_year_of_events
    ):
        client.force_login(superuser)
        url = reverse("admin:eventstore_event_changelist")

        last = client.get(url, {"p": 20, "event_type": "accounts.Deposited"})
        beyond = client.get(url, {"p": 21})

        assert last.status_code == 200
        assert last.context["cl"].paginator.num_pages == 20
        assert "Pages hold the first 2000 events" in last.content.decode()
        assert {e.event_type for e in last.context["cl"].result_list} == {
            "accounts.Deposited"
        }
        assert (beyond.status_code, beyond["Location"]) == (302, f"{url}?e=1")

    def test_the_date_drill_down_lists_the_months_of_the_events_shown(
        self, client, superuser, a_year_of_events
    ):
        client.force_login(superuser)
        first, last = (
            Event.objects.order_by(order).values_list("recorded_at", flat=True)[0]
            for order in ("recorded_at", "-recorded_at")
        )
        first_month = first.month if first.year == last.year else 1

        page = client.get(
            reverse("admin:eventstore_event_changelist"),
            {"recorded_at__year": last.year},
        )

        choices = page.context["cl"].date_drill_down()["choices"]
        assert [choice["link"] for choice in choices] == [
            f"?recorded_at__month={month}&recorded_at__year={last.year}"
            for month in range(first_month, last.month + 1)
        ]
        assert {e.recorded_at.year for e in page.context["cl"].result_list} == {
            last.year
        }


@pytest.mark.django_db
class TestSkippedEvents:
    def skip_failing_events(self, count: int, operator: User) -> None:
        """Skip, ``count`` times, an event the tallies stopped at."""
        for _ in range(count):
            (stream,) = streams_in_partition(3, 1)
            append(stream, [Counted(amount=1, fail=True)], 0)
            subscriptions.process_partition(3, [tallies])
            checkpoint = Checkpoint.objects.get(subscription=tallies.name, partition=3)
            subscriptions.skip_failed_event(
                tallies.name,
                3,
                sequence=checkpoint.failed_sequence,
                reason="test data",
                actor=operator,
            )

    def test_the_list_makes_as_many_queries_for_20_rows_as_for_2(
        self, client, superuser
    ):
        """Each row links to its event, looked up with the others of the page."""
        client.force_login(superuser)
        url = reverse("admin:eventstore_skippedevent_changelist")

        self.skip_failing_events(2, superuser)
        with CaptureQueriesContext(connection) as two:
            client.get(url)
        self.skip_failing_events(18, superuser)
        with CaptureQueriesContext(connection) as twenty:
            page = client.get(url)

        assert len(twenty.captured_queries) == len(two.captured_queries)
        content = page.content.decode()
        for skipped in SkippedEvent.objects.all():
            event = Event.objects.get(event_id=skipped.event_id)
            link = reverse("admin:eventstore_event_change", args=[event.pk])
            assert f'<a href="{link}">{event}</a>' in content


@pytest.mark.django_db
class TestSchedules:
    @pytest.fixture
    def trial_balance_check(self):
        every, _ = IntervalSchedule.objects.get_or_create(every=15, period="minutes")
        task, _ = PeriodicTask.objects.get_or_create(
            name="Run the checks, such as the trial balance",
            defaults={"task": "eventstore.run_checks", "interval": every},
        )
        return task

    @pytest.mark.parametrize("role", ["auditor", "teller"])
    def test_readers_of_the_schedules_may_not_disable_or_run_them(
        self, client, role, trial_balance_check
    ):
        reader = User.objects.create_user("reader", password="pw", is_staff=True)
        reader.groups.add(Group.objects.get(name=role))  # migration 0004's roles
        client.force_login(reader)
        changelist = reverse("admin:django_celery_beat_periodictask_changelist")

        page = client.get(changelist)
        client.post(
            changelist,
            {
                "action": "disable_tasks",
                "_selected_action": [trial_balance_check.pk],
                "index": 0,
            },
        )

        trial_balance_check.refresh_from_db()
        assert page.status_code == 200
        assert trial_balance_check.enabled
        assert "disable_tasks" not in page.content.decode()
        assert "run_tasks" not in page.content.decode()

    @pytest.mark.parametrize(
        "drill_down",
        [
            {"start_time__year": "9999"},
            {"start_time__year": "9999", "start_time__month": "12"},
            {
                "start_time__year": "9999",
                "start_time__month": "12",
                "start_time__day": "31",
            },
        ],
    )
    def test_a_drill_down_into_the_last_year_is_bad_input_not_a_500(
        self, client, superuser, drill_down
    ):
        client.force_login(superuser)
        url = reverse("admin:django_celery_beat_periodictask_changelist")

        response = client.get(url, drill_down)

        assert response.status_code == 302
        assert response["Location"] == f"{url}?e=1"

    def test_operations_may_disable_them(self, client, trial_balance_check):
        operator = User.objects.create_user("otto", password="pw", is_staff=True)
        operator.groups.add(Group.objects.get(name="operations"))
        client.force_login(operator)

        client.post(
            reverse("admin:django_celery_beat_periodictask_changelist"),
            {
                "action": "disable_tasks",
                "_selected_action": [trial_balance_check.pk],
                "index": 0,
            },
        )

        trial_balance_check.refresh_from_db()
        assert not trial_balance_check.enabled
