"""Event classes: registration, encoding, upcasting and decoding errors."""

import datetime
import uuid
from dataclasses import dataclass

import pytest

from eventstore.errors import EventDecodeError, UnknownEventType
from eventstore.events import decode, encode, register_event, upcaster
from eventstore.tests.testapp.events import Counted


@register_event("eventstore_tests.Rich", version=1)
@dataclass(frozen=True)
class Rich:
    who: uuid.UUID
    when: datetime.datetime
    day: datetime.date
    maybe: uuid.UUID | None = None
    note: str = ""
    tags: tuple[str, ...] = ()
    pair: tuple[int, str] = (0, "")


def test_an_event_survives_a_round_trip_through_json():
    event = Rich(
        who=uuid.uuid4(),
        when=datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        day=datetime.date(2026, 1, 2),
        tags=("a", "b"),
        pair=(1, "x"),
    )
    name, version, data = encode(event)

    assert (name, version) == ("eventstore_tests.Rich", 1)
    assert decode(name, version, data, position="here") == event


def test_an_old_schema_version_is_upcast_to_the_current_class():
    stored_v1 = {"count": 3, "note": "old"}

    event = decode("testapp.Counted", 1, stored_v1, position="event 1")

    assert event == Counted(amount=3, note="old")


def test_an_unknown_event_type_names_the_position():
    with pytest.raises(UnknownEventType, match="'nope.Nothing' at event 42"):
        decode("nope.Nothing", 1, {}, position="event 42")


def test_a_schema_version_newer_than_the_code_is_refused():
    with pytest.raises(UnknownEventType, match="newer than this code"):
        decode("testapp.Counted", 3, {"amount": 1}, position="event 7")


def test_a_missing_upcaster_is_named():
    @register_event("eventstore_tests.Gap", version=3)
    @dataclass(frozen=True)
    class Gap:
        value: int

    @upcaster("eventstore_tests.Gap", from_version=1)
    def gap_v1_to_v2(data):
        return data

    with pytest.raises(UnknownEventType, match="no upcaster .* from schema version 2"):
        decode("eventstore_tests.Gap", 1, {"value": 1}, position="event 9")


@pytest.mark.parametrize(
    "data",
    [
        {},  # missing field
        {"amount": "12"},  # wrong type
        {"amount": 1.5},
        {"amount": True},
        {"amount": 1, "colour": "red"},  # unknown field
        {"amount": None},
        {"amount": 1, "fail": "no"},  # a bool field
        {"amount": 1, "fail": 0},
        {"amount": 1, "sleep_seconds": "1"},  # a float field
    ],
)
def test_malformed_data_raises_a_decode_error_naming_the_position(data):
    with pytest.raises(EventDecodeError, match="at event 5"):
        decode("testapp.Counted", 2, data, position="event 5")


def test_an_upcaster_that_fails_raises_a_decode_error_naming_the_position():
    # A stored v1 Counted has "count"; this one is malformed.
    with pytest.raises(EventDecodeError, match="from schema version 1 at event 5"):
        decode("testapp.Counted", 1, {"amount": 3}, position="event 5")


RICH = {
    "who": str(uuid.uuid4()),
    "when": "2026-01-01T00:00:00+00:00",
    "day": "2026-01-01",
}


@pytest.mark.parametrize(
    "tuples",
    [
        {"tags": "abc"},  # a string is no list of strings
        {"pair": [1]},  # a fixed tuple of the wrong length
        {"pair": ["x", 1]},  # each item has its own type
    ],
)
def test_a_malformed_tuple_raises_a_decode_error(tuples):
    with pytest.raises(EventDecodeError, match="at event 6"):
        decode("eventstore_tests.Rich", 1, {**RICH, **tuples}, position="event 6")


def test_a_malformed_uuid_raises_a_decode_error():
    with pytest.raises(EventDecodeError):
        decode(
            "eventstore_tests.Rich",
            1,
            {
                "who": "not-a-uuid",
                "when": "2026-01-01T00:00:00+00:00",
                "day": "2026-01-01",
            },
            position="event 6",
        )


def test_only_frozen_dataclasses_can_be_registered():
    @dataclass
    class Mutable:
        value: int

    with pytest.raises(TypeError, match="frozen dataclass"):
        register_event("eventstore_tests.Mutable")(Mutable)


def test_encoding_an_unregistered_class_is_refused():
    @dataclass(frozen=True)
    class Stranger:
        value: int

    with pytest.raises(UnknownEventType, match="not a registered event class"):
        encode(Stranger(1))
