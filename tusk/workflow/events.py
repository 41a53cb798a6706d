"""What a run reports while it goes: typed events, in the order Dify sends them. The executor
emits them; the run recorder persists them; the apps layer turns them into SSE or one reply."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class NodeRun:
    """One execution of one node (and, once finished, its result)."""

    id: str
    node_id: str
    node_type: str
    title: str
    index: int
    predecessor_node_id: str | None
    created_at: float = field(default_factory=time.time)
    inputs: dict[str, Any] | None = None
    process_data: dict[str, Any] | None = None
    outputs: dict[str, Any] | None = None
    status: str = "running"
    error: str | None = None
    error_type: str | None = None
    elapsed_time: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    finished_at: float | None = None
    iteration_id: str | None = None
    loop_id: str | None = None


@dataclass(slots=True)
class RunState:
    """The run as a whole: what `workflow_started` and `workflow_finished` report."""

    id: str
    workflow_id: str
    inputs: dict[str, Any]
    created_at: float = field(default_factory=time.time)
    status: str = "running"
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    elapsed_time: float = 0.0
    total_tokens: int = 0
    total_price: float = 0.0
    total_steps: int = 0
    exceptions_count: int = 0
    finished_at: float | None = None
    created_by: dict[str, Any] = field(default_factory=dict)  # who started it, as Dify shows it


@dataclass(frozen=True, slots=True)
class WorkflowStarted:
    run: RunState


@dataclass(frozen=True, slots=True)
class NodeStarted:
    node: NodeRun


@dataclass(frozen=True, slots=True)
class NodeFinished:
    node: NodeRun


@dataclass(frozen=True, slots=True)
class NodeRetry:
    node: NodeRun  # the failed attempt
    retry_index: int


@dataclass(frozen=True, slots=True)
class ContainerStarted:
    """`iteration_started` or `loop_started` (containers report these instead of node_*)."""

    node: NodeRun


@dataclass(frozen=True, slots=True)
class ContainerNext:
    node: NodeRun
    index: int
    pre_loop_output: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ContainerCompleted:
    node: NodeRun
    steps: int


@dataclass(frozen=True, slots=True)
class TextChunk:
    """A piece of an Answer (chatflow) or End (workflow) node's output, in order."""

    text: str
    selector: tuple[str, ...]
    node_id: str  # the response node it belongs to


@dataclass(frozen=True, slots=True)
class WorkflowFinished:
    run: RunState


@dataclass(frozen=True, slots=True)
class RunFailed:
    """Sent after `WorkflowFinished` when the run failed: Dify's stream ends with `error`."""

    message: str
    code: str = "workflow_failed"


Event = (
    WorkflowStarted
    | NodeStarted
    | NodeFinished
    | NodeRetry
    | ContainerStarted
    | ContainerNext
    | ContainerCompleted
    | TextChunk
    | WorkflowFinished
    | RunFailed
)
