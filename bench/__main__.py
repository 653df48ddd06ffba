"""Measure the event store against raw psycopg and Django ORM: ``python -m bench``.

Run from the repository root (``DJANGO_SETTINGS_MODULE`` defaults to
``banksite.settings``). The bench creates a PostgreSQL database of its own on
the server ``DATABASE_URL`` names (never the database it names), migrates it,
sends the appends' Celery nudges to a Redis queue of its own, and drops both
at the end. Progress goes to stderr, the report to stdout.

    python -m bench            # 5,000 events over 500 streams (2-3 minutes)
    python -m bench --quick    # a few hundred events: check that it runs
    python -m bench --profile  # also profile one append run and one replay
"""

import argparse
import functools
import os
import signal
import sys
import time

from . import environment


def parse_arguments(argv):
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument(
        "--quick", action="store_true", help="few events and loads: a smoke run"
    )
    parser.add_argument(
        "--profile", action="store_true", help="profile one append run and a replay"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.streams = 400, 40
    if args.events % 10 or args.events < args.streams * 10 or args.rounds < 1:
        parser.error("--events must be a multiple of 10, at least 10 x --streams")
    args.load_sizes = (10, 100, 1000) if args.quick else (10, 1000, 10000)
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def show(lines: list[str]) -> None:
    print("\n".join(lines), flush=True)


def load_repeats(quick: bool):
    def repeats(events: int) -> int:
        if quick:
            return 5
        return 31 if events <= 100 else 15 if events <= 1000 else 7

    return repeats


def main(argv=None) -> int:
    args = parse_arguments(argv)
    started = time.perf_counter()
    # Stopped with SIGTERM, still drop the database and the queue (finally below).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    with environment.own_database_and_queue("eventstore") as (_, broker, queue):
        import django

        django.setup()
        environment.migrate()
        run(args, broker=broker, queue=queue)
        load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
        elapsed = time.perf_counter() - started
        print(f"\nrun took {elapsed:.0f} s; load average at the end {load}", flush=True)
    return 0


def run(args, *, broker: str, queue: str) -> None:
    from django.conf import settings
    from django.db import connection

    from . import appends, loads, report, workload
    from .writers import Writers, connect_raw

    raw = connect_raw()
    pool = None
    try:
        environment.create_raw_table(raw)
        (server_version,) = raw.execute("SELECT version()").fetchone()
        show(
            report.header(
                server_version=server_version,
                database=connection.settings_dict["NAME"],
                queue=queue,
                partitions=settings.EVENTSTORE_PARTITIONS,
            )
        )
        log(f"starting {args.processes} writer processes ...")
        pool = appends.Pool(args.processes)
        writers = Writers(raw)
        reset = functools.partial(appends.reset, broker=broker, queue=queue)
        singles = workload.plan(
            events=args.events, streams=args.streams, per_transaction=1
        )
        batches = workload.plan(
            events=args.events, streams=args.streams, per_transaction=10
        )
        shares = workload.split(singles, args.processes)

        log("warming up ...")
        warm = workload.split(singles[: 20 * args.processes], args.processes)
        for implementation in appends.IMPLEMENTATIONS:
            reset(implementation)
            writers.run(implementation, singles[:50])
            reset(implementation)
            pool.run(implementation, warm)
        pool.cpu.clear()

        def on_one_connection(transactions):
            return lambda name: appends.timed(lambda: writers.run(name, transactions))

        shapes = [
            appends.Shape(
                "a", "a. 1 event/txn, 1 connection", args.events,
                on_one_connection(singles),
            ),
            appends.Shape(
                "b", "b. 10 events/txn, 1 connection", args.events,
                on_one_connection(batches),
            ),
            appends.Shape(
                "c", f"c. 1 event/txn, {args.processes} processes", args.events,
                lambda name: pool.run(name, shares),
            ),
        ]  # fmt: skip
        log("appends:")
        append_results = appends.measure(
            shapes, rounds=args.rounds, reset=reset, log=log
        )
        append_lines, checks = report.appends(
            append_results,
            events=args.events,
            streams=args.streams,
            rounds=args.rounds,
            processes=args.processes,
        )
        append_lines.append(
            f"   (each process owns its streams; {workload.shared_partitions(shares)}"
            f" of {settings.EVENTSTORE_PARTITIONS} partitions have writers in more"
            " than one process, as in production)"
        )
        append_lines += report.cpu(
            pool.cpu, events=args.events, processes=args.processes
        )
        show(append_lines)

        log("aggregate loads:")
        reset("ours")
        load_results = loads.measure(
            args.load_sizes, repeats=load_repeats(args.quick), raw=raw, log=log
        )
        load_lines, load_checks = report.loads(
            load_results, snapshot_every=workload.SnapshottedCounter.snapshot_every
        )
        show(load_lines)
        show(report.targets(checks + load_checks))

        if args.profile:
            from .profiling import profiles

            show(profiles(writers=writers, singles=singles, reset=reset))
    finally:
        if pool is not None:
            pool.close()
        raw.close()


if __name__ == "__main__":
    sys.exit(main())
