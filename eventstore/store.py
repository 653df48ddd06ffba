"""Append events to streams and read them back.

Order. Every stream lives in one partition (a stable hash of its id). An
append locks its partition until the appending transaction ends and numbers
its events after the partition's last committed sequence, read once the lock
is granted; so within a partition sequence order is commit order: a reader
that has seen sequence ``n`` committed has seen every event before it, and
sees each stream's versions in order, however late a transaction commits
and whenever it took its transaction id. Writers to different partitions
never wait for each other.

The lock is a transaction-level advisory lock on the partition number
(``eventstore_lock_partition``, migration 0010), not DESIGN's lock on a head
row: the same order for less work, since locking a row reads it and writes
the lock into its page and the WAL. One event is appended by one INSERT
statement, several by the ``eventstore_append`` function (migration 0010
says why): one round trip either way. Neither writes anything but the
events (and, now and then, the nudge claim): a row updated per append would
leave a dead version per append, which no open transaction lets PostgreSQL
prune.

On SQLite (the embedded fallback) the same rules run in Python; SQLite
serializes writers, so order is simple there.
"""

import contextlib
import dataclasses
import datetime
import functools
import json
import re
import uuid
import zlib
from collections.abc import Iterable, Iterator, Sequence

import psycopg
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.models import OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.db.transaction import TransactionManagementError
from django.utils import timezone
from psycopg.types.json import Jsonb

from . import events as event_registry
from . import nudges
from .context import current_metadata
from .errors import (
    ConcurrencyError,
    DuplicateEventError,
    EventStoreError,
    InvalidStreamId,
    PartitionCountMismatch,
    UnreadableEvent,
    UnstorableEvent,
)
from .models import Event, NudgeClaim, PartitionHead, Snapshot

READ_BATCH_SIZE = 500
# Loading an aggregate reads few columns per event, so it fetches more at once.
REPLAY_BATCH_SIZE = 5000

_COLUMNS = (
    "id, stream_id, version, partition, sequence, event_type, schema_version, "
    "data, metadata, event_id, recorded_at"
)
_REPLAY_COLUMNS = "version, event_type, schema_version, data"
_E_COLUMNS = ", ".join(f"e.{column}" for column in _COLUMNS.split(", "))

# An append checks in Python what PostgreSQL would refuse inside
# eventstore_append, where the error would leave the caller's transaction
# aborted; SQLite would store it, and the same code then fail on PostgreSQL.
_STREAM_ID_LENGTH = Event._meta.get_field("stream_id").max_length
_EVENT_TYPE_LENGTH = Event._meta.get_field("event_type").max_length
# A NUL character in JSON text: the escape \u0000, unless its backslash is
# itself escaped (\\u0000 is a backslash, then the letters "u0000").
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


@dataclasses.dataclass(frozen=True)
class NewEvent:
    """An event to append, with an event id of its own or extra metadata."""

    event: object
    event_id: uuid.UUID | None = None
    metadata: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class RecordedEvent:
    """A stored event: the domain event object and where it is stored."""

    id: int
    stream_id: str
    version: int
    partition: int
    sequence: int
    event_type: str
    schema_version: int
    event: object
    # The metadata as stored: JSON text until someone reads ``metadata``
    # (projections rarely do, and parsing it for every event is not free).
    stored_metadata: dict | str
    event_id: uuid.UUID
    recorded_at: datetime.datetime

    @property
    def position(self) -> tuple[int, int]:
        return (self.partition, self.sequence)

    @functools.cached_property
    def metadata(self) -> dict:
        if isinstance(self.stored_metadata, str):
            return json.loads(self.stored_metadata)
        return self.stored_metadata


# Django reads timestamptz with a loader written in Python; a read of many
# events uses psycopg's C loader instead (the session time zone is UTC).
_TIMESTAMPTZ_LOADER = psycopg.adapters.get_loader(
    psycopg.adapters.types["timestamptz"].oid, psycopg.pq.Format.TEXT
)


# Event data arrives as the text of one JSON document with no space around it
# (PostgreSQL's jsonb output; on SQLite, json.dumps'), so the decoder's
# raw_decode reads it without json.loads' checks around it: a third of the
# time a replay spends decoding.
_read_json = json.JSONDecoder().raw_decode


