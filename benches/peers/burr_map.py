"""Burr: a parent application with one MapStates action running a subgraph
of two actions (a -> b) over N states, reduced into a sum. Async actions,
so Burr gathers the subgraphs on the event loop (its parallel mode for
async code)."""

import asyncio
import sys

from burr.core import ApplicationBuilder, State, action, default
from burr.core.graph import GraphBuilder
from burr.core.parallelism import MapStates, RunnableGraph

from common import measure, report, repeats, scenarios, sizes

IO = {"delay": 0.0}


@action(reads=["n"], writes=["n"])
async def step_a(state: State) -> State:
    if IO["delay"]:
        await asyncio.sleep(IO["delay"])
    return state.update(n=state["n"] + 1)


@action(reads=["n"], writes=["n"])
async def step_b(state: State) -> State:
    if IO["delay"]:
        await asyncio.sleep(IO["delay"])
    return state.update(n=state["n"] + 1)


SUBGRAPH = RunnableGraph(
    graph=GraphBuilder()
    .with_actions(a=step_a, b=step_b)
    .with_transitions(("a", "b", default))
    .build(),
    entrypoint="a",
    halt_after=["b"],
)


class MapTwoSteps(MapStates):
    def action(self, state, inputs):
        return SUBGRAPH

    async def states(self, state, context, inputs):
        for i in range(state["count"]):
            yield state.update(n=i)

    async def reduce(self, state, states):
        total = 0
        async for s in states:
            total += s["n"]
        return state.update(total=total)

    def is_async(self):
        return True

    @property
    def reads(self):
        return ["count"]

    @property
    def writes(self):
        return ["total"]


async def _run(n):
    app = (
        ApplicationBuilder()
        .with_actions(map=MapTwoSteps())
        .with_entrypoint("map")
        .with_state(count=n, total=0)
        .build()
    )
    _, _, state = await app.arun(halt_after=["map"])
    assert state["total"] == n * (n - 1) // 2 + 2 * n, state["total"]


def main(argv):
    r = repeats(argv)
    for scenario in scenarios(argv):
        IO["delay"] = 0.01 if scenario == "map_io" else 0.0
        for n in sizes(argv, [1_000, 10_000]):
            times = measure(lambda n: asyncio.run(_run(n)), n, r)
            report("burr", scenario, n, times)


if __name__ == "__main__":
    main(sys.argv)
