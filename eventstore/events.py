"""Event classes: frozen dataclasses registered by type name and schema version.

    @register_event("accounts.Deposited", version=2)
    @dataclass(frozen=True)
    class Deposited:
        amount: int
        reference: str = ""

    @upcaster("accounts.Deposited", from_version=1)
    def deposited_v1_to_v2(data: dict) -> dict:
        return {**data, "reference": ""}

Stored JSON is never rewritten: an event stored at an older schema version is
passed through its upcasters, in order, up to the current class when read.
Field values are ``int``, ``str``, ``bool``, ``float``, ``UUID``, ``datetime``,
``date`` and tuples of them (``tuple[X, ...]`` or ``tuple[X, Y]``), each
optionally ``| None``. Encoding refuses a value that would not read back as
it is (a bool or a str in an ``int`` field, a datetime in a ``date`` field):
the event table is append-only, so what is stored must stay readable.
Fields of other types (``dict``, ``list``) are stored as JSON gives them,
unchecked. Fields with ``init=False`` are derived by the class, so they are
neither stored nor read: a stored value for one is ignored.
"""

import dataclasses
import datetime
import types
import typing
import uuid
from collections.abc import Callable
from functools import cache

from .errors import (
    EventDecodeError,
    EventEncodeError,
    EventFromNewerCode,
    UnknownEventType,
    UnregisteredEventClass,
)


@dataclasses.dataclass(frozen=True)
class EventType:
    name: str
    version: int
    cls: type


_by_name: dict[str, EventType] = {}
_by_class: dict[type, EventType] = {}
_upcasters: dict[tuple[str, int], Callable[[dict], dict]] = {}


def register_event(name: str, *, version: int = 1):
    """Register a frozen dataclass as the current class of event type ``name``.

    Registering a class of the same module and name again (a module imported
    again) replaces it; another class under a taken name is refused, and so
    is a class under a second name: subscriptions would read only one of its
    names and pass over the events stored under the other. A type's name is
    kept for good; the class may be renamed freely.
    """

    def register(cls: type) -> type:
        if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:
            raise TypeError(f"{cls.__qualname__} must be a frozen dataclass")
        known = _by_name.get(name)
        if known is not None and _class_name(known.cls) != _class_name(cls):
            raise ValueError(
                f"event type {name!r} is already {_class_name(known.cls)},"
                f" not {_class_name(cls)}"
            )
        for other in _by_name.values():
            if other.name != name and _class_name(other.cls) == _class_name(cls):
                raise ValueError(
                    f"{_class_name(cls)} is already event type {other.name!r},"
                    f" not also {name!r}"
                )
        event_type = EventType(name=name, version=version, cls=cls)
        _by_name[name] = event_type
        _by_class[cls] = event_type
        return cls

    return register


def _class_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def upcaster(name: str, *, from_version: int):
    """Register a function turning ``name`` data at ``from_version`` into the next."""

    def register(function: Callable[[dict], dict]) -> Callable[[dict], dict]:
        _upcasters[(name, from_version)] = function
        return function

    return register


def event_type_of(event: object) -> EventType:
    return event_type_of_class(type(event))


def event_type_of_class(cls: type) -> EventType:
    try:
        return _by_class[cls]
    except KeyError:
        raise UnregisteredEventClass(
            f"{cls.__qualname__} is not a registered event class"
        ) from None


def registered_names() -> list[str]:
    """Return the names of the registered event types, sorted."""
    return sorted(_by_name)


def current_version(name: str) -> int:
    """Return the schema version event type ``name`` is written at now."""
    return event_type_of_class(class_for(name)).version


def class_for(name: str) -> type:
    try:
        return _by_name[name].cls
    except KeyError:
        raise UnknownEventType(f"no event class is registered as {name!r}") from None


def encode(event: object) -> tuple[str, int, dict]:
    """Return the type name, schema version and JSON data of an event.

    Raise ``EventEncodeError`` for a field value that would not read back as
    it is.
    """
    event_type = event_type_of(event)
    data = {}
    for field, write in _writers(type(event)).items():
        value = getattr(event, field)
        try:
            data[field] = write(value)
        except (ValueError, OverflowError) as error:
            raise EventEncodeError(
                f"cannot encode {event_type.name!r} field {field!r}: {error}"
            ) from None
    return event_type.name, event_type.version, data


def decode(
    name: str, schema_version: int, data: dict, *, position: str | Callable[[], str]
) -> object:
    """Build the current event object from stored JSON, upcasting old versions.

    ``position`` names the stored event in errors (a function is called only
    when there is an error to report). Whatever fails, in an upcaster or in
    the event class itself, is raised as an ``EventStoreError`` naming it.
    """
    event_type = _by_name.get(name)
    if event_type is None:
        raise EventFromNewerCode(f"unknown event type {name!r} at {_where(position)}")
    if schema_version > event_type.version:
        raise EventFromNewerCode(
            f"{name!r} at {_where(position)} has schema version {schema_version}, "
            f"newer than this code's {event_type.version}"
        )
    while schema_version < event_type.version:
        step = _upcasters.get((name, schema_version))
        if step is None:
            raise UnknownEventType(
                f"no upcaster for {name!r} from schema version {schema_version} "
                f"at {_where(position)}"
            )
        try:
            data = step(dict(data))
        except Exception as error:
            raise EventDecodeError(
                f"cannot upcast {name!r} from schema version {schema_version} "
                f"at {_where(position)}: {error!r}"
            ) from error
        schema_version += 1
    try:
        readers, derived = _reading(event_type.cls)
        if not isinstance(data, dict):
            raise ValueError("data is not an object")
        if derived:
            data = {key: value for key, value in data.items() if key not in derived}
        try:
            values = {key: readers[key](value) for key, value in data.items()}
        except KeyError as error:
            raise ValueError(f"unexpected field {error}") from None
        return event_type.cls(**values)
    except Exception as error:  # the class's own rules, too: named, not hidden
        raise EventDecodeError(
            f"cannot decode {name!r} v{schema_version} at {_where(position)}: "
            f"{type(error).__name__}: {error}"
        ) from error


