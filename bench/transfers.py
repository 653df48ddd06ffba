"""End-to-end transfers on real Celery workers: ``python -m bench.transfers``.

Run from the repository root. Like ``python -m bench``, it creates a
PostgreSQL database of its own (``bench_transfers_<pid>``, never ``bank`` nor
a test database), migrates it, sends Celery messages to a Redis database and
queue of its own, and drops both at the end. Progress goes to stderr, the
report to stdout.

What it measures, in one run:

- raw append throughput: one event per transaction on one connection, the
  event store's own speed here and now (the baseline for the ratios);
- transfers per second from request to completed, with 1 and then 2 Celery
  worker processes (``celery -A banksite worker --pool=prefork
  --concurrency=2``: a "worker" is one such process with its two pool
  children). Requests go through the service layer
  (``transfers.services.request_transfer``) from client threads in this
  process, not through HTTP; "completed" is the ``Credited`` event, timed by
  the database clock (``recorded_at``) from the ``TransferRequested``;
- latency request -> completed (p50, p95) at half the rate reached, requests
  paced open-loop;
- where the time per transfer goes: transactions per transfer (from
  ``pg_stat_database``) in the worker runs, then the same steps run in this
  process, each timed, and the process manager under cProfile.

    python -m bench.transfers            # 1,000 transfers per throughput run
    python -m bench.transfers --quick    # 200: check that it runs
"""

import argparse
import contextlib
import cProfile
import functools
import io
import os
import pstats
import random
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from banksite.worker_process import WorkerProcess

from . import environment

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATE = 50  # completed transfers per second with 2 workers
STRETCH_RATE = 100
TARGET_P95 = 1.0  # seconds, at half the rate reached


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def show(*lines: str) -> None:
    print("\n".join(lines), flush=True)


# Celery workers


def wait_until(condition, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")


def caught_up() -> bool:
    from eventstore.subscriptions import subscription_status

    return all(status.lag == 0 for status in subscription_status())


def start_workers(count: int, log_dir: Path) -> list[WorkerProcess]:
    workers = [
        WorkerProcess(
            queue=os.environ["CELERY_TASK_DEFAULT_QUEUE"],
            env=dict(os.environ),
            log_path=log_dir / f"bench-transfers-worker-{n}.log",
            name=f"bench-{n}",
            loglevel="WARNING",
            beat=n == 0,
        )
        for n in range(count)
    ]
    # A worker is ready when it takes work: the sweep (every second) finds
    # any partition behind, and everything is caught up before a run starts.
    wait_until(caught_up, timeout=120, what="the workers to catch up")
    return workers


# Measurements


@dataclass
class RunResult:
    transfers: int
    completed: int
    failed: int
    seconds: float  # first request to last finish, database clock
    latencies: list[float]  # request -> completed, seconds
    transactions: int
    request_seconds: float  # wall time the clients took to send the requests

    @property
    def rate(self) -> float:
        return self.transfers / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def open_accounts(count: int, *, balance: int):
    """Open ``count`` funded accounts of one owner; return the owner and ids."""
    from django.contrib.auth import get_user_model

    from accounts import services as accounts

    owner = get_user_model().objects.create_user(
        username=f"bench-{uuid.uuid4().hex[:6]}"
    )
    ids = []
    for _ in range(count):
        account = accounts.open_account(owner=owner, currency="EUR", actor=None)
        accounts.deposit(account_id=account.id, amount=balance, actor=None)
        ids.append(account.id)
    return owner, ids


def plan_transfers(accounts: list[uuid.UUID], count: int, seed: int):
    rng = random.Random(seed)
    return [(*rng.sample(accounts, 2), rng.randint(1, 100)) for _ in range(count)]


def committed_transactions() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT xact_commit FROM pg_stat_database"
            " WHERE datname = current_database()"
        )
        return cursor.fetchone()[0]


def send_requests(
    plan, *, actor, clients: int, rate: float | None
) -> tuple[list, float]:
    """Request every planned transfer from ``clients`` threads; return the ids.

    With ``rate``, requests are paced open-loop at that many per second in
    all; without it, each client sends as fast as it can.
    """
    from django.db import connection

    from transfers import services

    ids: list[uuid.UUID] = []
    lock = threading.Lock()
    started = time.monotonic()
    shares = [plan[n::clients] for n in range(clients)]

    def client(n: int, share) -> None:
        try:
            for k, (source, target, amount) in enumerate(share):
                if rate:
                    due = started + (k * clients + n) / rate
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                transfer = services.request_transfer(
                    actor=actor,
                    from_account=source,
                    to_account=target,
                    amount=amount,
                )
                with lock:
                    ids.append(transfer.id)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=client, args=(n, share))
        for n, share in enumerate(shares)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return ids, time.monotonic() - started


