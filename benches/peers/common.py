"""Shared helpers of the peer benchmarks: timing, medians, JSON lines."""

import json
import statistics
import sys
import time


def measure(run, n, repeats):
    """Run `run(n)` `repeats` times; return wall times in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(n)
        times.append(time.perf_counter() - start)
    return times


def report(peer, scenario, n, times, extra=None):
    """Print one JSON line: per-subgraph microseconds (map_cpu) or wall ms."""
    line = {
        "peer": peer,
        "scenario": scenario,
        "n": n,
        "repeats": len(times),
        "median_ms": round(statistics.median(times) * 1e3, 3),
        "min_ms": round(min(times) * 1e3, 3),
        "max_ms": round(max(times) * 1e3, 3),
        "us_per_subgraph": round(statistics.median(times) * 1e6 / n, 3),
    }
    line.update(extra or {})
    print(json.dumps(line), flush=True)


def sizes(argv, default):
    """Sizes from the command line (`--n 1000,10000`), else `default`."""
    if "--n" in argv:
        return [int(x) for x in argv[argv.index("--n") + 1].split(",")]
    return default


def repeats(argv, default=5):
    if "--repeats" in argv:
        return int(argv[argv.index("--repeats") + 1])
    return default


def scenarios(argv):
    chosen = [a for a in argv[1:] if a in ("map_cpu", "map_io")]
    return chosen or ["map_cpu", "map_io"]


__all__ = ["measure", "report", "sizes", "repeats", "scenarios", "sys"]
