"""Plain asyncio: one coroutine per subgraph doing the two steps, results
through a bounded asyncio.Queue to a consumer that reduces them. The floor
any Python tool pays."""

import asyncio
import sys

from common import measure, report, repeats, scenarios, sizes


async def _map(n, io):
    queue = asyncio.Queue(maxsize=256)

    async def subgraph(i):
        v = i
        for last in (False, True):
            if io:
                await asyncio.sleep(io)
            v += 1
            await queue.put((i, last, {"n": v}))

    tasks = [asyncio.create_task(subgraph(i)) for i in range(n)]
    total = finals = 0
    while finals < n:
        _, last, value = await queue.get()
        if last:
            finals += 1
            total += value["n"]
    await asyncio.gather(*tasks)
    assert total == n * (n - 1) // 2 + 2 * n


def main(argv):
    r = repeats(argv)
    for scenario in scenarios(argv):
        io = 0.01 if scenario == "map_io" else 0.0
        for n in sizes(argv, [1_000, 10_000, 100_000]):
            times = measure(lambda n: asyncio.run(_map(n, io)), n, r)
            report("asyncio", scenario, n, times)


if __name__ == "__main__":
    main(sys.argv)
