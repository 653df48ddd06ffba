"""What the bench writes and loads: its event, its aggregates, and the plan.

Import after ``django.setup()``: the aggregates pull in the event store models.

The plan decides, before anything is timed, which stream, version, partition
and sequence each event gets, so the raw psycopg and ORM baselines insert the
same rows the event store would, with no conflicts even across processes.
"""

import dataclasses
from collections import defaultdict

from eventstore.aggregates import Aggregate
from eventstore.events import register_event
from eventstore.store import partition_for

EVENT_TYPE = "bench.Deposited"
REFERENCE = "bench"


@register_event(EVENT_TYPE)
@dataclasses.dataclass(frozen=True)
class BenchDeposited:
    amount: int
    reference: str = ""


class Counter(Aggregate):
    """A bench-only aggregate: counts deposits and sums them; never snapshots."""

    stream_prefix = "bench-counter"
    snapshot_every = None

    def __init__(self, id):
        super().__init__(id)
        self.balance = 0
        self.deposits = 0

    def deposit(self, amount: int) -> None:
        self._record(BenchDeposited(amount=amount, reference=REFERENCE))

    def _when_bench_deposited(self, event: BenchDeposited) -> None:
        self.balance += event.amount
        self.deposits += 1


class SnapshottedCounter(Counter):
    """The same aggregate on the same streams, snapshotted every 100 events."""

    snapshot_every = 100


@dataclasses.dataclass(frozen=True)
class Slot:
    """Where one event goes."""

    stream: int
    stream_id: str
    version: int
    partition: int
    sequence: int
    amount: int


Transaction = list[Slot]


def plan(*, events: int, streams: int, per_transaction: int) -> list[Transaction]:
    """Lay ``events`` out over ``streams`` in transactions of one stream each.

    Transactions take the streams in turn (0, 1, ..., streams - 1, 0, ...), so
    consecutive appends go to different streams and partitions, as they
    would from many users.
    """
    versions: dict[int, int] = defaultdict(int)
    sequences: dict[int, int] = defaultdict(int)
    transactions = []
    for number in range(events // per_transaction):
        stream = number % streams
        stream_id = f"bench-stream-{stream:05d}"
        partition = partition_for(stream_id)
        slots = []
        for _ in range(per_transaction):
            versions[stream] += 1
            sequences[partition] += 1
            slots.append(
                Slot(
                    stream=stream,
                    stream_id=stream_id,
                    version=versions[stream],
                    partition=partition,
                    sequence=sequences[partition],
                    amount=len(transactions) + 1,
                )
            )
        transactions.append(slots)
    return transactions


def split(transactions: list[Transaction], processes: int) -> list[list[Transaction]]:
    """Give each process the transactions of the streams it owns, in plan order."""
    shares: list[list[Transaction]] = [[] for _ in range(processes)]
    for txn in transactions:
        shares[txn[0].stream % processes].append(txn)
    return shares


def shared_partitions(shares: list[list[Transaction]]) -> int:
    """Count the partitions that more than one process writes to."""
    owners: dict[int, set[int]] = defaultdict(set)
    for process, share in enumerate(shares):
        for txn in share:
            owners[txn[0].partition].add(process)
    return sum(1 for who in owners.values() if len(who) > 1)