def outcome(ids: list[uuid.UUID], transactions_before: int, request_seconds: float):
    from django.db import connection

    streams = [f"transfer-{transfer_id}" for transfer_id in ids]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT r.recorded_at, f.event_type, f.recorded_at"
            " FROM eventstore_event r JOIN eventstore_event f"
            " ON f.stream_id = r.stream_id"
            " AND f.event_type IN ('transfers.Credited', 'transfers.Failed')"
            " WHERE r.stream_id = ANY(%s) AND r.version = 1",
            [streams],
        )
        rows = cursor.fetchall()
    first = min(row[0] for row in rows)
    last = max(row[2] for row in rows)
    return RunResult(
        transfers=len(ids),
        completed=sum(row[1] == "transfers.Credited" for row in rows),
        failed=sum(row[1] == "transfers.Failed" for row in rows),
        seconds=(last - first).total_seconds(),
        latencies=[
            (done - requested).total_seconds()
            for requested, kind, done in rows
            if kind == "transfers.Credited"
        ],
        transactions=committed_transactions() - transactions_before,
        request_seconds=request_seconds,
    )


def run_transfers(plan, *, actor, clients: int, rate: float | None) -> RunResult:
    from django.db import connection

    before = committed_transactions()
    ids, request_seconds = send_requests(plan, actor=actor, clients=clients, rate=rate)

    def finished() -> bool:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM eventstore_event WHERE event_type IN"
                " ('transfers.Credited', 'transfers.Failed') AND stream_id = ANY(%s)",
                [[f"transfer-{i}" for i in ids]],
            )
            return cursor.fetchone()[0] == len(ids)

    wait_until(finished, timeout=600, what="the transfers to finish")
    result = outcome(ids, before, request_seconds)
    wait_until(caught_up, timeout=120, what="the read models to catch up")
    return result


@functools.cache
def bench_event_class():
    from eventstore.events import register_event

    @register_event("bench.Appended")
    @dataclass(frozen=True)
    class BenchAppended:
        n: int

    return BenchAppended


def raw_appends(count: int) -> float:
    """Return appends per second: one event per transaction, one connection."""
    from django.db import transaction

    from eventstore.store import append

    started = time.perf_counter()
    for _ in range(count):
        with transaction.atomic():
            append(f"bench-{uuid.uuid4()}", [bench_event_class()(n=1)], 0)
    return count / (time.perf_counter() - started)