@contextlib.contextmanager
def _reading_cursor():
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.cursor.adapters.register_loader("timestamptz", _TIMESTAMPTZ_LOADER)
        yield cursor


def partition_for(stream_id: str, count: int | None = None) -> int:
    """Return the partition of a stream: the same in every process, forever.

    Only if every process has the same ``EVENTSTORE_PARTITIONS`` (or
    ``count``): writers and runners call ``partition_count`` first, which
    checks that.
    """
    return zlib.crc32(stream_id.encode()) % (count or settings.EVENTSTORE_PARTITIONS)


# (database name, count) pairs this process has checked against the store.
_checked_partition_counts: set[tuple[str, int]] = set()
# How many of the latest events the check looks at, and how many streams
# among them settle it for the process: with another count, a stream lands
# in another partition at least half the time, so 32 streams that all agree
# leave no doubt. A new store, with fewer events and streams than that, is
# checked again on each use; a full sample settles it whatever its streams.
PARTITION_CHECK_SAMPLE = 1000
PARTITION_CHECK_STREAMS = 32


def partition_count(db=None) -> int:
    """Return ``EVENTSTORE_PARTITIONS``, once checked against the stored events.

    A stream's events must all be in one partition. A process configured
    with another count than the one the stored events were numbered with
    would put a stream's new events in another partition, where a runner
    could handle them before the old ones; so it raises
    ``PartitionCountMismatch`` if the latest stored events are not where its
    count puts them. A process checks once per database, once the events
    checked are enough to tell. (An append also refuses a stream whose last
    event is in another partition, so no stream is ever split.) ``db``: the
    default connection, if the caller has it.
    """
    count = settings.EVENTSTORE_PARTITIONS
    key = ((db or connections[DEFAULT_DB_ALIAS]).settings_dict["NAME"], count)
    if key not in _checked_partition_counts and _check_partition_count(count):
        _checked_partition_counts.add(key)
    return count


def _check_partition_count(count: int) -> bool:
    """Raise if the latest events disagree with ``count``; return if that is settled."""
    latest = list(
        Event.objects.order_by("-id").values_list("stream_id", "partition")[
            :PARTITION_CHECK_SAMPLE
        ]
    )
    for stream_id, partition in sorted(set(latest)):
        computed = partition_for(stream_id, count)
        if computed != partition:
            raise PartitionCountMismatch(count, stream_id, partition, computed)
    streams = len({stream_id for stream_id, _ in latest})
    if streams < PARTITION_CHECK_STREAMS and len(latest) < PARTITION_CHECK_SAMPLE:
        return False
    # Every partition's rows exist from here on, so appends rarely have to
    # create them.
    create_partitions(range(count))
    return True


