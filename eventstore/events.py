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
Field values are JSON types, plus ``UUID``, ``datetime`` and ``date``, each
optionally ``| None``.
"""

import dataclasses
import datetime
import types
import typing
import uuid
from collections.abc import Callable
from functools import cache

from .errors import EventDecodeError, UnknownEventType


@dataclasses.dataclass(frozen=True)
class EventType:
    name: str
    version: int
    cls: type


_by_name: dict[str, EventType] = {}
_by_class: dict[type, EventType] = {}
_upcasters: dict[tuple[str, int], Callable[[dict], dict]] = {}


def register_event(name: str, *, version: int = 1):
    """Register a frozen dataclass as the current class of event type ``name``."""

    def register(cls: type) -> type:
        if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:
            raise TypeError(f"{cls.__qualname__} must be a frozen dataclass")
        known = _by_name.get(name)
        if known is not None and known.cls.__qualname__ != cls.__qualname__:
            raise ValueError(f"event type {name!r} is already {known.cls.__qualname__}")
        event_type = EventType(name=name, version=version, cls=cls)
        _by_name[name] = event_type
        _by_class[cls] = event_type
        return cls

    return register


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
        raise UnknownEventType(
            f"{cls.__qualname__} is not a registered event class"
        ) from None


def class_for(name: str) -> type:
    try:
        return _by_name[name].cls
    except KeyError:
        raise UnknownEventType(f"no event class is registered as {name!r}") from None


def encode(event: object) -> tuple[str, int, dict]:
    """Return the type name, schema version and JSON data of an event."""
    event_type = event_type_of(event)
    data = {
        field.name: _to_json(getattr(event, field.name))
        for field in dataclasses.fields(event)
    }
    return event_type.name, event_type.version, data


def decode(
    name: str, schema_version: int, data: dict, *, position: str | Callable[[], str]
) -> object:
    """Build the current event object from stored JSON, upcasting old versions.

    ``position`` names the stored event in errors (a function is called only
    when there is an error to report).
    """
    event_type = _by_name.get(name)
    if event_type is None:
        raise UnknownEventType(f"unknown event type {name!r} at {_where(position)}")
    if schema_version > event_type.version:
        raise UnknownEventType(
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
    converters = _converters(event_type.cls)
    try:
        if not isinstance(data, dict):
            raise ValueError("data is not an object")
        values = {key: converters[key](value) for key, value in data.items()}
        return event_type.cls(**values)
    except KeyError as error:
        reason = f"unexpected field {error}"
    except (TypeError, ValueError, AttributeError) as error:
        reason = str(error)
    raise EventDecodeError(
        f"cannot decode {name!r} v{schema_version} at {_where(position)}: {reason}"
    )


def _where(position: str | Callable[[], str]) -> str:
    return position() if callable(position) else position


@cache
def _converters(cls: type) -> dict[str, Callable]:
    """Return, per field of an event class, the function that reads its JSON."""
    hints = typing.get_type_hints(cls)
    return {
        field.name: _converter(hints[field.name]) for field in dataclasses.fields(cls)
    }


def _converter(hint) -> Callable:
    nullable = type(None) in typing.get_args(hint)
    read = _reader(_without_none(hint))

    def convert(value):
        if value is None:
            if nullable:
                return None
            raise ValueError("null where a value is required")
        return read(value)

    return convert


def _reader(hint) -> Callable:
    if hint is uuid.UUID:
        return uuid.UUID
    if hint is datetime.datetime:
        return datetime.datetime.fromisoformat
    if hint is datetime.date:
        return datetime.date.fromisoformat
    if hint is int:
        return _read_int
    if hint is str:
        return _read_str
    if hint is bool:
        return _read_bool
    if hint is float:
        return _read_float
    if typing.get_origin(hint) is tuple:
        return _tuple_reader(typing.get_args(hint))
    return lambda value: value


def _tuple_reader(item_hints: tuple) -> Callable:
    """Read a JSON list as ``tuple[X, ...]`` or as a fixed ``tuple[X, Y]``."""
    if len(item_hints) == 2 and item_hints[1] is Ellipsis:
        item = _converter(item_hints[0])
        return lambda values: tuple(item(value) for value in _read_list(values))
    items = [_converter(hint) for hint in item_hints]

    def read_fixed(values):
        values = _read_list(values)
        if len(values) != len(items):
            raise ValueError(f"{values!r} does not hold {len(items)} items")
        return tuple(read(value) for read, value in zip(items, values, strict=True))

    return read_fixed


def _read_int(value):
    if type(value) is not int:  # bool is an int subclass, and not an amount
        raise ValueError(f"{value!r} is not an integer")
    return value


def _read_bool(value):
    if type(value) is not bool:
        raise ValueError(f"{value!r} is not true or false")
    return value


def _read_float(value):
    if type(value) not in (int, float):
        raise ValueError(f"{value!r} is not a number")
    return float(value)


def _read_list(value):
    if type(value) is not list:
        raise ValueError(f"{value!r} is not a list")
    return value


def _read_str(value):
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    return value


def _to_json(value):
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    if isinstance(value, tuple):
        return [_to_json(item) for item in value]
    return value


def _without_none(hint):
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint
