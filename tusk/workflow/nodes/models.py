"""What the nodes that call a model share: Dify's model configuration, the Tusk model it names,
one streamed call, and its usage and price in Dify's shape."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Literal

from tusk.models.base import ChatModel
from tusk.models.errors import MissingCredentials, ModelError, UnknownModel
from tusk.models.prices import Price, price_of
from tusk.models.types import (
    ChatRequest,
    Finish,
    Message,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolDefinition,
    Usage,
)
from tusk.workflow.nodes.base import Config, NodeConfigError, NodeContext, NodeError
from tusk.workflow.nodes.prompts import saved_prompts
from tusk.workflow.providers import tusk_provider

# Completion parameters sent to the provider; Dify's others only steer its own UI.
SENT_PARAMETERS = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "max_tokens",
        "max_completion_tokens",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "reasoning_effort",
    }
)
PRICE_UNIT = Decimal("0.000001")  # Tusk's prices are per million tokens
PRICE_PLACES = Decimal("0.0000001")  # Dify rounds prices to 7 decimals


class ModelConfig(Config):
    provider: str = ""
    name: str = ""
    mode: Literal["chat", "completion"] = "chat"
    completion_params: dict[str, Any] = {}

    @property
    def full_name(self) -> str | None:
        """The Tusk model name, or None for the workspace's default chat model."""
        if not self.name.strip():
            return None
        if not tusk_provider(self.provider):
            raise NodeConfigError(f"model {self.name!r} names no provider: set model.provider")
        return model_name(self.provider, self.name)

    @property
    def label(self) -> str:
        return f"{self.provider or '?'}/{self.name}" if self.name else "the default chat model"


class ModelCallFailed(NodeError):
    """The model could not be called, or its answer broke off."""


class ModelUnavailable(NodeError):
    """The workspace cannot call the model the node names."""


def model_name(provider: str, name: str) -> str:
    """`provider:model`, the name Tusk's model runtime resolves."""
    return f"{tusk_provider(provider)}:{name.strip()}"


async def resolve_model(ctx: NodeContext, config: ModelConfig) -> ChatModel:
    """The chat model the node names, or an error that says what to configure."""
    run = ctx.run
    try:
        return await run.resources.models.chat(
            run.workspace_id, config.full_name, app_id=run.app_id
        )
    except (MissingCredentials, UnknownModel) as exc:
        raise ModelUnavailable(
            f"model {config.label} cannot be used: {exc.detail}. Configure the "
            f"{tusk_provider(config.provider) or 'model'} provider for this workspace "
            "(console: model providers) or choose another model in the node"
        ) from None
    except ModelError as exc:
        raise ModelCallFailed(f"model {config.label}: {exc}") from None


def _response_format(params: Mapping[str, Any]) -> dict[str, Any] | None:
    kind = params.get("response_format")
    if isinstance(kind, Mapping):
        return dict(kind)
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema" and params.get("json_schema"):
        schema = params["json_schema"]
        try:
            loaded = json.loads(schema) if isinstance(schema, str) else schema
        except ValueError:
            raise NodeError("completion_params.json_schema is not valid JSON") from None
        return {"type": "json_schema", "json_schema": loaded}
    return None


def request_parameters(params: Mapping[str, Any]) -> dict[str, Any]:
    """Dify's `completion_params` as the parameters of a chat request."""
    sent = {k: v for k, v in params.items() if k in SENT_PARAMETERS and v is not None}
    stop = params.get("stop")
    if isinstance(stop, list) and stop:
        sent["stop"] = [str(s) for s in stop]
    elif isinstance(stop, str) and stop:
        sent["stop"] = [stop]
    if (response_format := _response_format(params)) is not None:
        sent["response_format"] = response_format
    return sent


@dataclass
class Reply:
    """A model's whole answer, and what it took."""

    model: str
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str = "stop"
    usage: Usage = field(default_factory=lambda: Usage(0, 0))
    latency: float = 0.0
    first_token: float | None = None  # seconds from the call to the first token


@dataclass
class _Calls:
    """Tool-call deltas put together, by index."""

    parts: dict[int, list[str]] = field(default_factory=dict)
    heads: dict[int, tuple[str, str]] = field(default_factory=dict)

    def add(self, delta: ToolCallDelta) -> None:
        call_id, name = self.heads.get(delta.index, ("", ""))
        self.heads[delta.index] = (delta.id or call_id, delta.name or name)
        self.parts.setdefault(delta.index, []).append(delta.arguments)

    def calls(self) -> list[ToolCall]:
        return [
            ToolCall(self.heads[i][0], self.heads[i][1], "".join(self.parts[i]))
            for i in sorted(self.heads)
        ]