def append(
    stream_id: str,
    events: Sequence[object],
    expected_version: int,
    *,
    metadata: dict | None = None,
) -> list[RecordedEvent]:
    """Append events to a stream at ``expected_version``, all or nothing.

    Runs in the caller's transaction; outside one, the append is a
    transaction of its own and costs one round trip. Items are event objects
    or ``NewEvent``. Raise ``ConcurrencyError`` (leaving the transaction
    usable) if the stream is at another version, and
    ``PartitionCountMismatch`` (the same) if its events are in another
    partition than this process's count gives it. If every event id is
    already stored, append nothing and return the stored events: a repeat is
    a no-op.

    What the table could not store, or a read could not give back, is
    refused before anything is sent, on every database: ``InvalidStreamId``
    (empty, too long), ``EventEncodeError`` (a field value of the wrong
    type) and ``UnstorableEvent`` (NaN or a NUL character in data or
    metadata, say). An ``expected_version`` below 0 is a bug, not a
    conflict: ``ValueError``.
    """
    if not isinstance(expected_version, int) or expected_version < 0:
        raise ValueError(
            f"expected_version must be 0 or more, not {expected_version!r}"
        )
    _check_stream_id(stream_id)
    if not events:
        return []
    new_events = [
        item if isinstance(item, NewEvent) else NewEvent(item) for item in events
    ]
    shared = {**current_metadata(), **(metadata or {})}
    rows = []
    for new in new_events:
        name, schema_version, data = event_registry.encode(new.event)
        if len(name) > _EVENT_TYPE_LENGTH:
            raise UnstorableEvent(
                f"event type {name!r} is longer than {_EVENT_TYPE_LENGTH} characters"
            )
        rows.append(
            (
                new.event_id or uuid.uuid4(),
                name,
                schema_version,
                data,
                _clean({**shared, **new.metadata}),
            )
        )
    if len(rows) > 1 and len({row[0] for row in rows}) < len(rows):
        raise DuplicateEventError(
            f"an event id appears twice among the events appended to {stream_id!r}"
        )
    # Encoded (and checked) on SQLite too.
    if len(rows) == 1:
        encoded = _event_json(stream_id, rows[0])
    else:
        encoded = _events_json(stream_id, rows)
    # The proxy ``connection`` looks the connection up on every attribute
    # access; an append is hot enough for that to show.
    db = connections[DEFAULT_DB_ALIAS]
    partition_count(db)  # refuses a process configured unlike the store
    partition = partition_for(stream_id)
    if db.vendor == "postgresql" and len(rows) == 1:
        outcome, stored, nudge = _append_one_postgresql(
            db, stream_id, partition, expected_version, rows[0], encoded
        )
    elif db.vendor == "postgresql":
        outcome, stored, nudge = _append_postgresql(
            db,
            stream_id,
            partition,
            expected_version,
            encoded,
            check_ids=any(new.event_id is not None for new in new_events),
        )
    else:
        outcome, stored = _append_portable(stream_id, partition, expected_version, rows)
        nudge = outcome == "appended"

    if nudge:
        nudges.send_on_commit(partition)
    if outcome == "conflict":
        raise ConcurrencyError(stream_id, expected_version, stored)
    if outcome == "wrong_partition":
        raise PartitionCountMismatch(
            settings.EVENTSTORE_PARTITIONS, stream_id, stored, partition
        )
    if outcome == "partial_duplicate":
        raise DuplicateEventError(
            f"some but not all events appended to {stream_id!r} are already stored"
        )
    if outcome == "duplicate":
        return _stored_in(stream_id, read_events_by_id([row[0] for row in rows]))
    return [
        RecordedEvent(
            id=id_,
            stream_id=stream_id,
            version=version,
            partition=partition,
            sequence=sequence,
            event_type=name,
            schema_version=schema_version,
            event=new.event,
            stored_metadata=meta,
            event_id=event_id,
            recorded_at=recorded_at,
        )
        for new, (event_id, name, schema_version, _, meta), (
            id_,
            version,
            sequence,
            recorded_at,
        ) in zip(new_events, rows, stored, strict=True)
    ]


def _stored_in(stream_id: str, stored: list[RecordedEvent]) -> list[RecordedEvent]:
    """Return the events a repeated append found, if they are this stream's."""
    for recorded in stored:
        if recorded.stream_id != stream_id:
            raise DuplicateEventError(
                f"event id {recorded.event_id} is stored in {recorded.stream_id!r},"
                f" not in {stream_id!r}"
            )
    return stored


def _check_stream_id(stream_id: str) -> None:
    if not stream_id:
        raise InvalidStreamId("a stream id cannot be empty")
    if len(stream_id) > _STREAM_ID_LENGTH:
        raise InvalidStreamId(
            f"stream id {stream_id[:60]!r}... is longer than"
            f" {_STREAM_ID_LENGTH} characters"
        )
    if "\x00" in stream_id:
        raise InvalidStreamId(f"stream id {stream_id!r} holds a NUL character")


def _events_json(stream_id: str, rows) -> bytes:
    """Return the events as the JSON array ``eventstore_append`` takes.

    Raise ``UnstorableEvent`` for what jsonb refuses: NaN and infinities,
    NUL characters, lone surrogates (UTF-8 cannot hold them), and values
    that are not JSON.
    """
    events = [
        {
            "event_id": str(event_id),
            "event_type": name,
            "schema_version": schema_version,
            "data": data,
            "metadata": meta,
        }
        for event_id, name, schema_version, data, meta in rows
    ]
    try:
        return _storable_json(events)
    except (TypeError, ValueError):
        raise UnstorableEvent(_unstorable(stream_id, rows)) from None


