"""Run events as Dify sends them: the `data` of each SSE event of a workflow run, and the body of
a blocking reply. The apps layer adds the chat-mode events (`message`, `message_end`)."""

from __future__ import annotations

from typing import Any

from tusk.workflow.events import (
    ContainerCompleted,
    ContainerNext,
    ContainerStarted,
    Event,
    NodeFinished,
    NodeRetry,
    NodeRun,
    NodeStarted,
    RunFailed,
    RunState,
    TextChunk,
    WorkflowFinished,
    WorkflowStarted,
)


def _seconds(value: float | None) -> int | None:
    return int(value) if value is not None else None


def _node_head(node: NodeRun) -> dict[str, Any]:
    return {
        "id": node.id,
        "node_id": node.node_id,
        "node_type": node.node_type,
        "title": node.title,
        "index": node.index,
        "predecessor_node_id": node.predecessor_node_id,
        "inputs": node.inputs,
        "inputs_truncated": False,
        "created_at": _seconds(node.created_at),
        "extras": {},
        "iteration_id": node.iteration_id,
        "loop_id": node.loop_id,
    }


def node_finished(node: NodeRun) -> dict[str, Any]:
    return {
        **_node_head(node),
        "process_data": node.process_data,
        "process_data_truncated": False,
        "outputs": node.outputs,
        "outputs_truncated": False,
        "status": node.status,
        "error": node.error,
        "elapsed_time": node.elapsed_time,
        "execution_metadata": node.metadata or None,
        "finished_at": _seconds(node.finished_at),
        "files": [],
    }


def run_summary(run: RunState) -> dict[str, Any]:
    """`workflow_finished`'s data, and the `data` of a blocking reply."""
    return {
        "id": run.id,
        "workflow_id": run.workflow_id,
        "status": run.status,
        "outputs": run.outputs,
        "error": run.error,
        "elapsed_time": run.elapsed_time,
        "total_tokens": run.total_tokens,
        "total_steps": run.total_steps,
        "created_by": run.created_by,
        "created_at": _seconds(run.created_at),
        "finished_at": _seconds(run.finished_at),
        "exceptions_count": run.exceptions_count,
        "files": [],
    }


def _container(prefix: str, event: ContainerStarted | ContainerNext | ContainerCompleted) -> str:
    return f"{'loop' if event.node.node_type == 'loop' else 'iteration'}_{prefix}"


def _container_data(event: ContainerStarted | ContainerNext | ContainerCompleted) -> dict[str, Any]:
    node = event.node
    head: dict[str, Any] = {
        "id": node.id,
        "node_id": node.node_id,
        "node_type": node.node_type,
        "title": node.title,
        "created_at": _seconds(node.created_at),
        "extras": {},
    }
    if isinstance(event, ContainerStarted):
        return {**head, "metadata": node.metadata, "inputs": node.inputs}
    if isinstance(event, ContainerNext):
        data = {**head, "index": event.index}
        if node.node_type == "loop":
            data["pre_loop_output"] = event.pre_loop_output
        return data
    return {
        **head,
        "inputs": node.inputs,
        "outputs": node.outputs,
        "status": node.status,
        "error": node.error,
        "elapsed_time": node.elapsed_time,
        "total_tokens": int(node.metadata.get("total_tokens", 0)),
        "execution_metadata": node.metadata or None,
        "finished_at": _seconds(node.finished_at),
        "steps": event.steps,
    }


def workflow_event(event: Event) -> tuple[str, dict[str, Any]]:
    """The event's Dify name and its `data` (for `error`, the fields of the event itself)."""
    match event:
        case WorkflowStarted(run=run):
            data = {"id": run.id, "workflow_id": run.workflow_id, "inputs": run.inputs,
                    "created_at": _seconds(run.created_at), "reason": "initial"}  # fmt: skip
            return "workflow_started", data
        case NodeStarted(node=node):
            return "node_started", _node_head(node)
        case NodeFinished(node=node):
            return "node_finished", node_finished(node)
        case NodeRetry(node=node, retry_index=retry_index):
            return "node_retry", {**node_finished(node), "retry_index": retry_index}
        case ContainerStarted() | ContainerNext() | ContainerCompleted():
            name = {ContainerStarted: "started", ContainerNext: "next"}.get(
                type(event), "completed"
            )
            return _container(name, event), _container_data(event)
        case TextChunk(text=text, selector=selector):
            return "text_chunk", {"text": text, "from_variable_selector": list(selector)}
        case WorkflowFinished(run=run):
            return "workflow_finished", run_summary(run)
        case RunFailed(message=message, code=code):
            return "error", {"message": message, "code": code, "status": 500}
    raise TypeError(f"not a run event: {event!r}")


def sse_payload(event: Event, task_id: str, run_id: str) -> dict[str, Any]:
    """One SSE chunk of a workflow app's stream."""
    name, data = workflow_event(event)
    if name == "error":
        return {"event": "error", "task_id": task_id, "workflow_run_id": run_id, **data}
    return {"event": name, "task_id": task_id, "workflow_run_id": run_id, "data": data}
