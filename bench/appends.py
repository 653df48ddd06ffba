"""Append throughput: the event store beside raw psycopg and naive Django ORM.

Every run starts from empty tables. Runs are interleaved (ours, ours in
atomic(), raw, ORM, ours, ...) so that whatever else loads the machine
weighs on all of them alike; figures are medians over the rounds. The
concurrent shape runs in a pool of spawned processes, each with its own
connections.
"""

import contextlib
import dataclasses
import multiprocessing
import os
import statistics
import time
import traceback
from collections.abc import Callable

from django.db import connection

from . import environment

IMPLEMENTATIONS = ("ours", "ours_atomic", "raw", "orm")
BARRIER_TIMEOUT = 120  # seconds; the others wait this long for a late process


def reset(implementation: str, *, broker: str, queue: str) -> None:
    """Empty the table the next run writes to, so every run starts alike."""
    with connection.cursor() as cursor:
        if implementation == "raw":
            cursor.execute(f"TRUNCATE {environment.RAW_TABLE}")
        else:
            cursor.execute(
                "TRUNCATE eventstore_event, eventstore_partitionhead,"
                " eventstore_snapshot"
            )
    environment.clear_queue(broker, queue)


# Concurrent writers: a pool of processes, each with its own connections.


@dataclasses.dataclass(frozen=True)
class Span:
    """One writer process's run: its clock times and the CPU it and its server used."""

    start: float
    end: float
    client_cpu: float
    server_cpu: float | None  # None: the database server is not on this machine


def process_cpu_seconds(pid: int) -> float | None:
    """Return the CPU time (user + system) a process on this machine has used.

    Reads /proc/PID/stat (Linux), so it works for a database server process
    only when PostgreSQL runs here; otherwise return None.
    """
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # Fields after the command name, which may hold spaces: utime is
            # the 14th field of the line, stime the 15th.
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _worker(pipe, barrier) -> None:
    """Run writers on request: set up Django once, then time each run."""
    import django

    # The environment (DEBUG off, the bench's database) comes from the parent.
    django.setup()
    from .writers import Writers, connect_raw

    writers = Writers(connect_raw())
    while True:
        request = pipe.recv()
        if request is None:
            break
        implementation, transactions = request
        try:
            backend = writers.backend_pid(implementation)
            # A process that failed breaks the barrier for the others.
            barrier.wait(timeout=BARRIER_TIMEOUT)
            start = time.perf_counter()
            client, server = time.process_time(), process_cpu_seconds(backend)
            writers.run(implementation, transactions)
            end = time.perf_counter()
            client = time.process_time() - client
            if server is not None:
                server = process_cpu_seconds(backend) - server
            pipe.send(Span(start, end, client, server))
        except Exception:
            barrier.abort()
            pipe.send(traceback.format_exc())


@dataclasses.dataclass(frozen=True)
class CpuUse:
    """The CPU seconds of one concurrent run: the writers' and their servers'."""

    client: float
    server: float | None


class Pool:
    """Processes started once (spawned: no connection is inherited) and reused."""

    def __init__(self, processes: int):
        self.cpu: dict[str, list[CpuUse]] = {}
        context = multiprocessing.get_context("spawn")
        self.barrier = context.Barrier(processes)
        self.pipes = []
        self.processes = []
        for _ in range(processes):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_worker, args=(theirs, self.barrier), daemon=True
            )
            process.start()
            self.pipes.append(ours)
            self.processes.append(process)

    def run(self, implementation: str, shares) -> float:
        """Run one writer in every process at once; return the wall time.

        perf_counter is CLOCK_MONOTONIC on Linux, one clock for all processes:
        the run lasts from the first start to the last end. The CPU the run
        used is appended to ``self.cpu[implementation]``.
        """
        for pipe, share in zip(self.pipes, shares, strict=True):
            pipe.send((implementation, share))
        spans = [pipe.recv() for pipe in self.pipes]
        failures = [span for span in spans if isinstance(span, str)]
        if failures:
            self.barrier.reset()
            raise RuntimeError(f"a writer process failed:\n{failures[0]}")
        servers = [span.server_cpu for span in spans]
        self.cpu.setdefault(implementation, []).append(
            CpuUse(
                client=sum(span.client_cpu for span in spans),
                server=None if None in servers else sum(servers),
            )
        )
        return max(span.end for span in spans) - min(span.start for span in spans)

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send(None)
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()


@dataclasses.dataclass
class Shape:
    """One column of the append table: a workload and how to run it once."""

    key: str
    label: str
    events: int
    run_once: Callable[[str], float]  # implementation -> seconds


@dataclasses.dataclass
class ShapeResult:
    shape: Shape
    seconds: dict[str, list[float]]  # implementation -> one figure per round

    def rate(self, implementation: str) -> float:
        """Return the median throughput in events per second."""
        return statistics.median(
            self.shape.events / s for s in self.seconds[implementation]
        )

    def ratio(self, implementation: str) -> float:
        return self.rate(implementation) / self.rate("raw")

    def worst_ratio(self, implementation: str) -> float:
        """Return the lowest per-round ratio: each round's runs ran side by side."""
        return min(
            raw / ours
            for ours, raw in zip(
                self.seconds[implementation], self.seconds["raw"], strict=True
            )
        )


def measure(shapes: list[Shape], *, rounds: int, reset, log) -> list[ShapeResult]:
    """Run every shape's writers interleaved, ``rounds`` times; return the results.

    ``reset(implementation)`` empties the tables before each run.
    """
    results = []
    for shape in shapes:
        seconds: dict[str, list[float]] = {name: [] for name in IMPLEMENTATIONS}
        for number in range(1, rounds + 1):
            for implementation in IMPLEMENTATIONS:
                reset(implementation)
                elapsed = shape.run_once(implementation)
                seconds[implementation].append(elapsed)
                log(
                    f"  {shape.key} round {number} {implementation}: "
                    f"{shape.events / elapsed:,.0f} events/s"
                )
        results.append(ShapeResult(shape=shape, seconds=seconds))
    return results


def timed(function: Callable[[], None]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start
