"""The data that flows through the model runtime: messages, tools, streamed events, results."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
ModelType = Literal["llm", "text-embedding", "rerank"]
InputType = Literal["document", "query"]
MODEL_TYPES: tuple[ModelType, ...] = ("llm", "text-embedding", "rerank")


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class ImagePart:
    """An image by URL (https: or a data: URI), for providers that accept images."""

    url: str
    detail: Literal["auto", "low", "high"] = "auto"


ContentPart = TextPart | ImagePart


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as the model wrote it


@dataclass(frozen=True)
class Message:
    role: Role
    content: str | Sequence[ContentPart] = ""
    tool_calls: Sequence[ToolCall] = ()
    tool_call_id: str | None = None  # for role "tool": the call this answers

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, TextPart))


@dataclass(frozen=True)
class ToolDefinition:
    name: str
    description: str
    parameters: Mapping[str, Any]  # JSON Schema of the arguments


@dataclass(frozen=True)
class ChatRequest:
    messages: Sequence[Message]
    tools: Sequence[ToolDefinition] = ()
    # Passed through to the provider: temperature, top_p, max_tokens, stop, ...
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a tool call: the first piece of a call carries its id and name."""

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Finish:
    reason: str  # "stop", "length", "tool_calls", "content_filter"


ChatEvent = TextDelta | ToolCallDelta | Usage | Finish


@dataclass(frozen=True)
class ChatResult:
    text: str
    tool_calls: list[ToolCall]
    usage: Usage
    finish_reason: str


@dataclass
class _PendingCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


async def collect(events: AsyncIterator[ChatEvent]) -> ChatResult:
    """The whole reply a stream of events adds up to."""
    text: list[str] = []
    calls: dict[int, _PendingCall] = {}
    usage, finish = Usage(0, 0), "stop"
    async for event in events:
        if isinstance(event, TextDelta):
            text.append(event.text)
        elif isinstance(event, ToolCallDelta):
            call = calls.setdefault(event.index, _PendingCall())
            call.id = event.id or call.id
            call.name = event.name or call.name
            call.arguments.append(event.arguments)
        elif isinstance(event, Usage):
            usage = event
        else:
            finish = event.reason
    tool_calls = [ToolCall(c.id, c.name, "".join(c.arguments)) for _, c in sorted(calls.items())]
    return ChatResult("".join(text), tool_calls, usage, finish)


@dataclass(frozen=True)
class EmbeddingBatch:
    vectors: list[list[float]]
    tokens: int = 0


@dataclass(frozen=True)
class RerankResult:
    index: int
    score: float


@dataclass(frozen=True)
class ModelInfo:
    name: str
    type: ModelType
    context_window: int | None = None
    dimensions: int | None = None
