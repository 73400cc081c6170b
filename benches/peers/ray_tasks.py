"""Ray: the cluster comparison. One-step tasks (square a number) submitted
as Ray remote functions to a local Ray instance on this machine and
gathered, tasks/s — the figure to set beside tributary's
`cluster_throughput` (one-step tasks through Redis with two worker
processes; `cargo run --release -p tributary-benches -- cluster`).

    python ray_tasks.py --n 2000,10000 --repeats 3
"""

import json
import statistics
import sys
import time

import ray

from common import repeats, sizes


@ray.remote
def square(n):
    return {"n": n * n}


def run(n):
    refs = [square.remote(i) for i in range(n)]
    total = sum(r["n"] for r in ray.get(refs))
    assert total == sum(i * i for i in range(n))


def main():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    run(200)  # warm the workers
    for n in sizes(sys.argv, [2000, 10000]):
        rates = []
        for _ in range(repeats(sys.argv, 3)):
            start = time.perf_counter()
            run(n)
            rates.append(n / (time.perf_counter() - start))
        print(
            json.dumps(
                {
                    "peer": "ray",
                    "scenario": "cluster_throughput",
                    "n": n,
                    "repeats": len(rates),
                    "tasks_per_s": round(statistics.median(rates), 1),
                    "min": round(min(rates), 1),
                    "max": round(max(rates), 1),
                    "ray": ray.__version__,
                }
            ),
            flush=True,
        )
    ray.shutdown()


if __name__ == "__main__":
    main()
