"""Aggregate load time, with and without snapshots, beside a raw SELECT.

Each history is written once through ``Repository.save`` of the snapshotted
aggregate, 100 events a save, so it holds the snapshots the repository takes
itself. ``Counter`` and ``SnapshottedCounter`` read the same stream: the
first replays every event, the second starts from the latest snapshot. The
raw baseline is psycopg fetching the stream's data, in version order.
"""

import dataclasses
import statistics
import time
import uuid

import psycopg

RAW_SELECT = "SELECT data FROM eventstore_event WHERE stream_id = %s ORDER BY version"
KINDS = ("raw", "replay", "snapshot")


@dataclasses.dataclass
class LoadResult:
    events: int
    snapshot_version: int
    milliseconds: dict[str, list[float]]

    def median(self, kind: str) -> float:
        return statistics.median(self.milliseconds[kind])

    def ratio(self, kind: str) -> float:
        return self.median(kind) / self.median("raw")


def write_history(events: int) -> uuid.UUID:
    """Write one aggregate's history of ``events`` deposits; return its id."""
    from eventstore.aggregates import Repository

    from .workload import SnapshottedCounter

    repository = Repository(SnapshottedCounter)
    aggregate = SnapshottedCounter(uuid.uuid4())
    for start in range(0, events, 100):
        for amount in range(start + 1, min(start + 100, events) + 1):
            aggregate.deposit(amount)
        repository.save(aggregate)
    return aggregate.id


def measure(sizes, *, repeats, raw: psycopg.Connection, log) -> list[LoadResult]:
    from eventstore.aggregates import Repository
    from eventstore.models import Snapshot

    from .workload import Counter, SnapshottedCounter

    replaying = Repository(Counter)
    snapshotting = Repository(SnapshottedCounter)
    results = []
    for events in sizes:
        aggregate_id = write_history(events)
        stream_id = Counter.stream_id_for(aggregate_id)
        snapshot = Snapshot.objects.filter(stream_id=stream_id).first()
        expected_balance = events * (events + 1) // 2

        def load_raw(stream_id=stream_id):
            with raw.cursor() as cursor:
                cursor.execute(RAW_SELECT, [stream_id])
                return cursor.fetchall()

        def check(aggregate, events=events, expected=expected_balance):
            if (aggregate.version, aggregate.balance) != (events, expected):
                raise AssertionError(f"loaded {vars(aggregate)}, expected {events}")

        loaders = {
            "raw": load_raw,
            "replay": lambda aggregate_id=aggregate_id: check(
                replaying.load(aggregate_id)
            ),
            "snapshot": lambda aggregate_id=aggregate_id: check(
                snapshotting.load(aggregate_id)
            ),
        }
        for load in loaders.values():  # warm caches and prepared statements
            load()
        milliseconds: dict[str, list[float]] = {kind: [] for kind in KINDS}
        for _ in range(repeats(events)):
            for kind in ("replay", "snapshot", "raw"):
                start = time.perf_counter()
                loaders[kind]()
                milliseconds[kind].append((time.perf_counter() - start) * 1000)
        result = LoadResult(
            events=events,
            snapshot_version=snapshot.version if snapshot else 0,
            milliseconds=milliseconds,
        )
        log(
            f"  load {events:,}: raw {result.median('raw'):.2f} ms,"
            f" replay {result.median('replay'):.2f} ms,"
            f" snapshot {result.median('snapshot'):.2f} ms"
        )
        results.append(result)
    return results
