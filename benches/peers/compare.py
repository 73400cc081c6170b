"""Print each peer's ratio to tributary (same scenario, same N), from the
runner's JSON lines and the peers' JSON lines."""

import json
import sys


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip().startswith("{")]


def tributary_index(lines):
    """(scenario, n) -> (tributary median, bare tokio median), in the unit
    the peers report: microseconds per subgraph (map_cpu) or wall ms
    (map_io)."""
    index = {}
    for m in lines:
        if m.get("scenario") not in ("map_cpu", "map_io"):
            continue
        if m.get("variant", "run") != "run":
            continue
        index[(m["scenario"], m["params"]["n"])] = (m["median"], m["baseline"]["median"])
    return index


def main(tributary_path, peers_path):
    ours = tributary_index(load(tributary_path))
    print(f"{'scenario':<8} {'n':>7} {'peer':<10} {'peer':>12} {'tributary':>12} {'bare tokio':>12} {'peer/tributary':>15}")
    for p in load(peers_path):
        key = (p["scenario"], p["n"])
        if key not in ours:
            continue
        t, bare = ours[key]
        value = p["us_per_subgraph"] if p["scenario"] == "map_cpu" else p["median_ms"]
        unit = "us/subgraph" if p["scenario"] == "map_cpu" else "ms wall"
        print(
            f"{p['scenario']:<8} {p['n']:>7} {p['peer']:<10} {value:>12.2f} {t:>12.2f} {bare:>12.2f} {value / t:>14.1f}x  ({unit})"
        )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
