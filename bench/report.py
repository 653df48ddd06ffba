"""The printed report: the machine, the figures beside their baselines, the targets."""

import datetime
import os
import platform
import statistics

from .appends import IMPLEMENTATIONS

APPEND_TARGET = 1.0
APPEND_FLOOR = 0.8
SPEEDUP_TARGET = 0.8
REPLAY_TARGET = 1.5  # loading 1,000 events, as a multiple of the raw SELECT
REPLAY_TARGET_EVENTS = 1000
SNAPSHOT_TARGET_MS = 2.0


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def header(*, server_version: str, database: str, queue: str, partitions: int):
    import django
    import psycopg

    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return [
        "Event store benchmark (python -m bench)",
        f"date:       {now}",
        f"machine:    {os.cpu_count()} cores, {cpu_model()}; load average {load}",
        f"PostgreSQL: {server_version}",
        f"software:   Python {platform.python_version()}, Django {django.__version__},"
        f" psycopg {psycopg.__version__} ({psycopg.pq.__impl__} libpq wrapper)",
        f"setup:      database {database} (created for this run, dropped after),"
        f" {partitions} partitions, DEBUG off,"
        f" nudges to Redis queue {queue} (no worker)",
    ]


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def appends(results, *, events: int, streams: int, rounds: int, processes: int):
    lines = [
        "",
        f"1. Appends: {events:,} events over {streams:,} streams; median of"
        f" {rounds} interleaved rounds (ours, ours in atomic(), raw, ORM, ...);"
        " events/s and ratio to raw psycopg",
        "",
        f"   {'':32} {'ours (store.append)':<26} {'ours in atomic()':<19}"
        f"{'raw psycopg':<17} Django ORM",
        f"   {'':32} {'events/s':>8} {'ratio':>6} {'worst':>6}    "
        f"{'events/s':>8} {'ratio':>6}   {'events/s':>8} {'ratio':>6}"
        f"   {'events/s':>8} {'ratio':>6}",
    ]
    for result in results:
        ours, atomic, raw, orm = (
            result.rate(name) for name in ("ours", "ours_atomic", "raw", "orm")
        )
        lines.append(
            f"   {result.shape.label:32} {ours:>8,.0f} {result.ratio('ours'):>5.2f}x"
            f" {result.worst_ratio('ours'):>5.2f}x    {atomic:>8,.0f}"
            f" {result.ratio('ours_atomic'):>5.2f}x   {raw:>8,.0f} {1:>5.2f}x"
            f"   {orm:>8,.0f} {result.ratio('orm'):>5.2f}x"
        )
    lines += [
        "   (ours: each append is a transaction of its own, one round trip;"
        " in atomic():",
        "   BEGIN, the append and COMMIT, three round trips, as raw psycopg's"
        " BEGIN/INSERT/COMMIT)",
    ]
    by_key = {result.shape.key: result for result in results}
    single, concurrent = by_key["a"], by_key["c"]
    speedups = {
        name: concurrent.rate(name) / single.rate(name) for name in IMPLEMENTATIONS
    }
    speedup_ratio = speedups["ours"] / speedups["raw"]
    lines += [
        "",
        f"   {processes}-process speed-up over one connection: ours"
        f" {speedups['ours']:.2f}x, ours in atomic() {speedups['ours_atomic']:.2f}x,"
        f" raw psycopg {speedups['raw']:.2f}x, ORM {speedups['orm']:.2f}x;"
        f" ours / raw = {speedup_ratio:.2f}"
        f" (in atomic(): {speedups['ours_atomic'] / speedups['raw']:.2f})",
        "   (worst = the lowest ours/raw ratio of a single round, whose runs ran"
        " back to back)",
    ]
    checks = []
    for result in results:
        ratio, worst = result.ratio("ours"), result.worst_ratio("ours")
        checks.append(
            (
                f"append {result.shape.key}: >= {APPEND_TARGET:.1f}x raw psycopg",
                f"{ratio:.2f}x",
                ratio >= APPEND_TARGET,
            )
        )
        checks.append(
            (
                f"append {result.shape.key}: never below {APPEND_FLOOR:.1f}x",
                f"median {ratio:.2f}x, worst round {worst:.2f}x",
                min(ratio, worst) >= APPEND_FLOOR,
            )
        )
    checks.append(
        (
            f"{processes}-process speed-up >= {SPEEDUP_TARGET:.1f}x raw's",
            f"{speedup_ratio:.2f}",
            speedup_ratio >= SPEEDUP_TARGET,
        )
    )
    return lines, checks


