"""Node types, found through the `tusk.nodes` entry points (built-ins register the same way)."""

from __future__ import annotations

import logging
from functools import cache
from importlib.metadata import entry_points

from tusk.workflow.nodes.base import Node, NodeContext, NodeError, NodeResult, NotSupported

GROUP = "tusk.nodes"
log = logging.getLogger(__name__)

# Dify node types Tusk knows but does not run (yet), and why.
NOT_SUPPORTED = {
    "human-input": "human input nodes are not supported",
    "datasource": "knowledge pipelines are not supported",
    "knowledge-index": "knowledge pipelines are not supported",
    "trigger-webhook": "triggered workflows are not supported",
    "trigger-schedule": "triggered workflows are not supported",
    "trigger-plugin": "triggered workflows are not supported",
}


@cache
def node_types() -> dict[str, type[Node]]:
    found: dict[str, type[Node]] = {}
    for entry in entry_points(group=GROUP):
        try:
            cls = entry.load()
        except Exception as exc:  # one broken package must not stop every workflow
            log.error("node type %s (%s) cannot be loaded: %s", entry.name, entry.value, exc)
            continue
        if isinstance(cls, type) and issubclass(cls, Node):
            found[entry.name] = cls
    return found


def unsupported_reason(node_type: str) -> str | None:
    if node_type in node_types():
        return None
    return NOT_SUPPORTED.get(node_type, f"unknown node type {node_type!r}")


__all__ = [
    "GROUP",
    "Node",
    "NodeContext",
    "NodeError",
    "NodeResult",
    "NotSupported",
    "node_types",
    "unsupported_reason",
]
