"""Between Tusk's types and OpenAI's chat wire format (used by every OpenAI-compatible server)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from tusk.models.types import (
    ChatEvent,
    ImagePart,
    Message,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolDefinition,
    Usage,
)


def _content(message: Message) -> str | list[dict[str, Any]]:
    if isinstance(message.content, str):
        return message.content
    parts: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, TextPart):
            parts.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            parts.append(
                {"type": "image_url", "image_url": {"url": part.url, "detail": part.detail}}
            )
    return parts


def message_to_wire(message: Message) -> dict[str, Any]:
    wire: dict[str, Any] = {"role": message.role, "content": _content(message)}
    if message.tool_calls:
        wire["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.role == "tool":
        wire["tool_call_id"] = message.tool_call_id
    return wire


def tools_to_wire(tools: Sequence[ToolDefinition]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description,
                "parameters": dict(t.parameters),
            },
        }
        for t in tools
    ]


def chunk_events(chunk: Mapping[str, Any]) -> Iterator[ChatEvent]:
    """The events in one `chat.completion.chunk`, as parsed JSON (the finish reason is read
    separately)."""
    usage = chunk.get("usage")
    if isinstance(usage, Mapping):
        yield Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta")
        if not delta:
            continue
        if content := delta.get("content"):
            yield TextDelta(str(content))
        for call in delta.get("tool_calls") or ():
            function = call.get("function") or {}
            yield ToolCallDelta(
                index=int(call.get("index") or 0),
                id=call.get("id"),
                name=function.get("name"),
                arguments=str(function.get("arguments") or ""),
            )


def finish_reason(chunk: Mapping[str, Any]) -> str | None:
    for choice in chunk.get("choices") or ():
        if reason := choice.get("finish_reason"):
            return str(reason)
    return None