def _event_json(stream_id: str, row) -> tuple[bytes, bytes]:
    """Return one event's data and metadata as JSON, checked as in ``_events_json``."""
    _, _, _, data, meta = row
    try:
        return _storable_json(data), _storable_json(meta)
    except (TypeError, ValueError):
        raise UnstorableEvent(_unstorable(stream_id, [row])) from None


def _storable_json(value) -> bytes:
    text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    if "\\u0000" in text and _JSON_NUL.search(text):
        raise ValueError("a NUL character")
    return text.encode()


def _unstorable(stream_id: str, rows) -> str:
    """Say which value of a refused append jsonb cannot hold."""
    for _, name, _, data, meta in rows:
        for part, values in (("data", data), ("metadata", meta)):
            for key, value in values.items():
                try:
                    _storable_json({key: value})
                except (TypeError, ValueError) as error:
                    return (
                        f"{part} {key!r} of a {name!r} event appended to"
                        f" {stream_id!r} cannot be stored: {error}"
                    )
    return f"an event appended to {stream_id!r} cannot be stored"


def _clean(metadata: dict) -> dict:
    return {
        key: _jsonable(value) for key, value in metadata.items() if value is not None
    }


def _jsonable(value):
    return str(value) if isinstance(value, uuid.UUID) else value


def _append_postgresql(
    db, stream_id, partition, expected_version, events_json, *, check_ids
):
    # A plain psycopg cursor binds the parameters on the server, in binary,
    # and psycopg prepares the statement after a few calls (settings:
    # prepare_threshold). The events go as one JSON array, encoded (and
    # checked) in one call by _events_json; arrays would be adapted element
    # by element in Python.
    events = Jsonb(events_json, dumps=_already_encoded)
    db.ensure_connection()
    cursor = _append_cursor(db)
    with db.wrap_database_errors:
        cursor.execute(
            "SELECT outcome, id, event_id, version, sequence, recorded_at, nudge "
            "FROM eventstore_append(%s, %s, %s, %s, %s)",
            [stream_id, partition, expected_version, events, check_ids],
            binary=True,
        )
        result = cursor.fetchall()
    outcome, nudge = result[0][0], result[0][6]
    if outcome == "conflict":
        return outcome, result[0][3], nudge
    if outcome == "wrong_partition":
        return outcome, result[0][4], nudge
    return outcome, [(r[1], r[3], r[4], r[5]) for r in result], nudge


# One event in one statement (migration 0010). eventstore_next_sequence locks
# the partition and numbers the event after the lock is granted; the version
# check runs in the INSERT's snapshot, which may be older than the lock, and
# ON CONFLICT DO NOTHING turns a stream that moved meanwhile (or an event id
# already stored) into no row: ``_refusal`` then says why.
APPEND_ONE_SQL = """
INSERT INTO eventstore_event AS e (
    stream_id, version, partition, sequence, event_type,
    schema_version, data, metadata, event_id, recorded_at)
SELECT %(stream)s::text, %(expected)s::integer + 1, %(partition)s::integer,
       eventstore_next_sequence(%(partition)s::integer), %(type)s::text,
       %(schema)s::smallint, %(data)s::jsonb, %(metadata)s::jsonb,
       %(event_id)s::uuid, clock_timestamp()
WHERE coalesce((SELECT s.partition = %(partition)s::integer
                FROM eventstore_event s
                WHERE s.stream_id = %(stream)s::text
                  AND s.version = %(expected)s::integer),
               %(expected)s::integer = 0)
ON CONFLICT DO NOTHING
RETURNING e.id, e.version, e.sequence, e.recorded_at,
          eventstore_claim_nudge(%(partition)s::integer)
"""


def _append_one_postgresql(db, stream_id, partition, expected_version, row, encoded):
    event_id, name, schema_version, _, _ = row
    data, metadata = encoded
    db.ensure_connection()
    cursor = _append_cursor(db)
    with db.wrap_database_errors:
        cursor.execute(
            APPEND_ONE_SQL,
            {
                "stream": stream_id,
                "expected": expected_version,
                "partition": partition,
                "type": name,
                "schema": schema_version,
                "data": Jsonb(data, dumps=_already_encoded),
                "metadata": Jsonb(metadata, dumps=_already_encoded),
                "event_id": event_id,
            },
            binary=True,
        )
        result = cursor.fetchall()
    if result:
        id_, version, sequence, recorded_at, nudge = result[0]
        return "appended", [(id_, version, sequence, recorded_at)], nudge
    refused = _refusal(stream_id, partition, expected_version, [event_id])
    # Nothing stands in the way only if the stream reached the expected
    # version after the INSERT's snapshot was taken: a conflict all the same.
    outcome, detail = refused or ("conflict", expected_version)
    return outcome, detail, False


