"""Event classes: registration, encoding, upcasting and decoding errors."""

import dataclasses
import datetime
import enum
import uuid
from dataclasses import dataclass

import pytest

from eventstore import events as registry
from eventstore.errors import (
    EventDecodeError,
    EventEncodeError,
    UnknownEventType,
    UnregisteredEventClass,
)
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


class AmountTooLarge(Exception):
    """A rule of an event class, tightened after events were stored."""


@register_event("eventstore_tests.Capped")
@dataclass(frozen=True)
class Capped:
    amount: int

    def __post_init__(self):
        if self.amount > 100:
            raise AmountTooLarge(f"{self.amount} is above 100")


@register_event("eventstore_tests.Priced")
@dataclass(frozen=True)
class Priced:
    quantity: int
    unit_price: int
    total: int = dataclasses.field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "total", self.quantity * self.unit_price)


class Colour(enum.StrEnum):
    RED = "red"


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

    with pytest.raises(UnregisteredEventClass, match="not a registered event class"):
        encode(Stranger(1))


@pytest.mark.parametrize(
    ("event", "field", "value"),
    [
        (Counted(amount="5"), "amount", "'5'"),
        (Counted(amount=True), "amount", "True"),
        (Counted(amount=2.5), "amount", "2.5"),
        (Counted(amount=None), "amount", ""),
        (Counted(amount=1, fail=1), "fail", "1"),
        (Counted(amount=1, note=3), "note", "3"),
        (Counted(amount=1, sleep_seconds="1"), "sleep_seconds", "'1'"),
        (
            Rich(
                who=uuid.uuid4(),
                when=datetime.datetime(2026, 1, 2, 3, 4),
                day=datetime.datetime(2024, 5, 1, 12, 0),
            ),
            "day",
            "datetime.datetime(2024, 5, 1, 12, 0)",
        ),
        (
            Rich(
                who=str(uuid.uuid4()),
                when=datetime.datetime(2026, 1, 2, 3, 4),
                day=datetime.date(2026, 1, 2),
            ),
            "who",
            "is not a UUID",
        ),
        (
            Rich(
                who=uuid.uuid4(),
                when=datetime.date(2026, 1, 2),
                day=datetime.date(2026, 1, 2),
            ),
            "when",
            "datetime.date(2026, 1, 2)",
        ),
        (
            Rich(
                who=uuid.uuid4(),
                when=datetime.datetime(2026, 1, 2, 3, 4),
                day=datetime.date(2026, 1, 2),
                tags=["a"],
            ),
            "tags",
            "['a']",
        ),
        (
            Rich(
                who=uuid.uuid4(),
                when=datetime.datetime(2026, 1, 2, 3, 4),
                day=datetime.date(2026, 1, 2),
                pair=("x", 1),
            ),
            "pair",
            "'x'",
        ),
    ],
    ids=[
        "str-in-int",
        "bool-in-int",
        "float-in-int",
        "none-in-int",
        "int-in-bool",
        "int-in-str",
        "str-in-float",
        "datetime-in-date",
        "str-in-uuid",
        "date-in-datetime",
        "list-in-tuple",
        "item-of-another-type",
    ],
)
def test_a_value_that_would_not_read_back_is_refused_naming_type_and_field(
    event, field, value
):
    """What decode would refuse, or read as another value, is never stored."""
    with pytest.raises(EventEncodeError) as raised:
        encode(event)

    message = str(raised.value)
    assert repr(registry.event_type_of(event).name) in message
    assert repr(field) in message and value in message


def test_a_str_subclass_is_encoded_as_its_text_and_reads_back_equal():
    # The domain writes StrEnum members into str fields (a failure reason).
    name, version, data = encode(Counted(amount=1, note=Colour.RED))

    assert data["note"] == "red"
    assert decode(name, version, data, position="here") == Counted(1, note="red")


def test_a_derived_field_is_neither_stored_nor_read():
    name, version, data = encode(Priced(quantity=2, unit_price=3))

    assert data == {"quantity": 2, "unit_price": 3}
    assert decode(name, version, data, position="here") == Priced(2, 3)
    # Stored before derived fields were left out: the stored value is ignored.
    stored = {"quantity": 2, "unit_price": 3, "total": 7}
    assert decode(name, version, stored, position="here").total == 6


def test_an_event_class_refusing_stored_data_raises_a_decode_error_naming_it():
    with pytest.raises(EventDecodeError, match="at event 8: AmountTooLarge") as raised:
        decode("eventstore_tests.Capped", 1, {"amount": 500}, position="event 8")

    assert isinstance(raised.value.__cause__, AmountTooLarge)


def test_another_class_under_a_registered_name_is_refused():
    """Two apps' classes of one qualname must not share one event type name."""

    def opened_class(module: str) -> type:
        @dataclass(frozen=True)
        class Opened:
            number: str

        Opened.__module__ = module
        Opened.__qualname__ = "Opened"
        return Opened

    payments, cards = opened_class("payments.events"), opened_class("cards.events")
    register_event("eventstore_tests.Opened")(payments)
    try:
        with pytest.raises(ValueError, match="already payments.events.Opened"):
            register_event("eventstore_tests.Opened")(cards)
        assert registry.class_for("eventstore_tests.Opened") is payments
    finally:
        del registry._by_name["eventstore_tests.Opened"]
        del registry._by_class[payments]


def test_a_class_under_a_second_name_is_refused():
    """Subscriptions would read one of its names and pass over the other's events."""
    with pytest.raises(
        ValueError, match="Rich is already event type 'eventstore_tests.Rich'"
    ):
        register_event("eventstore_tests.RichRenamed", version=1)(Rich)

    assert "eventstore_tests.RichRenamed" not in registry.registered_names()
    assert registry.event_type_of_class(Rich).name == "eventstore_tests.Rich"


def test_registering_a_class_again_is_allowed():
    # The same class, or the same module imported again.
    register_event("eventstore_tests.Rich", version=1)(Rich)

    @dataclass(frozen=True)
    class Again:
        value: int

    Again.__module__, Again.__qualname__ = Rich.__module__, Rich.__qualname__
    try:
        register_event("eventstore_tests.Rich", version=1)(Again)
        assert registry.class_for("eventstore_tests.Rich") is Again
    finally:
        register_event("eventstore_tests.Rich", version=1)(Rich)
        del registry._by_class[Again]
