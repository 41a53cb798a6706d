"""Building small workflow graphs in tests, and running them with the executor."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from typing import Any, cast

from tusk.workflow.context import Limits, Resources, RunContext
from tusk.workflow.events import Event, NodeFinished, RunState, TextChunk
from tusk.workflow.executor import Executor
from tusk.workflow.plan import Mode, build_plan
from tusk.workflow.variables import VariablePool


def node(node_id: str, node_type: str, **data: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "custom", "data": {"type": node_type, "title": node_id, **data}}


def child(parent: str, node_id: str, node_type: str, **data: Any) -> dict[str, Any]:
    """A node inside an iteration or loop."""
    return {**node(node_id, node_type, **data), "parentId": parent}


def edge(source: str, target: str, handle: str = "source") -> dict[str, Any]:
    return {
        "id": f"{source}-{handle}-{target}",
        "source": source,
        "target": target,
        "sourceHandle": handle,
    }


def chain(*ids: str) -> list[dict[str, Any]]:
    return [edge(a, b) for a, b in itertools.pairwise(ids)]


@dataclass
class Outcome:
    state: RunState
    events: list[Event] = field(default_factory=list)

    @property
    def streamed(self) -> str:
        return "".join(e.text for e in self.events if isinstance(e, TextChunk))

    def finished(self, node_id: str) -> list[NodeFinished]:
        return [e for e in self.events if isinstance(e, NodeFinished) and e.node.node_id == node_id]

    def outputs(self, node_id: str) -> dict[str, Any]:
        runs = self.finished(node_id)
        assert runs, f"{node_id} did not run"
        return runs[-1].node.outputs or {}


async def run_graph(
    nodes: list[dict[str, Any]],
    edges: list[dict[str, Any]],
    inputs: dict[str, Any] | None = None,
    *,
    mode: Mode = "workflow",
    resources: Resources | None = None,
    limits: Limits | None = None,
    system: dict[str, Any] | None = None,
    conversation: dict[str, Any] | None = None,
    workspace_id: uuid.UUID | None = None,
) -> Outcome:
    """Run a graph with no persistence; `resources` is needed by nodes that call models,
    the sandbox or the database."""
    plan = build_plan({"nodes": nodes, "edges": edges}, mode)
    run = RunContext(
        workspace_id=workspace_id or uuid.uuid4(),
        app_id=uuid.uuid4(),
        workflow_id=uuid.uuid4(),
        run_id=uuid.uuid4(),
        resources=cast(Resources, resources),
        inputs=dict(inputs or {}),
        limits=limits or Limits(),
    )
    pool = VariablePool.for_run(system or {}, conversation=conversation or {})
    events: list[Event] = []
    state = await Executor(plan, run, pool, events.append, inputs=inputs).run()
    return Outcome(state, events)