def _refusal(stream_id, partition, expected_version, event_ids):
    """Return why these events cannot be appended, as ``eventstore_append`` says it.

    ``(outcome, detail)``: ``duplicate`` (every event id is stored),
    ``partial_duplicate``, ``wrong_partition`` (detail: the stream's
    partition) or ``conflict`` (detail: the stream's version); None if
    nothing stands in the way.
    """
    stored = Event.objects.filter(event_id__in=event_ids).count()
    if stored == len(event_ids):
        return "duplicate", None
    if stored:
        return "partial_duplicate", None
    current, stream_partition = (
        Event.objects.filter(stream_id=stream_id)
        .order_by("-version")
        .values_list("version", "partition")
        .first()
    ) or (0, partition)
    if stream_partition != partition:
        return "wrong_partition", stream_partition
    if current != expected_version:
        return "conflict", current
    return None


def _already_encoded(events_json: bytes) -> bytes:
    return events_json


def _append_cursor(db) -> psycopg.Cursor:
    """Return the append's cursor on this database connection, made once.

    A new psycopg cursor looks up its parameter dumpers and result loaders
    again on its first query: about 15 µs of an append's 100 µs of Python.
    Django keeps a connection per thread, so the cursor is never shared; a
    new connection (after a reconnect) gets a new cursor.
    """
    cursor = getattr(db, "_eventstore_append_cursor", None)
    if cursor is None or cursor.connection is not db.connection:
        cursor = psycopg.Cursor(db.connection)
        db._eventstore_append_cursor = cursor
    return cursor


def _append_portable(stream_id, partition, expected_version, rows):
    """Do what ``eventstore_append`` does, for databases without it (SQLite)."""
    with transaction.atomic():
        PartitionHead.objects.select_for_update().get_or_create(partition=partition)
        refused = _refusal(
            stream_id, partition, expected_version, [row[0] for row in rows]
        )
        if refused:
            return refused
        start = head_sequence(partition)
        created = Event.objects.bulk_create(
            Event(
                stream_id=stream_id,
                version=expected_version + n,
                partition=partition,
                sequence=start + n,
                event_type=name,
                schema_version=schema_version,
                data=data,
                metadata=meta,
                event_id=event_id,
                recorded_at=timezone.now(),
            )
            for n, (event_id, name, schema_version, data, meta) in enumerate(rows, 1)
        )
    return "appended", [(e.pk, e.version, e.sequence, e.recorded_at) for e in created]


def create_partitions(partitions: Iterable[int]) -> None:
    """Create the head and nudge claim rows of partitions that have none.

    A partition's first append creates them too; an append to a partition
    with a head but no claim row would never nudge (only the sweep would
    find its events), so the two are always created together.
    """
    partitions = list(partitions)
    PartitionHead.objects.bulk_create(
        [PartitionHead(partition=p) for p in partitions], ignore_conflicts=True
    )
    NudgeClaim.objects.bulk_create(
        [NudgeClaim(partition=p) for p in partitions], ignore_conflicts=True
    )


def lock_partitions(stream_ids: Iterable[str]) -> list[int]:
    """Lock these streams' partitions until the transaction ends, in partition order.

    A transaction that will append to several partitions takes their locks
    up front, in one order shared by everyone, instead of one by one as it
    appends; two such transactions then queue instead of deadlocking.
    Return the partitions locked. Outside a transaction the locks would end
    with the statement that takes them: ``TransactionManagementError``.
    """
    if connection.get_autocommit():
        raise TransactionManagementError(
            "lock_partitions locks until the transaction ends: call it in one"
        )
    partition_count()  # refuses a process configured unlike the store
    wanted = sorted({partition_for(stream_id) for stream_id in stream_ids})
    if not wanted:
        return []
    if connection.vendor == "postgresql":  # SQLite serializes writers anyway
        with connection.cursor() as cursor:
            cursor.execute("SELECT eventstore_lock_partitions(%s::integer[])", [wanted])
    return wanted


