"""`anthropic`: the Messages API, streamed, with tools and images, through the official SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from functools import cached_property
from typing import Any

import anthropic

from tusk.models.base import ChatModel, CredentialField, Model, Provider
from tusk.models.errors import (
    BadRequest,
    BadResponse,
    ContextTooLong,
    InvalidCredentials,
    ModelError,
    ModelTimeout,
    ProviderUnavailable,
    RateLimited,
    UnknownModel,
    broken_stream,
)
from tusk.models.resilience import parse_retry_after
from tusk.models.types import (
    ChatEvent,
    ChatRequest,
    Finish,
    ImagePart,
    Message,
    ModelInfo,
    ModelType,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolDefinition,
    Usage,
)
from tusk.net.tls import ssl_context

DEFAULT_MAX_TOKENS = 4096
STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}
KNOWN_MODELS = [
    ModelInfo("claude-3-5-haiku-latest", "llm", context_window=200_000),
    ModelInfo("claude-3-5-sonnet-latest", "llm", context_window=200_000),
    ModelInfo("claude-3-7-sonnet-latest", "llm", context_window=200_000),
]


def _status_error(model: str, exc: anthropic.APIStatusError) -> ModelError:
    message = exc.message
    retry_after = parse_retry_after(dict(exc.response.headers))
    if isinstance(exc, anthropic.AuthenticationError | anthropic.PermissionDeniedError):
        return InvalidCredentials(model, message)
    if isinstance(exc, anthropic.RateLimitError):
        return RateLimited(model, message, retry_after=retry_after)
    if isinstance(exc, anthropic.NotFoundError):
        return UnknownModel(model, message)
    if "prompt is too long" in message:
        return ContextTooLong(model, message)
    if exc.status_code >= 500:  # 529 is "overloaded"
        return ProviderUnavailable(model, message, retry_after=retry_after)
    return BadRequest(model, message)


def provider_error(model: str, exc: Exception) -> ModelError:
    if isinstance(exc, ModelError):
        return exc
    if isinstance(exc, anthropic.APIStatusError):
        return _status_error(model, exc)
    if isinstance(exc, anthropic.APITimeoutError):
        return ModelTimeout(model, "the request timed out")
    if isinstance(exc, anthropic.APIConnectionError):
        cause = exc.__cause__ or exc
        return ProviderUnavailable(model, f"cannot connect: {' '.join(str(cause).split())}")
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return BadResponse(model, f"the server's answer is not the Messages protocol: {detail}")


def _image(part: ImagePart) -> dict[str, Any]:
    if part.url.startswith("data:"):
        header, _, data = part.url.partition(",")
        media_type = header[5:].split(";")[0]
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": part.url}}


def _blocks(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [
            {"type": "tool_result", "tool_use_id": message.tool_call_id, "content": message.text}
        ]
    parts = [TextPart(message.content)] if isinstance(message.content, str) else message.content
    blocks: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, TextPart) and part.text:
            blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            blocks.append(_image(part))
    for call in message.tool_calls:
        tool_input = json.loads(call.arguments or "{}")
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": tool_input})
    return blocks


def to_wire(messages: Sequence[Message]) -> tuple[str, list[dict[str, Any]]]:
    """The system prompt, and the other messages with same-role neighbours merged (the
    Messages API wants user and assistant turns to alternate; tool results are user turns)."""
    system = "\n\n".join(m.text for m in messages if m.role == "system")
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        role = "assistant" if message.role == "assistant" else "user"
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += _blocks(message)
        else:
            turns.append({"role": role, "content": _blocks(message)})
    return system, turns


def tools_to_wire(tools: Sequence[ToolDefinition]) -> list[dict[str, Any]]:
    return [
        {"name": t.name, "description": t.description, "input_schema": dict(t.parameters)}
        for t in tools
    ]


def stream_error(model: str, exc: Exception) -> ModelError:
    """An error once the stream has started: the answer broke off."""
    if isinstance(
        exc, anthropic.APIStatusError | anthropic.APITimeoutError | ModelError | ValueError
    ):
        return provider_error(model, exc)
    return broken_stream(model, exc)


class _StreamState:
    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.stop_reason: str | None = None

    def events(self, event: Any) -> list[ChatEvent]:
        kind = event.type
        if kind == "message_start":
            self.prompt_tokens = event.message.usage.input_tokens or 0
        elif kind == "content_block_start" and event.content_block.type == "tool_use":
            block = event.content_block
            return [ToolCallDelta(event.index, block.id, block.name, "")]
        elif kind == "content_block_delta":
            delta = event.delta
            if delta.type == "text_delta":
                return [TextDelta(delta.text)]
            if delta.type == "input_json_delta":
                return [ToolCallDelta(event.index, None, None, delta.partial_json)]
        elif kind == "message_delta":
            self.stop_reason = event.delta.stop_reason or self.stop_reason
            self.completion_tokens = event.usage.output_tokens or 0
        return []


class AnthropicChat(ChatModel):
    def __init__(self, provider: AnthropicProvider, name: str) -> None:
        super().__init__(provider.instance_name, name)
        self.client = provider.client

    def _arguments(self, request: ChatRequest) -> dict[str, Any]:
        parameters = dict(request.parameters)
        if "stop" in parameters:
            parameters["stop_sequences"] = parameters.pop("stop")
        system, messages = to_wire(request.messages)
        arguments: dict[str, Any] = {
            "max_tokens": parameters.pop("max_tokens", DEFAULT_MAX_TOKENS),
            "model": self.name,
            "messages": messages,
            "stream": True,
            # Sampling parameters go in the body as given: the SDK's signature lags the API.
            "extra_body": parameters,
        }
        if system:
            arguments["system"] = system
        if request.tools:
            arguments["tools"] = tools_to_wire(request.tools)
        return arguments

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        try:
            stream = await self.client.messages.create(**self._arguments(request))
        except Exception as exc:
            raise provider_error(self.full_name, exc) from exc
        state = _StreamState()
        try:
            async for event in stream:
                for out in state.events(event):
                    yield out
        except Exception as exc:
            raise stream_error(self.full_name, exc) from exc
        finally:
            await stream.close()
        if state.stop_reason is None:
            raise BadResponse(self.full_name, "the stream ended without a stop reason")
        yield Usage(state.prompt_tokens, state.completion_tokens)
        yield Finish(STOP_REASONS.get(state.stop_reason, state.stop_reason))


class AnthropicProvider(Provider):
    name = "anthropic"
    label = "Anthropic"
    model_types = ("llm",)
    credential_fields = (
        CredentialField("api_key", "API key", secret=True, required=True),
        CredentialField("base_url", "Base URL"),
    )

    @cached_property
    def client(self) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            api_key=self.credentials.get("api_key") or "",
            base_url=self.credentials.get("base_url") or None,
            timeout=anthropic.Timeout(self.timeouts.read, connect=self.timeouts.connect),
            max_retries=0,
            http_client=anthropic.DefaultAsyncHttpxClient(verify=ssl_context()),
        )

    async def aclose(self) -> None:
        if "client" in self.__dict__:
            await self.client.close()

    def models(self) -> list[ModelInfo]:
        return self.declared_models or KNOWN_MODELS

    def create(self, model_type: ModelType, model: str) -> Model:
        if model_type != "llm":
            raise self.unsupported(model_type, model)
        return AnthropicChat(self, model)

    async def validate(self) -> None:
        if not self.credentials.get("api_key"):
            raise InvalidCredentials(self.instance_name, "an API key is required")
        try:
            await self.client.models.list(limit=1)
        except Exception as exc:
            raise provider_error(self.instance_name, exc) from exc
