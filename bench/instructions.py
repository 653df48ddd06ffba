"""Instructions per appended event, counted: ``python -m bench.instructions``.

Timed figures (``python -m bench``) on a shared virtual machine move by up to
30% from one minute to the next: more than the differences worth knowing.
Callgrind counts the instructions a process executes, the same for the same
work whatever else the machine does. This bench counts them for shape a of
``python -m bench`` (one event per transaction, one connection) for each of
its writers (``bench.writers``: the event store, in ``atomic()`` too, raw
psycopg, the ORM): in the writer process (Python, Django, psycopg) and in
its PostgreSQL backend, per event and as a ratio to raw psycopg.

It runs a PostgreSQL server of its own under valgrind, in a temporary
directory (a Unix socket only, no TCP port), and removes it at the end; so
it needs valgrind and PostgreSQL's server programs (``pg_config --bindir``).
Redis is not used. Each writer runs twice, in a new process each time,
with N and then 3N events of the same plan; the difference divided by 2N
leaves out what both runs do once (starting Python and Django, connecting,
plpgsql compiling the append function).

What is not counted: the kernel (system calls, the wait for a commit's
flush to disk), and nudges. Under valgrind a run lasts about 50 times
longer, so the appends' 10-second nudge claims (``eventstore.nudges``)
would expire and publish far more often than at full speed; each run
sets the claims a day ahead, and no nudge is sent.

    python -m bench.instructions              # runs of 100 and 300 events
    python -m bench.instructions --events 50  # quicker (the least)
    python -m bench.instructions --keep       # keep the callgrind files
"""

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse

import psycopg

from . import environment

IMPLEMENTATIONS = ("ours", "ours_atomic", "raw", "orm")
STREAMS = 50
DATABASE = "bench_instructions"
START_TIMEOUT = 120  # seconds for the server to answer, under valgrind


def parse_arguments(argv):
    parser = argparse.ArgumentParser(
        prog="python -m bench.instructions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=100, help="N (default 100)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the directory with the counts"
    )
    parser.add_argument("--write", nargs=2, help=argparse.SUPPRESS)  # a writer run
    args = parser.parse_args(argv)
    if args.events < STREAMS:
        # Both runs must pass the point where the writers' first appends
        # settle the partition count check (store.partition_count), so that
        # the difference counts only appends in their steady state.
        parser.error(f"--events must be at least {STREAMS}")
    return args


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv=None) -> int:
    args = parse_arguments(argv)
    if args.write:
        implementation, events = args.write
        write(implementation, int(events))
        return 0
    bindir = server_programs()
    directory = tempfile.mkdtemp(prefix="bench-instructions-")
    try:
        counts = count_all(directory, bindir, args.events)
    finally:
        if args.keep:
            log(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    print("\n".join(report(counts, events=args.events)), flush=True)
    return 0


def server_programs() -> str:
    """Return PostgreSQL's bin directory, or stop with what is missing."""
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    try:
        bindir = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        raise SystemExit("pg_config is not on PATH: PostgreSQL's programs?") from None
    for program in ("initdb", "pg_ctl", "postgres"):
        if not os.access(os.path.join(bindir, program), os.X_OK):
            raise SystemExit(f"{program} is not in {bindir}")
    return bindir


# The server


def as_server_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: there, run it as the postgres user."""
    return (
        ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command
    )


@contextlib.contextmanager
def server(directory: str, bindir: str, *, under_valgrind: bool):
    """Run a PostgreSQL server on ``directory``'s data; yield its database URL."""
    data = os.path.join(directory, "data")
    options = ["-k", directory, "-c", "listen_addresses=", "-c", "autovacuum=off"]
    if under_valgrind:
        command = [
            "valgrind",
            "--tool=callgrind",
            "--trace-children=yes",  # the backends are forked children
            f"--callgrind-out-file={directory}/server-%p.out",
            os.path.join(bindir, "postgres"),
            "-D",
            data,
            *options,
        ]
        process = subprocess.Popen(
            as_server_user(command),
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(directory, "valgrind.log"), "w"),  # noqa: SIM115
        )
    else:
        pg_ctl = [os.path.join(bindir, "pg_ctl"), "-D", data, "-w", "-s"]
        subprocess.run(
            as_server_user([*pg_ctl, "-o", " ".join(options), "start"]),
            check=True,
            stdout=subprocess.DEVNULL,
        )
    url = f"postgres://postgres@{urllib.parse.quote(directory, safe='')}/{DATABASE}"
    try:
        wait_for_server(url)
        yield url
    finally:
        subprocess.run(
            as_server_user(
                [os.path.join(bindir, "pg_ctl"), "-D", data, "-w", "-s", "-m", "fast"]
                + ["stop"]
            ),
            check=False,
        )
        if under_valgrind:
            process.wait(timeout=START_TIMEOUT)


