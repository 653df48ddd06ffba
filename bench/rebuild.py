"""Projection rebuild throughput and memory: ``python -m bench.rebuild``.

Run from the repository root. Like ``python -m bench``, it creates a
PostgreSQL database of its own (``bench_rebuild_<pid>``, never ``bank`` nor a
test database), migrates it, sends the appends' Celery nudges to a Redis
database and queue of its own that no worker reads, and drops both at the
end. Progress goes to stderr, the report to stdout.

What it measures, at 50,000 and then 200,000 events (a bank's mix: account
openings, cash deposits and withdrawals, and transfers with their debit and
credit on the accounts' streams):

- the rebuild of every read model from the events
  (``eventstore.subscriptions.rebuild_together`` of the subscriptions that
  have a ``reset``, one pass over the events: what ``manage.py
  rebuild_projections`` runs), in events of the table per second;
- beside it the floor: one plain SQL aggregate over the same event table
  (count and sum of amounts per event type), in events per second, and the
  ratio rebuild / floor;
- the rebuild's peak memory (resident size above the start, sampled during
  the same run), which must not grow with the number of events: events are
  read in batches.

    python -m bench.rebuild            # 50,000 and 200,000 events
    python -m bench.rebuild --quick    # 5,000 and 20,000: check that it runs
"""

import argparse
import os
import random
import sys
import threading
import time
import uuid

from . import environment