async def call_model(
    ctx: NodeContext,
    config: ModelConfig,
    messages: Sequence[Message],
    *,
    tools: Sequence[ToolDefinition] = (),
    parameters: Mapping[str, Any] | None = None,
    on_text: Callable[[str], None] | None = None,
) -> Reply:
    """One streamed call; `on_text` gets each piece of text as it arrives."""
    sent = request_parameters(config.completion_params) if parameters is None else parameters
    model = await resolve_model(ctx, config)
    started = time.perf_counter()
    try:
        reply, calls = Reply(model.full_name), _Calls()
        request = ChatRequest(list(messages), tools=list(tools), parameters=dict(sent))
        async for event in model.stream(request):
            if isinstance(event, TextDelta | ToolCallDelta) and reply.first_token is None:
                reply.first_token = time.perf_counter() - started
            if isinstance(event, TextDelta):
                reply.text += event.text
                if on_text is not None:
                    on_text(event.text)
            elif isinstance(event, ToolCallDelta):
                calls.add(event)
            elif isinstance(event, Usage):
                reply.usage = event
            elif isinstance(event, Finish):
                reply.finish_reason = event.reason
    except ModelError as exc:
        raise ModelCallFailed(str(exc)) from None
    reply.tool_calls = calls.calls()
    reply.latency = time.perf_counter() - started
    return reply


def _money(value: Decimal) -> str:
    return str(value.quantize(PRICE_PLACES, rounding=ROUND_HALF_UP))


def usage_json(price: Price, reply: Reply) -> dict[str, Any]:
    """Dify's LLMUsage: tokens, unit prices (per `price_unit` tokens), prices, latency."""
    usage = reply.usage
    prompt_price = Decimal(usage.prompt_tokens) * price.input * PRICE_UNIT
    completion_price = Decimal(usage.completion_tokens) * price.output * PRICE_UNIT
    generate = None if reply.first_token is None else reply.latency - reply.first_token
    return {
        "prompt_tokens": usage.prompt_tokens,
        "prompt_unit_price": str(price.input),
        "prompt_price_unit": str(PRICE_UNIT),
        "prompt_price": _money(prompt_price),
        "completion_tokens": usage.completion_tokens,
        "completion_unit_price": str(price.output),
        "completion_price_unit": str(PRICE_UNIT),
        "completion_price": _money(completion_price),
        "total_tokens": usage.total_tokens,
        "total_price": _money(prompt_price + completion_price),
        "currency": price.currency,
        "latency": round(reply.latency, 3),
        "time_to_first_token": None if reply.first_token is None else round(reply.first_token, 3),
        "time_to_generate": None if generate is None else round(generate, 3),
    }


def empty_usage() -> dict[str, Any]:
    return usage_json(Price(Decimal(0), Decimal(0)), Reply(""))


def usage_of(ctx: NodeContext, reply: Reply) -> dict[str, Any]:
    return usage_json(price_of(ctx.run.resources.models.config.prices, reply.model), reply)


def _decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return Decimal(0)


def add_usage(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, Any]:
    """Two calls' usage as one (unit prices are the first call's)."""
    total = dict(first)
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        total[key] = int(first.get(key) or 0) + int(second.get(key) or 0)
    for key in ("prompt_price", "completion_price", "total_price"):
        total[key] = _money(_decimal(first.get(key)) + _decimal(second.get(key)))
    total["latency"] = round(
        float(first.get("latency") or 0) + float(second.get("latency") or 0), 3
    )
    return total


def spend(usage: Mapping[str, Any]) -> dict[str, Any]:
    """What a node's execution metadata says it cost."""
    return {
        "total_tokens": int(usage.get("total_tokens") or 0),
        "total_price": str(usage.get("total_price") or "0"),
        "currency": str(usage.get("currency") or "USD"),
    }


def call_record(
    model: ModelConfig,
    messages: Sequence[Message],
    reply: Reply,
    usage: Mapping[str, Any],
    mode: str | None = None,
) -> dict[str, Any]:
    """A node's process data about its call, in Dify's shape: the prompts sent and the model."""
    return {
        "model_mode": mode or model.mode,
        "prompts": saved_prompts(messages),
        "usage": dict(usage),
        "finish_reason": reply.finish_reason,
        "model_provider": model.provider,
        "model_name": model.name,
    }
