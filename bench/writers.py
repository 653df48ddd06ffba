"""The three writers of the append benchmark, doing the same work.

One database transaction per planned transaction:

- ``ours``: ``eventstore.store.append`` called outside any transaction, so
  each append is a transaction of its own: one round trip (it also nudges
  the partition's Celery task after commit);
- ``ours_atomic``: the same append inside ``transaction.atomic()``, as a
  service that writes more in the same transaction calls it: psycopg sends
  BEGIN and COMMIT as round trips of their own, as the raw baseline does;
- ``raw``: psycopg's ``BEGIN`` / ``INSERT`` / ``COMMIT`` into a copy of the
  event table, with the planned version, partition and sequence (several
  rows go through ``executemany``, which psycopg pipelines);
- ``orm``: ``Event.objects.create`` per event inside ``transaction.atomic()``.

Import after ``django.setup()``.
"""

import os
import uuid

import psycopg
from django.db import connection, transaction
from django.utils import timezone
from psycopg.types.json import Jsonb

from eventstore.models import Event
from eventstore.store import append

from . import environment
from .workload import EVENT_TYPE, REFERENCE, BenchDeposited, Transaction

RAW_INSERT = (
    f"INSERT INTO {environment.RAW_TABLE} (stream_id, version, partition, sequence,"
    " event_type, schema_version, data, metadata, event_id, recorded_at)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, clock_timestamp())"
)


def connect_raw() -> psycopg.Connection:
    """Open the raw baseline's connection; autocommit, so BEGIN/COMMIT are explicit."""
    return psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)


class Writers:
    """The three writers, bound to this process's connections."""

    def __init__(self, raw_connection: psycopg.Connection):
        self.raw_connection = raw_connection

    def backend_pid(self, implementation: str) -> int:
        """Return the process id of the PostgreSQL backend this writer uses."""
        if implementation == "raw":
            return self.raw_connection.info.backend_pid
        connection.ensure_connection()
        return connection.connection.info.backend_pid

    def run(self, implementation: str, transactions: list[Transaction]) -> None:
        getattr(self, implementation)(transactions)

    def ours(self, transactions: list[Transaction]) -> None:
        for txn in transactions:
            _append(txn)

    def ours_atomic(self, transactions: list[Transaction]) -> None:
        for txn in transactions:
            with transaction.atomic():
                _append(txn)

    def raw(self, transactions: list[Transaction]) -> None:
        conn = self.raw_connection
        with conn.cursor() as cursor:
            for txn in transactions:
                rows = [
                    (
                        s.stream_id,
                        s.version,
                        s.partition,
                        s.sequence,
                        EVENT_TYPE,
                        1,
                        Jsonb({"amount": s.amount, "reference": REFERENCE}),
                        Jsonb({}),
                        uuid.uuid4(),
                    )
                    for s in txn
                ]
                with conn.transaction():
                    if len(rows) == 1:
                        cursor.execute(RAW_INSERT, rows[0])
                    else:
                        cursor.executemany(RAW_INSERT, rows)

    def orm(self, transactions: list[Transaction]) -> None:
        for txn in transactions:
            with transaction.atomic():
                for s in txn:
                    Event.objects.create(
                        stream_id=s.stream_id,
                        version=s.version,
                        partition=s.partition,
                        sequence=s.sequence,
                        event_type=EVENT_TYPE,
                        schema_version=1,
                        data={"amount": s.amount, "reference": REFERENCE},
                        metadata={},
                        event_id=uuid.uuid4(),
                        recorded_at=timezone.now(),
                    )


def _append(txn: Transaction) -> None:
    first = txn[0]
    append(
        first.stream_id,
        [BenchDeposited(amount=s.amount, reference=REFERENCE) for s in txn],
        first.version - 1,
    )
