"""Writing read models in bulk: ``insert_rows`` writes what ``bulk_create`` would.

On SQLite it is ``bulk_create``; on PostgreSQL, COPY. A batch projection
must not work on one and fail on the other.
"""

import uuid

import psycopg.errors
import pytest
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from eventstore.errors import is_transient
from eventstore.models import Snapshot
from eventstore.readmodels import insert_rows
from eventstore.tests.testapp.models import Handled, Tally

pytestmark = pytest.mark.django_db


def test_fields_not_given_take_their_model_defaults():
    insert_rows(Tally, ["stream_id"], [("tally-defaults",)])

    tally = Tally.objects.get(stream_id="tally-defaults")
    assert (tally.total, tally.events) == (0, 0)


def test_auto_now_add_fields_take_the_time_of_the_insert():
    before = timezone.now()

    insert_rows(
        Handled,
        ["event_id", "stream_id", "version", "partition", "sequence"],
        [(uuid.uuid4(), "tally-handled", 1, 3, 7)],
    )

    assert Handled.objects.get(stream_id="tally-handled").handled_at >= before


def test_a_json_field_takes_a_dict():
    state = {"items": ["a", "b"], "owner": None, "nested": {"n": 1}}

    insert_rows(
        Snapshot,
        ["stream_id", "version", "schema_version", "state"],
        [("shelf-json", 2, 1, state)],
    )

    assert Snapshot.objects.get(stream_id="shelf-json").state == state


def test_a_failure_is_a_django_database_error():
    """``except DatabaseError`` and ``is_transient`` see it as any query's."""
    Tally.objects.create(stream_id="tally-twice", total=1, events=1)

    with pytest.raises(IntegrityError) as raised, transaction.atomic():
        insert_rows(Tally, ["stream_id", "total", "events"], [("tally-twice", 2, 1)])

    assert isinstance(raised.value, DatabaseError)
    assert isinstance(raised.value.__cause__, psycopg.errors.UniqueViolation)
    assert not is_transient(raised.value)
