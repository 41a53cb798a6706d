"""Between Tusk's types and OpenAI's chat wire format (used by every OpenAI-compatible server)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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


def chunk_events(chunk: Any) -> Iterator[ChatEvent]:
    """The events in one `chat.completion.chunk` (the finish reason is read separately)."""
    usage = getattr(chunk, "usage", None)
    if usage is not None:
        yield Usage(usage.prompt_tokens or 0, usage.completion_tokens or 0)
    for choice in chunk.choices or ():
        delta = choice.delta
        if delta is None:
            continue
        if delta.content:
            yield TextDelta(delta.content)
        for call in delta.tool_calls or ():
            function = call.function
            yield ToolCallDelta(
                index=call.index,
                id=call.id,
                name=function.name if function else None,
                arguments=(function.arguments or "") if function else "",
            )


def finish_reason(chunk: Any) -> str | None:
    for choice in chunk.choices or ():
        if choice.finish_reason:
            return str(choice.finish_reason)
    return None