TARGET_EVENTS_PER_SECOND = 20_000
EVENTS_PER_ACCOUNT = 80  # the opening and 79 cash movements
TRANSFER_SHARE = 25  # one transfer (5 events) per this many events


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_arguments(argv):
    parser = argparse.ArgumentParser(
        prog="python -m bench.rebuild",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true")
    return parser.parse_args(argv)


class Bank:
    """Writes a bank's events straight through the event store's ``append``."""

    def __init__(self, seed: int = 7):
        from django.contrib.auth import get_user_model

        self.rng = random.Random(seed)
        self.versions: dict[uuid.UUID, int] = {}
        self.owner = get_user_model().objects.create_user("bench-owner")
        self.events = 0

    def grow_to(self, total: int) -> None:
        """Append accounts, cash and transfers until the table holds ``total``."""
        from django.db import transaction

        from accounts.events import AccountOpened, Deposited, Withdrawn
        from eventstore.store import append

        while self.events < total:
            accounts = max(1, (total - self.events) // 100)
            with transaction.atomic():
                for _ in range(accounts):
                    account = uuid.uuid4()
                    cash = [
                        Deposited(amount=self.rng.randint(1000, 90_000))
                        if n % 6
                        else Withdrawn(amount=self.rng.randint(1, 500))
                        for n in range(EVENTS_PER_ACCOUNT - 1)
                    ]
                    opened = AccountOpened(
                        number=f"{len(self.versions):012d}",
                        currency="EUR",
                        owner_id=self.owner.pk,
                    )
                    append(f"account-{account}", [opened, *cash], 0)
                    self.versions[account] = EVENTS_PER_ACCOUNT
                    self.events += EVENTS_PER_ACCOUNT
            transfers = accounts * EVENTS_PER_ACCOUNT // (TRANSFER_SHARE - 5)
            self._transfers(transfers)
            log(f"  {self.events:,} events")

    def _transfers(self, count: int) -> None:
        from django.db import transaction

        from accounts.domain import TransferStep
        from accounts.events import Deposited, Withdrawn
        from eventstore.store import NewEvent, append
        from transfers.events import Credited, Debited, TransferRequested

        ids = list(self.versions)
        for start in range(0, count, 200):
            with transaction.atomic():
                for _ in range(min(200, count - start)):
                    source, target = self.rng.sample(ids, 2)
                    transfer = uuid.uuid4()
                    amount = self.rng.randint(1, 900)
                    append(
                        f"transfer-{transfer}",
                        [
                            TransferRequested(
                                from_account=source,
                                to_account=target,
                                amount=amount,
                                currency="EUR",
                            ),
                            Debited(from_account=source, to_account=target),
                            Credited(),
                        ],
                        0,
                    )
                    for account, cls, step in (
                        (source, Withdrawn, "debit"),
                        (target, Deposited, "credit"),
                    ):
                        tagged = TransferStep(transfer, step)
                        event = cls(amount=amount, transfer_id=transfer, step=step)
                        append(
                            f"account-{account}",
                            [NewEvent(event, event_id=tagged.event_id())],
                            self.versions[account],
                        )
                        self.versions[account] += 1
                    self.events += 5


def sql_floor() -> tuple[int, float]:
    """Aggregate the event table in one SQL statement; return (events, seconds)."""
    from django.db import connection

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT event_type, count(*), sum((data->>'amount')::bigint)"
            " FROM eventstore_event GROUP BY event_type"
        )
        rows = cursor.fetchall()
    return sum(row[1] for row in rows), time.perf_counter() - started


def rebuild_all() -> tuple[dict[str, int], float]:
    """Rebuild every read model; return the events each handled, and seconds."""
    from eventstore import subscriptions

    names = [sub.name for sub in subscriptions.all_subscriptions() if sub.reset]
    started = time.perf_counter()
    handled = subscriptions.rebuild_together(names)
    return handled, time.perf_counter() - started


class PeakMemory:
    """Sample this process's resident memory while a block runs; keep the peak.

    Sampling /proc (every 20 ms, in a thread) costs the rebuild nothing
    measurable, unlike tracemalloc, so one run gives both figures. The
    figure is the peak above the resident size at the start.
    """

    def __init__(self):
        self.peak = 0
        self._running = False

    @staticmethod
    def resident() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self, start: int) -> None:
        while self._running:
            self.peak = max(self.peak, self.resident() - start)
            time.sleep(0.02)

    def __enter__(self):
        self._running = True
        self._thread = threading.Thread(
            target=self._sample, args=(self.resident(),), daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._running = False
        self._thread.join()


def measure(total: int) -> dict:
    from django.db import connection

    events_in_table, floor_seconds = sql_floor()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    _, floor_seconds = sql_floor()  # warm: the second read, as the rebuild's
    with PeakMemory() as memory:
        handled, seconds = rebuild_all()
    peak = memory.peak
    log(f"  rebuilt in {seconds:.1f}s: {handled}; peak memory +{peak / 2**20:.1f} MiB")
    return {
        "events": events_in_table,
        "handled": handled,
        "rebuild_seconds": seconds,
        "rebuild_rate": events_in_table / seconds,
        "floor_seconds": floor_seconds,
        "floor_rate": events_in_table / floor_seconds,
        "peak": peak,
    }


def report(results: list[dict]) -> list[str]:
    from . import report as shared

    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    lines = [
        "Projection rebuild benchmark (python -m bench.rebuild)",
        f"machine:    {os.cpu_count()} cores, {shared.cpu_model()};"
        f" load average {load}",
        "read models: every subscription with a reset, rebuilt together in one"
        " pass over the events and one transaction",
        "",
        f"{'events':>9}  {'rebuild ev/s':>12}  {'SQL floor ev/s':>14}"
        f"  {'ratio':>7}  {'peak memory':>11}",
    ]
    for r in results:
        lines.append(
            f"{r['events']:>9,}  {r['rebuild_rate']:>12,.0f}  {r['floor_rate']:>14,.0f}"
            f"  {r['rebuild_rate'] / r['floor_rate']:>7.4f}"
            f"  {r['peak'] / 2**20:>7.1f} MiB"
        )
    small, large = results[0], results[-1]
    growth = large["peak"] / small["peak"] if small["peak"] else float("inf")
    lines += [
        "",
        "events handled per read model at the largest size: "
        + ", ".join(f"{name} {count:,}" for name, count in large["handled"].items()),
        f"target: >= {TARGET_EVENTS_PER_SECOND:,} events/s:"
        f" {'met' if large['rebuild_rate'] >= TARGET_EVENTS_PER_SECOND else 'NOT met'}"
        f" ({large['rebuild_rate']:,.0f})",
        f"memory: peak x{growth:.2f} for x{large['events'] / small['events']:.1f}"
        f" events: {'flat' if growth < 1.5 else 'GROWS'}",
    ]
    return lines


def main(argv=None) -> None:
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    sizes = [5_000, 20_000] if arguments.quick else [50_000, 200_000]
    with environment.own_database_and_queue("rebuild") as (database, broker, queue):
        import django

        django.setup()
        from django.core.management import call_command

        log(f"migrating {database.rsplit('/', 1)[-1]}")
        call_command("migrate", verbosity=0, interactive=False)
        bank = Bank()
        results = []
        for size in sizes:
            log(f"writing {size:,} events")
            bank.grow_to(size)
            environment.clear_queue(broker, queue)
            log(f"measuring at {bank.events:,} events")
            results.append(measure(bank.events))
        print("\n".join(report(results)))


if __name__ == "__main__":
    main()