def _where(position: str | Callable[[], str]) -> str:
    return position() if callable(position) else position


@dataclasses.dataclass(frozen=True)
class _Codec:
    """How a field of one type is written to JSON and read back.

    ``write`` raises ``ValueError`` for a value that ``read`` would not give
    back as it is; ``read`` raises it for JSON that does not fit the type.
    """

    write: Callable
    read: Callable


@cache
def _codecs(cls: type) -> dict[str, _Codec]:
    """Return the codec of each stored field (``init=False`` ones are not)."""
    hints = typing.get_type_hints(cls)
    return {
        field.name: _codec(hints[field.name])
        for field in dataclasses.fields(cls)
        if field.init
    }


@cache
def _writers(cls: type) -> dict[str, Callable]:
    return {field: codec.write for field, codec in _codecs(cls).items()}


@cache
def _reading(cls: type) -> tuple[dict[str, Callable], frozenset[str]]:
    """Return the reader of each stored field, and the fields a read leaves out."""
    readers = {field: codec.read for field, codec in _codecs(cls).items()}
    derived = frozenset(f.name for f in dataclasses.fields(cls) if not f.init)
    return readers, derived


def _codec(hint) -> _Codec:
    nullable = type(None) in typing.get_args(hint)
    codec = _value_codec(_without_none(hint))
    return _Codec(
        write=_null_checked(codec.write, nullable),
        read=_null_checked(codec.read, nullable),
    )


def _null_checked(convert: Callable, nullable: bool) -> Callable:
    def convert_or_none(value):
        if value is None:
            if nullable:
                return None
            raise ValueError("no value where one is required")
        return convert(value)

    return convert_or_none


def _value_codec(hint) -> _Codec:
    if hint is uuid.UUID:
        return _Codec(write=_write_uuid, read=uuid.UUID)
    if hint is datetime.datetime:
        return _Codec(write=_write_datetime, read=datetime.datetime.fromisoformat)
    if hint is datetime.date:
        return _Codec(write=_write_date, read=datetime.date.fromisoformat)
    # These are the same in JSON: one check serves both ways.
    if hint is int:
        return _Codec(write=_int, read=_int)
    if hint is str:
        return _Codec(write=_str, read=_str)
    if hint is bool:
        return _Codec(write=_bool, read=_bool)
    if hint is float:
        return _Codec(write=_float, read=_float)
    if typing.get_origin(hint) is tuple:
        return _tuple_codec(typing.get_args(hint))
    return _Codec(write=_as_is, read=_as_is)


def _tuple_codec(item_hints: tuple) -> _Codec:
    """Write ``tuple[X, ...]`` or a fixed ``tuple[X, Y]`` as a JSON list."""
    if len(item_hints) == 2 and item_hints[1] is Ellipsis:
        item = _codec(item_hints[0])
        return _Codec(
            write=lambda values: [item.write(value) for value in _tuple(values)],
            read=lambda values: tuple(item.read(value) for value in _list(values)),
        )
    items = [_codec(hint) for hint in item_hints]

    def write_fixed(values):
        values = _sized(_tuple(values), len(items))
        return [item.write(value) for item, value in zip(items, values, strict=True)]

    def read_fixed(values):
        values = _sized(_list(values), len(items))
        return tuple(
            item.read(value) for item, value in zip(items, values, strict=True)
        )

    return _Codec(write=write_fixed, read=read_fixed)


def _write_uuid(value):
    if not isinstance(value, uuid.UUID):
        raise ValueError(f"{value!r} is not a UUID")
    return str(value)


def _write_datetime(value):
    if not isinstance(value, datetime.datetime):
        raise ValueError(f"{value!r} is not a datetime")
    return value.isoformat()


def _write_date(value):
    # A datetime is a date too, but its text does not read back as one.
    if not isinstance(value, datetime.date) or isinstance(value, datetime.datetime):
        raise ValueError(f"{value!r} is not a date")
    return value.isoformat()


def _int(value):
    if type(value) is not int:  # bool is an int subclass, and not an amount
        raise ValueError(f"{value!r} is not an integer")
    return value


def _bool(value):
    if type(value) is not bool:
        raise ValueError(f"{value!r} is not true or false")
    return value


def _float(value):
    if type(value) not in (int, float):
        raise ValueError(f"{value!r} is not a number")
    return float(value)


def _str(value):
    # A str subclass (a StrEnum member) is written as its text, and the
    # str read back equals it.
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    return value


def _tuple(value):
    if not isinstance(value, tuple):
        raise ValueError(f"{value!r} is not a tuple")
    return value


def _list(value):
    if type(value) is not list:
        raise ValueError(f"{value!r} is not a list")
    return value


def _sized(values, length: int):
    if len(values) != length:
        raise ValueError(f"{values!r} does not hold {length} items")
    return values


def _as_is(value):
    return value


def _without_none(hint):
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint
