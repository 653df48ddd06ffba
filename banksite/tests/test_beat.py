"""The beat schedule, as django-celery-beat's database scheduler sends it."""

import pytest
from django.conf import settings
from django_celery_beat.schedulers import DatabaseScheduler

from banksite.celery import app

# The scheduler closes old connections, as beat does between ticks.
pytestmark = pytest.mark.django_db(transaction=True)


def test_a_sweep_not_taken_before_the_next_is_due_expires():
    """While the workers are down, sweeps do not pile up (720 an hour).

    Each would nudge every partition once the workers are back, ahead of
    the nudges of new events.
    """
    scheduler = DatabaseScheduler(app=app, lazy=True)
    scheduler.setup_schedule()

    sweep = scheduler.schedule["eventstore-sweep"]

    assert sweep.options["expires"] == settings.EVENTSTORE_SWEEP_SECONDS