def time_steps(actor, accounts: list[uuid.UUID], count: int) -> list[str]:
    """Run each step of ``count`` transfers in this process, timed; profile one."""
    from eventstore.subscriptions import all_subscriptions, catch_up, get_subscription

    plan = plan_transfers(accounts, count, seed=99)
    started = time.perf_counter()
    send_requests(plan, actor=actor, clients=1, rate=None)
    request_ms = (time.perf_counter() - started) * 1000 / count

    process = get_subscription("transfers.process")
    started = time.perf_counter()
    rounds = 0
    while catch_up([process]):
        rounds += 1
    process_ms = (time.perf_counter() - started) * 1000 / count

    projections = [s for s in all_subscriptions() if s is not process]
    lines = []
    per_projection = []
    for sub in projections:
        started = time.perf_counter()
        catch_up([sub])
        per_projection.append(
            (sub.name, (time.perf_counter() - started) * 1000 / count)
        )

    # The profile runs on more transfers of its own: a profiler slows Python
    # down several times, so the figures above are taken without it.
    send_requests(
        plan_transfers(accounts, count, seed=100), actor=actor, clients=1, rate=None
    )
    profiler = cProfile.Profile()
    profiler.enable()
    while catch_up([process]):
        pass
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(
        r"(transfers|accounts|eventstore)/.*\.py.*\((transfer_debit|transfer_credit|"
        r"withdraw|deposit|get_account|load|save|append|event_exists|"
        r"lock_partitions|_handle_batch|read_partition|read_stream)\)"
    )
    lines += [
        "",
        f"Where the time per transfer goes ({count} transfers run in this process,",
        "one connection, no Celery; the same code the workers run):",
        f"  {'request (service layer: load both accounts, append)':<52}"
        f" {request_ms:6.2f} ms",
        f"  {f'process manager, debit + credit ({rounds} rounds)':<52}"
        f" {process_ms:6.2f} ms",
    ]
    for name, ms in per_projection:
        lines.append(f"  {'projection ' + name:<52} {ms:6.2f} ms")
    lines += ["", "cProfile of the process manager (cumulative, selected functions):"]
    lines += [
        "  " + line
        for line in out.getvalue().splitlines()
        if line.strip() and ("(" in line or "ncalls" in line)
    ][:30]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.transfers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--transfers", type=int, default=1000)
    parser.add_argument("--accounts", type=int, default=50)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.transfers, args.latency_seconds = 200, 3.0

    os.environ["LOG_LEVEL"] = "WARNING"
    os.environ["EVENTSTORE_SWEEP_SECONDS"] = "1"
    started = time.perf_counter()
    with (
        environment.own_database_and_queue("transfers") as (_, broker, queue),
        contextlib.ExitStack() as on_exit,  # stops the workers, even after an error
    ):
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command
        from django.db import connection

        call_command("migrate", verbosity=0, interactive=False)
        with connection.cursor() as cursor:
            cursor.execute("SELECT version()")
            (server,) = cursor.fetchone()
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
        show(
            "Transfers end to end (python -m bench.transfers)",
            f"machine:    {os.cpu_count()} cores; load average {load}",
            f"PostgreSQL: {server.split(' on ')[0]}",
            f"setup:      database {connection.settings_dict['NAME']} (created, "
            f"dropped after), {settings.EVENTSTORE_PARTITIONS} partitions, "
            f"broker {broker} queue {queue}",
            f"requests:   service layer (transfers.services.request_transfer), "
            f"{args.clients} client threads in this process, no HTTP",
            "worker:     one `celery -A banksite worker --pool=prefork "
            "--concurrency=2` process (+2 pool children); the first also runs beat",
            f"workload:   {args.accounts} EUR accounts, random pairs, amounts that "
            "never exhaust a balance",
        )

        log("raw appends ...")
        raw_count = 500 if args.quick else 2000
        append_rate = raw_appends(raw_count)
        environment.clear_queue(broker, queue)
        show("", f"raw append: {append_rate:7.0f} events/s (1 event/txn, 1 connection)")

        log(f"opening {args.accounts} accounts ...")
        owner, accounts = open_accounts(args.accounts, balance=10**9)
        log_dir = ROOT / "test-artifacts"
        log_dir.mkdir(exist_ok=True)
        rows = []
        for count in (1, 2):
            log(f"{count} worker(s): starting ...")
            workers = start_workers(count, log_dir)
            for worker in workers:
                on_exit.callback(worker.stop)  # stop() does nothing the second time
            log(
                f"{count} worker(s): {args.transfers} transfers as fast as possible ..."
            )
            burst = run_transfers(
                plan_transfers(accounts, args.transfers, seed=count),
                actor=owner,
                clients=args.clients,
                rate=None,
            )
            half = burst.rate / 2
            paced_count = max(20, int(half * args.latency_seconds))
            log(f"{count} worker(s): {paced_count} transfers at {half:.0f}/s ...")
            paced = run_transfers(
                plan_transfers(accounts, paced_count, seed=10 + count),
                actor=owner,
                clients=args.clients,
                rate=half,
            )
            rows.append((count, burst, paced))
            for worker in workers:
                worker.stop()

        show(
            "",
            "workers  transfers  completed/s  x raw append  p50 (s)  p95 (s)"
            "  | at half rate: rate/s  p50 (s)  p95 (s)  | txns/transfer",
        )
        for count, burst, paced in rows:
            show(
                f"{count:>7}  {burst.transfers:>9}  {burst.rate:>11.1f}"
                f"  {burst.rate / append_rate:>12.3f}  {burst.percentile(0.5):>7.3f}"
                f"  {burst.percentile(0.95):>7.3f}  |"
                f" {paced.transfers / paced.request_seconds:>20.1f}"
                f"  {paced.percentile(0.5):>7.3f}  {paced.percentile(0.95):>7.3f}  |"
                f" {burst.transactions / burst.transfers:>13.1f}"
            )
        two = rows[-1]
        show(
            "",
            "(a burst queues every request at once, so its latencies are mostly "
            "waiting in line; txns/transfer counts every committed transaction in "
            "the database during the burst, requests and read models included)",
            f"target: >= {TARGET_RATE}/s with 2 workers (stretch {STRETCH_RATE}):"
            f" {two[1].rate:.1f}/s "
            + ("met" if two[1].rate >= TARGET_RATE else "NOT met"),
            f"target: p95 < {TARGET_P95:.0f} s at half that rate:"
            f" {two[2].percentile(0.95):.3f} s "
            + ("met" if two[2].percentile(0.95) < TARGET_P95 else "NOT met"),
        )
        log("profiling in this process ...")
        show(*time_steps(owner, accounts, 100 if args.quick else 300))
        show("", f"run took {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
