"""LangGraph: a fan-out node sends N branches with the Send API; each
branch runs two nodes (a, then b through a Command carrying a Send) on its
private payload, and b adds its final n into the parent's `total` through
an add reducer."""

import asyncio
import operator
import sys
from typing import Annotated, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, Send

from common import measure, report, repeats, scenarios, sizes

IO = {"delay": 0.0}


class Parent(TypedDict):
    count: int
    total: Annotated[int, operator.add]


class Branch(TypedDict):
    n: int


def fan_out(state: Parent):
    return [Send("a", {"n": i}) for i in range(state["count"])]


async def step_a(branch: Branch):
    if IO["delay"]:
        await asyncio.sleep(IO["delay"])
    return Command(goto=Send("b", {"n": branch["n"] + 1}))


async def step_b(branch: Branch):
    if IO["delay"]:
        await asyncio.sleep(IO["delay"])
    return {"total": branch["n"] + 1}


def build():
    g = StateGraph(Parent)
    g.add_node("a", step_a)
    g.add_node("b", step_b)
    g.add_conditional_edges(START, fan_out, ["a"])
    g.add_edge("b", END)
    return g.compile()


GRAPH = build()


async def _run(n):
    out = await GRAPH.ainvoke({"count": n, "total": 0}, {"recursion_limit": 10})
    assert out["total"] == n * (n - 1) // 2 + 2 * n, out["total"]


def main(argv):
    r = repeats(argv)
    for scenario in scenarios(argv):
        IO["delay"] = 0.01 if scenario == "map_io" else 0.0
        for n in sizes(argv, [1_000, 10_000]):
            times = measure(lambda n: asyncio.run(_run(n)), n, r)
            report("langgraph", scenario, n, times)


if __name__ == "__main__":
    main(sys.argv)
