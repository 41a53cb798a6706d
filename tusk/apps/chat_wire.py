"""The chunks of a chat app's stream, and its blocking body, as Dify sends them: every chunk of a
chat mode carries `task_id`, `conversation_id`, `message_id` and `created_at`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tusk.workflow.events import Event
from tusk.workflow.wire import workflow_event


@dataclass(frozen=True)
class ChatIds:
    task_id: str
    message_id: str
    conversation_id: str
    created_at: int
    mode: str

    def head(self, event: str) -> dict[str, Any]:
        return {
            "event": event,
            "task_id": self.task_id,
            "id": self.message_id,
            "message_id": self.message_id,
            "conversation_id": self.conversation_id,
            "created_at": self.created_at,
        }


def message_chunk(ids: ChatIds, text: str, selector: list[str] | None = None) -> dict[str, Any]:
    chunk = {**ids.head("message"), "answer": text}
    if selector is not None:
        chunk["from_variable_selector"] = selector
    return chunk


def message_end(ids: ChatIds, metadata: dict[str, Any]) -> dict[str, Any]:
    return {**ids.head("message_end"), "metadata": metadata, "files": []}


def error_chunk(ids: ChatIds, message: str, code: str, status: int = 400) -> dict[str, Any]:
    return {**ids.head("error"), "code": code, "status": status, "message": message}


def workflow_chunk(ids: ChatIds, run_id: str, event: Event) -> dict[str, Any]:
    """A workflow event inside a chatflow's stream (the `error` event has no `data`)."""
    name, data = workflow_event(event)
    head = {**ids.head(name), "workflow_run_id": run_id}
    del head["id"]
    if name == "error":
        return {**head, **data}
    return {**head, "data": data}


def blocking_body(ids: ChatIds, answer: str, metadata: dict[str, Any]) -> dict[str, Any]:
    return {**ids.head("message"), "mode": ids.mode, "answer": answer, "metadata": metadata}
