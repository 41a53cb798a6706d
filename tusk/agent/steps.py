"""What an agent run produces as it goes: its steps (Dify's message_agent_thoughts, one per model
round), the pieces of its answer, and the events that announce both."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


@dataclass
class Step:
    """One round of an agent: what the model thought, the tools it called with which inputs, and
    what they returned; with the round's tokens, prices and latency. Several tools called in one
    round are named `a;b`, and their inputs and observations are JSON objects keyed by tool."""

    position: int
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    thought: str = ""
    tools: list[str] = field(default_factory=list)
    tool_inputs: dict[str, Any] = field(default_factory=dict)
    observations: dict[str, str] = field(default_factory=dict)
    tool_labels: dict[str, Any] = field(default_factory=dict)
    tool_meta: dict[str, Any] = field(default_factory=dict)
    prompt: list[dict[str, Any]] = field(default_factory=list)  # the messages sent, as saved
    answer: str = ""
    usage: dict[str, Any] = field(default_factory=dict)
    files: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""  # what the model was told when its reply could not be read

    @property
    def tool(self) -> str:
        return ";".join(self.tools)

    @property
    def tool_input(self) -> str:
        return dumps(self.tool_inputs) if self.tools else ""

    @property
    def observation(self) -> str:
        return dumps(self.observations) if self.observations else self.note

    def file_ids(self) -> list[str]:
        return [str(f.get("related_id") or f.get("id") or "") for f in self.files]

    def event_json(self) -> dict[str, Any]:
        """The fields of Dify's `agent_thought` event."""
        return {
            "id": str(self.id),
            "position": self.position,
            "thought": self.thought,
            "observation": self.observation,
            "tool": self.tool,
            "tool_labels": self.tool_labels,
            "tool_input": self.tool_input,
            "message_files": self.file_ids(),
        }

    def log_json(self) -> dict[str, Any]:
        """The step as a workflow node records it."""
        return {
            **self.event_json(),
            "tool_meta": self.tool_meta,
            "usage": self.usage,
        }


@dataclass(frozen=True)
class ThoughtChanged:
    """A step began or changed (Dify sends `agent_thought` each time)."""

    step: Step


@dataclass(frozen=True)
class AnswerPiece:
    """A piece of the answer, as the user sees it (Dify's `agent_message`)."""

    text: str


AgentEvent = ThoughtChanged | AnswerPiece
