"""Checks a workflow must pass before it is published: one start, a reachable end (or answer),
no cycles outside loops, selectors that point at nodes and outputs that exist, and node
configurations that parse. Each problem names the node, its title and what is wrong."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from tusk.workflow.graph import Graph
from tusk.workflow.nodes import unsupported_reason
from tusk.workflow.plan import Plan, Problem
from tusk.workflow.variables import RESERVED, Selector

WHOLE = ("", "workflow")  # problems of the workflow as a whole, not of one node


def validate(plan: Plan) -> list[Problem]:
    """Everything that keeps `plan` from being published. Nodes of types Tusk cannot run yet are
    not counted here: they are reported as warnings at import and fail the run when reached."""
    problems = [p for p in plan.problems if unsupported_reason(_type(plan, p.node_id)) is None]
    problems += _start_problems(plan)
    problems += _cycle_problems(plan)
    if not problems:
        problems += _reach_problems(plan)
    problems += _selector_problems(plan)
    return problems


def _type(plan: Plan, node_id: str) -> str:
    return plan.nodes[node_id].spec.type


def _start_problems(plan: Plan) -> list[Problem]:
    starts = [n for n in plan.top.nodes.values() if n.type == "start"]
    if len(starts) == 1:
        return []
    if not starts:
        return [Problem(*WHOLE, "the workflow has no start node")]
    return [Problem(s.id, s.title, "a workflow has exactly one start node") for s in starts[1:]]


def _cycle_problems(plan: Plan) -> list[Problem]:
    found = []
    for graph in (plan.top, *plan.workflow.inner.values()):
        cycle = _cycle_member(graph)
        if cycle is not None:
            spec = graph.nodes[cycle]
            message = "edges form a cycle through this node; repeat work with a loop node instead"
            found.append(Problem(spec.id, spec.title, message))
    return found


def _cycle_member(graph: Graph) -> str | None:
    """A node on a cycle of `graph`, found by peeling off nodes with no incoming edge."""
    indegree = {node_id: len(edges) for node_id, edges in graph.incoming.items()}
    free = deque(node_id for node_id, count in indegree.items() if count == 0)
    while free:
        for edge in graph.outgoing[free.popleft()]:
            indegree[edge.target] -= 1
            if indegree[edge.target] == 0:
                free.append(edge.target)
    return next((node_id for node_id, count in indegree.items() if count > 0), None)


def _reachable(graph: Graph) -> set[str]:
    seen: set[str] = set()
    todo = [graph.entry] if graph.entry else []
    while todo:
        node_id = todo.pop()
        if node_id not in seen:
            seen.add(node_id)
            todo.extend(edge.target for edge in graph.outgoing[node_id])
    return seen


def _reach_problems(plan: Plan) -> list[Problem]:
    final = "end" if plan.mode == "workflow" else "answer"
    reached = _reachable(plan.top)
    if any(plan.top.nodes[n].type == final for n in reached):
        return []
    return [Problem(*WHOLE, f"no {final} node can be reached from the start node")]


def _selector_problems(plan: Plan) -> list[Problem]:
    found = []
    for node_id, node in plan.nodes.items():
        spec = node.spec
        for selector in node.reads():
            message = _selector_problem(plan, node_id, selector)
            if message is not None:
                found.append(Problem(spec.id, spec.title, message))
    return found


def _containers_of(plan: Plan, node_id: str) -> Iterable[str]:
    parent = plan.workflow.nodes[node_id].parent_id
    while parent is not None:
        yield parent
        parent = plan.workflow.nodes[parent].parent_id


def _selector_problem(plan: Plan, reader: str, selector: Selector) -> str | None:
    if len(selector) < 2 or selector[0] in RESERVED:
        return None
    source, name = selector[0], selector[1]
    shown = ".".join(selector)
    if source not in plan.nodes:
        return f"reads {shown}, but there is no node {source!r}"
    if source in _containers_of(plan, reader):
        return None  # a container's item, index and loop variables, seen from inside
    names = plan.nodes[source].output_names()
    if names is not None and name not in names and not name.startswith("sys."):
        known = ", ".join(sorted(names)) or "none"
        return f"reads {shown}, but {plan.nodes[source].title} has no output {name!r} ({known})"
    return None
