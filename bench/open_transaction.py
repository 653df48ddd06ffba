"""Appends beside a long open transaction: ``python -m bench.open_transaction``.

A rebuild runs in one transaction for as long as it takes. While any
transaction is open, PostgreSQL removes no row version that died after it
began, so a row that every append updated would pile up versions, and every
append would take longer to find it. This bench shows whether appends slow
down that way.

Like ``python -m bench``, it creates a PostgreSQL database of its own, sends
the appends' nudges to a Redis queue that no worker reads, and drops both at
the end. It appends through ``eventstore.store.append`` (one event per
transaction, streams spread over every partition) in batches: first with no
other transaction open, the baseline; then while a second connection holds a
transaction open with a transaction id, as a rebuild does. For each batch it
prints the PostgreSQL backend's CPU per append (read from /proc, so the
server must run on this machine), its ratio to the baseline, and the pages of
the partition head table.

    python -m bench.open_transaction            # 6 batches of 2,000 appends
    python -m bench.open_transaction --quick    # 2 batches of 500
"""

import argparse
import sys
import time

from . import environment

STREAMS = 500


def parse_arguments(argv):
    parser = argparse.ArgumentParser(
        prog="python -m bench.open_transaction",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true")
    return parser.parse_args(argv)


class Appender:
    """Appends one event at a time to streams taken in turn."""

    def __init__(self):
        self.versions = [0] * STREAMS
        self.appended = 0

    def append(self, count: int) -> None:
        from eventstore.store import append

        from .workload import REFERENCE, BenchDeposited

        for _ in range(count):
            stream = self.appended % STREAMS
            append(
                f"bench-open-{stream:05d}",
                [BenchDeposited(amount=1, reference=REFERENCE)],
                self.versions[stream],
            )
            self.versions[stream] += 1
            self.appended += 1


def measure_batch(appender: Appender, count: int) -> tuple[float, float, int]:
    """Append ``count`` events; return backend CPU and wall seconds per append."""
    from django.db import connection

    from .appends import process_cpu_seconds

    connection.ensure_connection()
    backend = connection.connection.info.backend_pid
    cpu, start = process_cpu_seconds(backend), time.perf_counter()
    if cpu is None:
        raise SystemExit("the PostgreSQL server must run on this machine (/proc)")
    appender.append(count)
    wall = time.perf_counter() - start
    cpu = process_cpu_seconds(backend) - cpu
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_relation_size('eventstore_partitionhead')"
            " / current_setting('block_size')::int"
        )
        (pages,) = cursor.fetchone()
    return cpu / count, wall / count, pages


def main(argv=None) -> None:
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    batches, size = (2, 500) if arguments.quick else (6, 2000)
    with environment.own_database_and_queue("open_transaction") as (database, _, _):
        import django

        django.setup()
        import psycopg
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        appender = Appender()
        appender.append(STREAMS)  # every stream and partition exists; warm
        rows = [("none", *measure_batch(appender, size))]
        with psycopg.connect(database) as held:
            held.execute("SELECT pg_current_xact_id()")  # open, with an id
            for _ in range(batches):
                rows.append(("open", *measure_batch(appender, size)))
            held.rollback()
        rows.append(("ended", *measure_batch(appender, size)))
        print("\n".join(report(rows, size=size)))


def report(rows, *, size: int) -> list[str]:
    baseline = rows[0][1]
    lines = [
        "Appends beside an open transaction (python -m bench.open_transaction)",
        f"batches of {size:,} appends (store.append, 1 event per transaction,"
        f" {STREAMS} streams); backend CPU per append, ratio to the first batch",
        "",
        "   other transaction   appends after it   backend CPU   ratio"
        "   wall per append   head table pages",
    ]
    appended = 0
    for state, cpu, wall, pages in rows:
        appended = appended + size if state == "open" else 0
        since = f"{appended:,}" if state == "open" else "-"
        lines.append(
            f"   {state:<19} {since:>16} {cpu * 1e6:>10.0f} us {cpu / baseline:>6.2f}x"
            f" {wall * 1e6:>14.0f} us {pages:>18}"
        )
    last_open = [cpu for state, cpu, _, _ in rows if state == "open"][-1]
    verdict = "flat" if last_open / baseline <= 1.2 else "grows"
    lines += ["", f"backend CPU per append beside the open transaction: {verdict}"]
    return lines


if __name__ == "__main__":
    main()
