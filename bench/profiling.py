"""``--profile``: where an append and a replay spend their time (cProfile)."""

import cProfile
import io
import pstats


def profile(label: str, function, *, limit: int = 25) -> list[str]:
    """Run ``function`` under cProfile; return the top of its cumulative profile."""
    profiler = cProfile.Profile()
    profiler.runcall(function)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs().sort_stats("cumulative").print_stats(limit)
    body = [line for line in out.getvalue().splitlines() if line.strip()]
    return ["", f"Profile: {label}", *body]


def profiles(*, writers, singles, reset) -> list[str]:
    """Profile shape a's appends (up to 1,000) and a replay of 1,000 events."""
    from eventstore.aggregates import Repository

    from . import loads
    from .workload import Counter

    reset("ours")
    some = singles[:1000]
    lines = profile(
        f"ours, shape a, {len(some):,} appends", lambda: writers.run("ours", some)
    )
    replayed = loads.write_history(1000)
    lines += profile(
        "replay of 1,000 events (no snapshots)",
        lambda: Repository(Counter).load(replayed),
    )
    return lines