def wait_for_server(url: str) -> None:
    maintenance = url.rsplit("/", 1)[0] + "/postgres"
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            psycopg.connect(maintenance, connect_timeout=5).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def prepare(directory: str, bindir: str) -> None:
    """Make a cluster with the event store's tables and the raw baseline's."""
    if os.geteuid() == 0:
        shutil.chown(directory, user="postgres")
    subprocess.run(
        as_server_user(
            [os.path.join(bindir, "initdb"), "-D", os.path.join(directory, "data")]
            + ["-A", "trust", "-U", "postgres", "--no-sync"]
        ),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    with server(directory, bindir, under_valgrind=False) as url:
        environment.create_database(url)
        subprocess.run(
            [sys.executable, "-c", MIGRATE],
            check=True,
            env={**writer_environment(url)},
        )


MIGRATE = """
import django, psycopg, os
django.setup()
from bench import environment
environment.migrate()
with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
    environment.create_raw_table(conn)
"""


def writer_environment(url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "banksite.settings",
        "DEBUG": "0",
        "SECRET_KEY": os.environ.get("SECRET_KEY", "bench-instructions"),
        "DATABASE_URL": url,
        # The same string hashes in every run: with random ones, dicts and
        # sets differ from one process to the next, and so does the count of
        # what both runs do once (about 1% of 3 billion instructions).
        "PYTHONHASHSEED": "0",
    }


# Counting


def count_all(directory: str, bindir: str, events: int) -> dict[str, dict]:
    """Return per implementation the instructions per event, writer and backend."""
    log("making a PostgreSQL cluster of the bench's own ...")
    prepare(directory, bindir)
    counts = {}
    log("starting it under valgrind ...")
    with server(directory, bindir, under_valgrind=True) as url:
        for implementation in IMPLEMENTATIONS:
            runs = [
                run_writer(directory, url, implementation, n)
                for n in (events, 3 * events)
            ]
            (writer_1, backend_1), (writer_3, backend_3) = runs
            counts[implementation] = {
                "writer": (writer_3 - writer_1) / (2 * events),
                "backend": (backend_3 - backend_1) / (2 * events),
            }
    return counts


def run_writer(directory: str, url: str, implementation: str, events: int):
    """Run one writer under valgrind; return its and its backend's instructions."""
    log(f"  {implementation}: {events} events ...")
    out = os.path.join(directory, f"writer-{implementation}-{events}.out")
    finished = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "bench.instructions",
            "--write",
            implementation,
            str(events),
        ],
        env=writer_environment(url),
        capture_output=True,
        text=True,
        check=False,
    )
    if finished.returncode:
        raise RuntimeError(f"the {implementation} writer failed:\n{finished.stderr}")
    backend_pid = json.loads(finished.stdout.strip().splitlines()[-1])["backend_pid"]
    backend = os.path.join(directory, f"server-{backend_pid}.out")
    return instructions(out), instructions(backend, wait=True)


def instructions(path: str, *, wait: bool = False) -> int:
    """Read a callgrind file's total; a backend's is written when it exits."""
    deadline = time.monotonic() + (START_TIMEOUT if wait else 0)
    while True:
        with contextlib.suppress(FileNotFoundError), open(path) as counts:
            for line in counts:
                found = re.match(r"(?:summary|totals): (\d+)", line)
                if found:
                    return int(found.group(1))
        if time.monotonic() > deadline:
            raise RuntimeError(f"no instruction count in {path}")
        time.sleep(0.5)


def write(implementation: str, events: int) -> None:
    """A writer run (under valgrind): plan, write, print the backend's pid."""
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.utils import timezone

    from eventstore.models import NudgeClaim
    from eventstore.store import create_partitions

    from . import workload
    from .writers import Writers, connect_raw

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE eventstore_event, eventstore_partitionhead,"
            f" eventstore_nudgeclaim, eventstore_snapshot, {environment.RAW_TABLE}"
        )
    create_partitions(range(settings.EVENTSTORE_PARTITIONS))
    NudgeClaim.objects.update(claimed_at=timezone.now() + timezone.timedelta(days=1))
    writers = Writers(connect_raw())
    plan = workload.plan(events=events, streams=STREAMS, per_transaction=1)
    writers.run(implementation, plan)
    print(json.dumps({"backend_pid": writers.backend_pid(implementation)}), flush=True)


# The report


def report(counts: dict[str, dict], *, events: int) -> list[str]:
    raw = counts["raw"]
    raw_both = raw["writer"] + raw["backend"]
    lines = [
        "Instructions per event, shape a (1 event/txn, 1 connection), counted by"
        " valgrind's callgrind",
        f"(runs of {events} and {3 * events} events over {STREAMS} streams;"
        f" per event: the difference over {2 * events})",
        "",
        f"{'':12} {'writer':>10} {'backend':>10} {'both':>10}"
        f"   ratio to raw: {'writer':>6} {'backend':>7} {'both':>6}",
    ]
    for implementation, count in counts.items():
        both = count["writer"] + count["backend"]
        lines.append(
            f"{implementation:12} {count['writer']:>10,.0f} {count['backend']:>10,.0f}"
            f" {both:>10,.0f}   {'':13} {count['writer'] / raw['writer']:>6.2f}"
            f" {count['backend'] / raw['backend']:>7.2f} {both / raw_both:>6.2f}"
        )
    lines += [
        "",
        "Where both processes' CPU is the limit (4 writer processes on 2 cores,"
        " shape c), the throughput ratio to raw is about the inverse of 'both'.",
    ]
    return lines


if __name__ == "__main__":
    sys.exit(main())