def read_stream(
    stream_id: str, *, after_version: int = 0, batch_size: int = READ_BATCH_SIZE
) -> Iterator[RecordedEvent]:
    """Yield a stream's events in version order, fetched in batches."""
    while True:
        batch = _select(
            f"SELECT {_COLUMNS} FROM eventstore_event "
            "WHERE stream_id = %s AND version > %s ORDER BY version LIMIT %s",
            [stream_id, after_version, batch_size],
        )
        yield from batch
        if len(batch) < batch_size:
            return
        after_version = batch[-1].version


def replay_stream(
    stream_id: str, *, after_version: int = 0, batch_size: int = REPLAY_BATCH_SIZE
) -> Iterator[tuple[int, object]]:
    """Yield (version, event) of a stream in order: the lean read for loading."""
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {_REPLAY_COLUMNS} FROM eventstore_event"
                " WHERE stream_id = %s AND version > %s ORDER BY version LIMIT %s",
                [stream_id, after_version, batch_size],
            )
            rows = cursor.fetchall()
        yield from _replayed(stream_id, rows)
        if len(rows) < batch_size:
            return
        after_version = rows[-1][0]


def replay_snapshot_and_stream(
    stream_id: str, *, snapshot_schema_version: int
) -> tuple[int, dict | None, Iterator[tuple[int, object]]]:
    """Return a stream's usable snapshot (version, state) and the events after it.

    Events come as in ``replay_stream``. On PostgreSQL the snapshot and the
    first batch of events come back in one query. Without a snapshot,
    version is 0 and state None.
    """
    if connection.vendor != "postgresql":
        snapshot = Snapshot.objects.filter(
            stream_id=stream_id, schema_version=snapshot_schema_version
        ).first()
        version = snapshot.version if snapshot else 0
        state = snapshot.state if snapshot else None
        return version, state, replay_stream(stream_id, after_version=version)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT s.version, s.state, e.* FROM (SELECT 1) AS one "
            "LEFT JOIN eventstore_snapshot s"
            " ON s.stream_id = %s AND s.schema_version = %s "
            f"LEFT JOIN LATERAL (SELECT {_REPLAY_COLUMNS} FROM eventstore_event"
            " WHERE stream_id = %s AND version > coalesce(s.version, 0)"
            " ORDER BY version LIMIT %s) AS e ON true ORDER BY e.version",
            [stream_id, snapshot_schema_version, stream_id, REPLAY_BATCH_SIZE],
        )
        rows = cursor.fetchall()
    version, state = rows[0][0] or 0, rows[0][1]
    if isinstance(state, str):
        state = json.loads(state)
    first_batch = [row[2:] for row in rows if row[2] is not None]

    def events() -> Iterator[tuple[int, object]]:
        yield from _replayed(stream_id, first_batch)
        if len(first_batch) == REPLAY_BATCH_SIZE:
            yield from replay_stream(stream_id, after_version=first_batch[-1][0])

    return version, state, events()


def _replayed(stream_id: str, rows) -> Iterator[tuple[int, object]]:
    for version, name, schema_version, data in rows:
        if isinstance(data, str):
            data = _read_json(data)[0]
        yield (
            version,
            event_registry.decode(
                name,
                schema_version,
                data,
                position=lambda version=version: f"{stream_id} v{version}",
            ),
        )