def loads(results, *, snapshot_every: int):
    lines = [
        "",
        "2. Aggregate load (Repository.load): milliseconds, median of interleaved"
        " runs; ratio to a raw psycopg SELECT of the stream's data",
        "",
        f"   {'':13} {'raw SELECT':>10}   {'replay (no snapshots)':<21}"
        f"   snapshot every {snapshot_every}",
        f"   {'events':>7} {'runs':>5} {'ms':>10}   {'ms':>10} {'ratio':>7}"
        f"     {'ms':>10} {'ratio':>7}  snapshot",
    ]
    for result in results:
        snapshot_note = (
            f"v{result.snapshot_version:,}" if result.snapshot_version else "none yet"
        )
        lines.append(
            f"   {result.events:>7,} {len(result.milliseconds['raw']):>5}"
            f" {result.median('raw'):>10.2f}   {result.median('replay'):>10.2f}"
            f" {result.ratio('replay'):>6.2f}x     {result.median('snapshot'):>10.2f}"
            f" {result.ratio('snapshot'):>6.2f}x  {snapshot_note}"
        )
    checks = []
    for result in results:
        if result.events == REPLAY_TARGET_EVENTS:
            ratio = result.ratio("replay")
            checks.append(
                (
                    f"load {REPLAY_TARGET_EVENTS:,} events <= {REPLAY_TARGET}x raw"
                    " SELECT",
                    f"{ratio:.2f}x ({result.median('replay'):.2f} ms vs"
                    f" {result.median('raw'):.2f} ms)",
                    ratio <= REPLAY_TARGET,
                )
            )
    worst = max(results, key=lambda result: result.median("snapshot"))
    checks.append(
        (
            f"load with snapshots <= {SNAPSHOT_TARGET_MS:.0f} ms at every length",
            f"worst {worst.median('snapshot'):.2f} ms at {worst.events:,} events",
            worst.median("snapshot") <= SNAPSHOT_TARGET_MS,
        )
    )
    return lines, checks


def targets(checks):
    width = max(len(name) for name, _, _ in checks)
    lines = ["", "Targets"]
    for name, figure, met in checks:
        lines.append(f"   {name:<{width}}  {_verdict(met):<6}  {figure}")
    missed = sum(1 for _, _, met in checks if not met)
    lines.append(f"   {len(checks) - missed} of {len(checks)} targets met")
    return lines


CPU_LABELS = {
    "ours": "ours",
    "ours_atomic": "ours in atomic()",
    "raw": "raw psycopg",
    "orm": "Django ORM",
}


def cpu(cpu_use, *, events: int, processes: int) -> list[str]:
    """Say how much CPU each writer of the concurrent shape spent per event.

    With every core busy, throughput is the cores divided by the CPU per
    event, so this shows where a gap between the columns comes from.
    """

    def per_event(seconds) -> str:
        return f"{1e6 * statistics.median(seconds) / events:.0f}"

    parts = []
    server_elsewhere = False
    for name, label in CPU_LABELS.items():
        runs = cpu_use[name]
        servers = [run.server for run in runs]
        server_elsewhere = server_elsewhere or None in servers
        server = "n/a" if None in servers else per_event(servers)
        parts.append(f"{label} {per_event([run.client for run in runs])} / {server}")
    lines = [
        "",
        f"   CPU per event in c, in microseconds, median of rounds: client (the"
        f" {processes} writer processes) / server (their PostgreSQL backends)",
        "   " + "; ".join(parts),
    ]
    if server_elsewhere:
        lines.append("   (server n/a: PostgreSQL runs on another machine)")
    return lines
