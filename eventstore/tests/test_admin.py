"""The event store in the admin: read-only for everyone, superusers included."""

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.urls import reverse
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from eventstore.models import Event
from eventstore.store import append
from eventstore.tests.testapp.events import Counted


@pytest.fixture
def superuser(db):
    return User.objects.create_superuser("root", "root@example.com", "pw")


@pytest.fixture
def events(db):
    append("counter-a", [Counted(amount=1), Counted(amount=2)], 0)
    append("counter-b", [Counted(amount=3)], 0)
    return list(Event.objects.order_by("id"))


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