def stream_version(stream_id: str) -> int:
    """Return the stream's current version (0 if it has no events)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT max(version) FROM eventstore_event WHERE stream_id = %s",
            [stream_id],
        )
        (version,) = cursor.fetchone()
    return version or 0


def read_partition(
    partition: int,
    *,
    after_sequence: int,
    limit: int,
    event_types: Sequence[str] | None = None,
) -> tuple[list[RecordedEvent], int]:
    """Return up to ``limit`` events of a partition after a sequence, and the head.

    The head is the partition's last committed sequence, read in the same
    snapshot as the events: when fewer than ``limit`` events come back, a
    reader has seen everything up to it and may checkpoint there even if
    ``event_types`` filtered events out.
    """
    type_filter = ""
    params: list = [partition, partition, after_sequence]
    if event_types is not None:
        if not event_types:
            return [], head_sequence(partition)
        type_filter = f" AND event_type IN ({', '.join(['%s'] * len(event_types))})"
        params.extend(event_types)
    params.append(limit)
    with _reading_cursor() as cursor:
        cursor.execute(
            f"SELECT {_E_COLUMNS}, head.sequence FROM "
            "(SELECT coalesce((SELECT sequence FROM eventstore_event"
            " WHERE partition = %s ORDER BY sequence DESC LIMIT 1), 0) AS sequence)"
            " AS head "
            f"LEFT JOIN (SELECT {_COLUMNS} FROM eventstore_event"
            f" WHERE partition = %s AND sequence > %s{type_filter}"
            " ORDER BY sequence LIMIT %s) AS e ON true ORDER BY e.sequence",
            params,
        )
        rows = cursor.fetchall()
    head = rows[0][-1] if rows else 0
    events = []
    for index, row in enumerate(row for row in rows if row[0] is not None):
        try:
            events.append(_recorded(row[:-1]))
        except EventStoreError as error:
            raise UnreadableEvent(partition, row[4], index, str(error)) from error
    return events, head


# A partition's last sequence is asked for with ORDER BY ... LIMIT 1, not
# max(): that plans as a backward index scan for one row even when the plan
# was made (and kept, in a prepared statement) while the table was empty;
# max() then got a plan that reads every index entry of the partition.


def _sequences_from_last(partition):
    return (
        Event.objects.filter(partition=partition)
        .order_by("-sequence")
        .values_list("sequence", flat=True)
    )


def head_sequence(partition: int) -> int:
    """Return the partition's last committed sequence (0 before its first event)."""
    return _sequences_from_last(partition).first() or 0


def partition_heads() -> dict[int, int]:
    """Return the last committed sequence of every partition, read in one statement.

    One statement reads every head in one snapshot, so no transaction's
    events are split between the heads.
    """
    last = Subquery(_sequences_from_last(OuterRef("partition"))[:1])
    return dict(
        PartitionHead.objects.annotate(head=Coalesce(last, 0)).values_list(
            "partition", "head"
        )
    )


def read_events_by_id(event_ids: Sequence[uuid.UUID]) -> list[RecordedEvent]:
    """Return the stored events with these event ids, in stored order."""
    ids = list(
        Event.objects.filter(event_id__in=event_ids).values_list("id", flat=True)
    )
    if not ids:
        return []
    placeholders = ", ".join(["%s"] * len(ids))
    return _select(
        f"SELECT {_COLUMNS} FROM eventstore_event"
        f" WHERE id IN ({placeholders}) ORDER BY id",
        ids,
    )


def event_exists(event_id: uuid.UUID) -> bool:
    # Plain SQL: building the ORM's query cost more than the lookup itself,
    # and every transfer step asks (the field adapts the id for SQLite too).
    field = Event._meta.get_field("event_id")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM eventstore_event WHERE event_id = %s",
            [field.get_db_prep_value(event_id, connection)],
        )
        return cursor.fetchone() is not None


def _select(sql: str, params: list) -> list[RecordedEvent]:
    with _reading_cursor() as cursor:
        cursor.execute(sql, params)
        return [_recorded(row) for row in cursor.fetchall()]


def _recorded(row) -> RecordedEvent:
    (
        id_,
        stream_id,
        version,
        partition,
        sequence,
        name,
        schema_version,
        data,
        metadata,
        event_id,
        recorded_at,
    ) = row
    if isinstance(data, str):
        data = _read_json(data)[0]
    if isinstance(event_id, str):
        event_id = uuid.UUID(event_id)
    if isinstance(recorded_at, str):
        recorded_at = datetime.datetime.fromisoformat(recorded_at)
    if recorded_at.tzinfo is None:  # SQLite keeps naive UTC
        recorded_at = recorded_at.replace(tzinfo=datetime.UTC)

    def position() -> str:
        return (
            f"event {id_} ({stream_id} v{version}, "
            f"partition {partition} seq {sequence})"
        )

    return RecordedEvent(
        id=id_,
        stream_id=stream_id,
        version=version,
        partition=partition,
        sequence=sequence,
        event_type=name,
        schema_version=schema_version,
        event=event_registry.decode(name, schema_version, data, position=position),
        stored_metadata=metadata,
        event_id=event_id,
        recorded_at=recorded_at,
    )
