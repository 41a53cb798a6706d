"""A workflow made ready to run: its graph read, a node object for every node, and for every
Answer/End node the branch edges that must be taken before its output can stream. Built once
per workflow version and shared by all its runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tusk.workflow.graph import CONTAINER_TYPES, Graph, NodeSpec, Workflow, read_graph
from tusk.workflow.nodes import node_types, unsupported_reason
from tusk.workflow.nodes.base import (
    FAIL_BRANCH,
    Common,
    Node,
    NodeConfigError,
    NodeContext,
    NodeError,
    NodeResult,
    NotSupported,
    parse_config,
)
from tusk.workflow.template import Piece, Var, parse

Mode = Literal["workflow", "chat"]
MAX_PATHS = 64  # beyond this many routes to a response node, it streams once it starts


@dataclass(frozen=True)
class Problem:
    node_id: str
    title: str
    message: str

    def as_json(self) -> dict[str, str]:
        return {"node_id": self.node_id, "title": self.title, "message": self.message}


class _Unrunnable(Node):
    """Stands for a node that cannot run (unsupported type, broken configuration): the workflow
    still loads, and a run fails at this node with the reason."""

    type = "unrunnable"

    def __init__(self, spec: NodeSpec, error: NodeError) -> None:
        self.spec, self.id, self.error = spec, spec.id, error
        try:
            self.common = parse_config(Common, spec)
        except NodeError:
            self.common = Common()

    async def run(self, ctx: NodeContext) -> NodeResult:
        raise self.error


@dataclass(frozen=True)
class ResponseSpec:
    node_id: str
    pieces: tuple[Piece, ...]
    paths: tuple[frozenset[str], ...]  # the blocking edges along each route from the entry


@dataclass
class Plan:
    workflow: Workflow
    nodes: dict[str, Node]
    mode: Mode
    responses: dict[str | None, list[ResponseSpec]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def top(self) -> Graph:
        return self.workflow.top


def make_node(spec: NodeSpec) -> tuple[Node, Problem | None]:
    reason = unsupported_reason(spec.type)
    if reason is not None:
        error: NodeError = NotSupported(f"{spec.title}: {reason}")
        return _Unrunnable(spec, error), Problem(spec.id, spec.title, reason)
    try:
        return node_types()[spec.type](spec), None
    except NodeConfigError as exc:
        return _Unrunnable(spec, exc), Problem(spec.id, spec.title, str(exc))


def blocks(node: Node) -> bool:
    """Whether what comes after `node` is only known once it has run."""
    return (
        node.branches
        or node.common.error_strategy == FAIL_BRANCH
        or node.spec.type in CONTAINER_TYPES
    )


def _routes(graph: Graph, nodes: Mapping[str, Node], target: str) -> list[frozenset[str]] | None:
    """The blocking edges on each route from the entry to `target` (None: too many routes)."""
    if graph.entry is None:
        return []
    found: list[frozenset[str]] = []
    stack: list[tuple[str, frozenset[str], frozenset[str]]] = [
        (graph.entry, frozenset(), frozenset({graph.entry}))
    ]
    while stack:
        node_id, blocking, seen = stack.pop()
        if node_id == target:
            found.append(blocking)
            if len(found) > MAX_PATHS:
                return None
            continue
        for edge in graph.outgoing[node_id]:
            if edge.target not in seen:
                more = blocking | {edge.id} if blocks(nodes[node_id]) else blocking
                stack.append((edge.target, more, seen | {edge.target}))
    return found


def response_pieces(node: Node, mode: Mode) -> tuple[Piece, ...] | None:
    if node.spec.type == "answer":
        return parse(str(node.spec.data.get("answer") or ""))
    if node.spec.type == "end" and mode == "workflow" and node.spec.parent_id is None:
        outputs = node.spec.data.get("outputs") or []
        return tuple(
            Var(tuple(o["value_selector"]))
            for o in outputs
            if isinstance(o, Mapping)
            and isinstance(o.get("value_selector"), list)
            and len(o["value_selector"]) >= 2
        )
    return None


def _responses(graph: Graph, nodes: Mapping[str, Node], mode: Mode) -> list[ResponseSpec]:
    specs = []
    for node_id in graph.nodes:
        pieces = response_pieces(nodes[node_id], mode)
        if pieces is None:
            continue
        routes = _routes(graph, nodes, node_id)
        paths = tuple(routes) if routes is not None else (frozenset({f"@{node_id}"}),)
        specs.append(ResponseSpec(node_id, pieces, paths))
    return specs


def build_plan(graph: Any, mode: Mode) -> Plan:
    """Raises GraphError when the graph cannot be read at all; nodes that cannot run are
    listed in `problems` and fail the run when reached."""
    workflow = read_graph(graph)
    nodes: dict[str, Node] = {}
    problems: list[Problem] = []
    for spec in workflow.nodes.values():
        node, problem = make_node(spec)
        nodes[spec.id] = node
        if problem is not None:
            problems.append(problem)
    for container_id, inner in workflow.inner.items():
        nodes[container_id].children = frozenset(inner.nodes)
    plan = Plan(workflow, nodes, mode, problems=problems)
    plan.responses[None] = _responses(workflow.top, nodes, mode)
    for container_id, inner in workflow.inner.items():
        plan.responses[container_id] = _responses(inner, nodes, mode)
    return plan
