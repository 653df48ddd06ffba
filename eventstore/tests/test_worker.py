"""The subscription runner driven by a real Celery worker on the real Redis."""

import uuid

import pytest
from django.db import transaction

from eventstore.store import append
from eventstore.tests.testapp.events import Counted
from eventstore.tests.testapp.models import Handled, Tally

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_append_nudges_a_worker_that_runs_the_handler(celery_worker, wait_for):
    stream = f"tally-{uuid.uuid4()}"
    with transaction.atomic():
        append(stream, [Counted(amount=5), Counted(amount=7)], 0)

    tally = wait_for(lambda: Tally.objects.filter(stream_id=stream, events=2).first())

    assert tally.total == 12
    assert Handled.objects.filter(stream_id=stream).count() == 2
