"""The graph of a workflow as Dify stores it (`{nodes, edges, viewport}`), read into plain
structures: nodes by id, edges by source and target, and the sub-graphs of containers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_HANDLE = "source"
NOTE_TYPES = frozenset({"", "custom-note"})  # canvas notes: not part of the run
CONTAINER_TYPES = frozenset({"iteration", "loop"})
CONTAINER_START_TYPES = frozenset({"iteration-start", "loop-start"})
START_TYPES = frozenset({"start"})


class GraphError(ValueError):
    """The graph cannot be read at all (not the shape Dify writes)."""


@dataclass(frozen=True)
class NodeSpec:
    id: str
    type: str
    title: str
    data: Mapping[str, Any]
    parent_id: str | None = None  # the iteration or loop this node runs inside


@dataclass(frozen=True)
class Edge:
    id: str
    source: str
    target: str
    handle: str = DEFAULT_HANDLE


@dataclass
class Graph:
    """Nodes and edges of one level: the whole workflow, or the inside of one container."""

    nodes: dict[str, NodeSpec]
    edges: list[Edge]
    entry: str | None
    outgoing: dict[str, list[Edge]] = field(default_factory=dict)
    incoming: dict[str, list[Edge]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for node_id in self.nodes:
            self.outgoing.setdefault(node_id, [])
            self.incoming.setdefault(node_id, [])
        for edge in self.edges:
            self.outgoing[edge.source].append(edge)
            self.incoming[edge.target].append(edge)


@dataclass
class Workflow:
    """All nodes of a workflow, and its levels: the top level and one graph per container."""

    nodes: dict[str, NodeSpec]
    top: Graph
    inner: dict[str, Graph]

    def level_of(self, node_id: str) -> Graph:
        parent = self.nodes[node_id].parent_id
        return self.top if parent is None else self.inner[parent]


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def read_node(raw: Any) -> NodeSpec | None:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("data"), Mapping):
        raise GraphError("every node needs an id and a data object")
    data: Mapping[str, Any] = raw["data"]
    node_type = _text(data.get("type"))
    if node_type in NOTE_TYPES or raw.get("type") == "custom-note":
        return None
    node_id = _text(raw.get("id"))
    if not node_id:
        raise GraphError(f"a {node_type or 'node'} node has no id")
    parent = raw.get("parentId") or data.get("iteration_id") or data.get("loop_id")
    return NodeSpec(
        id=node_id,
        type=node_type,
        title=_text(data.get("title")) or node_type,
        data=data,
        parent_id=_text(parent) or None,
    )


def read_edge(raw: Any, index: int) -> Edge:
    if not isinstance(raw, Mapping) or not raw.get("source") or not raw.get("target"):
        raise GraphError(f"edge {index} needs a source and a target")
    return Edge(
        id=_text(raw.get("id")) or f"edge-{index}",
        source=_text(raw["source"]),
        target=_text(raw["target"]),
        handle=_text(raw.get("sourceHandle")) or DEFAULT_HANDLE,
    )


def _level(nodes: Iterable[NodeSpec], edges: Sequence[Edge], entry: str | None) -> Graph:
    members = {node.id: node for node in nodes}
    inside = [e for e in edges if e.source in members and e.target in members]
    return Graph(members, inside, entry)


def _container_entry(container: NodeSpec, children: Sequence[NodeSpec]) -> str | None:
    declared = _text(container.data.get("start_node_id"))
    if declared and any(child.id == declared for child in children):
        return declared
    starts = [c.id for c in children if c.type in CONTAINER_START_TYPES]
    return starts[0] if starts else None


def read_graph(graph: Any) -> Workflow:
    """The graph's nodes and levels; a dangling edge (to a deleted node) is dropped, as the
    editor does; notes are left out."""
    if not isinstance(graph, Mapping):
        raise GraphError("the graph must be an object with nodes and edges")
    raw_nodes, raw_edges = graph.get("nodes") or [], graph.get("edges") or []
    if not isinstance(raw_nodes, list) or not isinstance(raw_edges, list):
        raise GraphError("graph.nodes and graph.edges must be lists")
    nodes: dict[str, NodeSpec] = {}
    for raw in raw_nodes:
        if (node := read_node(raw)) is not None:
            if node.id in nodes:
                raise GraphError(f"two nodes have the id {node.id!r}")
            nodes[node.id] = node
    edges = [read_edge(raw, i) for i, raw in enumerate(raw_edges)]
    edges = [e for e in edges if e.source in nodes and e.target in nodes]
    by_parent: dict[str | None, list[NodeSpec]] = {}
    for node in nodes.values():
        by_parent.setdefault(node.parent_id, []).append(node)
    top_nodes = by_parent.get(None, [])
    starts = [n.id for n in top_nodes if n.type in START_TYPES]
    inner = {
        c.id: _level(by_parent.get(c.id, []), edges, _container_entry(c, by_parent.get(c.id, [])))
        for c in nodes.values()
        if c.type in CONTAINER_TYPES
    }
    top = _level(top_nodes, edges, starts[0] if starts else None)
    return Workflow(nodes, top, inner)
