"""Errors of the event store. Each names what it is about."""

import psycopg.errors


class EventStoreError(Exception):
    """Base of every event store error."""


class ConcurrencyError(EventStoreError):
    """The stream was not at the version the writer expected."""

    def __init__(self, stream_id: str, expected_version: int, actual_version: int):
        self.stream_id = stream_id
        self.expected_version = expected_version
        self.actual_version = actual_version
        super().__init__(
            f"stream {stream_id!r} is at version {actual_version}, "
            f"expected {expected_version}"
        )


class DuplicateEventError(EventStoreError):
    """An append's event ids clash: with each other, or stored elsewhere or in part."""


class UnknownEventType(EventStoreError):
    """A stored event has a type or schema version no code knows."""


class EventFromNewerCode(UnknownEventType):
    """A stored event of a type, or schema version, this code does not have yet.

    Stored by a newer release (then rolled back, say): deploying that code
    makes it readable. Unlike a missing upcaster or one that fails, it is
    not a bug of the code that reads it.
    """


class UnregisteredEventClass(EventStoreError, TypeError):
    """An event object whose class no ``register_event`` named: a bug."""


class EventDecodeError(EventStoreError):
    """A stored event's data does not fit its class."""


class EventEncodeError(EventStoreError, TypeError):
    """An event's field holds a value that would not read back as it is."""


class InvalidStreamId(EventStoreError):
    """A stream id the event table cannot hold: empty, too long, or with a NUL."""


class UnstorableEvent(EventStoreError):
    """An event the event table cannot hold, refused before anything is sent.

    Its type's name is longer than the column, or its data or metadata hold
    what PostgreSQL's jsonb refuses: a NUL character, NaN, an infinity, a
    lone surrogate, or a value that is not JSON at all.
    """


class UnreadableEvent(EventStoreError):
    """An event in a partition batch could not be decoded; says which."""

    def __init__(self, partition: int, sequence: int, index: int, reason: str):
        self.partition = partition
        self.sequence = sequence
        self.index = index
        super().__init__(reason)


class PartitionCountMismatch(EventStoreError):
    """The stored events were partitioned by another ``EVENTSTORE_PARTITIONS``."""

    def __init__(self, configured: int, stream_id: str, stored: int, computed: int):
        self.configured = configured
        super().__init__(
            f"EVENTSTORE_PARTITIONS is {configured} in this process, but the stored"
            f" events were partitioned by another count: {stream_id!r} is in"
            f" partition {stored}, not {computed}. Every process must use the"
            " count the events were written with."
        )


class AggregateNotFound(EventStoreError):
    """No events are stored for this aggregate."""

    def __init__(self, stream_id: str):
        self.stream_id = stream_id
        super().__init__(f"no events stored for {stream_id!r}")


def is_transient(error: Exception) -> bool:
    """Whether the work may succeed if run again from the start.

    Another writer won the stream (``ConcurrencyError``), or PostgreSQL
    broke a deadlock or a serialization conflict by failing this side.
    """
    if isinstance(error, ConcurrencyError):
        return True
    return isinstance(
        error.__cause__,
        psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure,
    )
