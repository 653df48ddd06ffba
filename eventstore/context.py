"""The metadata every event appended in this context carries.

Kept free of Django imports so logging can read it while Django starts.
"""

import contextlib
import contextvars
from collections.abc import Mapping
from types import MappingProxyType

# Holds an immutable mapping: metadata_context() replaces it, never mutates it.
_metadata: contextvars.ContextVar[Mapping] = contextvars.ContextVar(
    "eventstore_metadata", default=MappingProxyType({})
)


@contextlib.contextmanager
def metadata_context(**values):
    """Add metadata (correlation id, actor, ...) to every event appended inside."""
    merged = {**_metadata.get(), **{k: v for k, v in values.items() if v is not None}}
    token = _metadata.set(MappingProxyType(merged))
    try:
        yield merged
    finally:
        _metadata.reset(token)


def current_metadata() -> dict:
    return dict(_metadata.get())
