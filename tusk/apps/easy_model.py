"""The model calls of chat and completion apps: the app's model streamed for an answer, and the
short calls of the features (conversation names, suggested questions). Provider errors are left
as the model runtime raises them: each carries Dify's error code."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tusk.apps.easy_config import AppUnavailable, EasyConfig
from tusk.models.base import ChatModel
from tusk.models.errors import MissingCredentials
from tusk.models.prices import price_of
from tusk.models.runtime import ModelRuntime
from tusk.models.types import ChatRequest, Finish, Message, TextDelta, Usage
from tusk.rag.tokens import count_tokens
from tusk.workflow.nodes.base import NodeConfigError
from tusk.workflow.nodes.models import ModelConfig, Reply, usage_json


def full_model_name(config: ModelConfig) -> str:
    """The Tusk name of the app's model; a config that names none makes the app unavailable."""
    if not config.name.strip():
        raise AppUnavailable("The app's configuration names no model: set model.name.")
    try:
        name = config.full_name
    except NodeConfigError as exc:
        raise AppUnavailable(f"The app's configuration is broken: {exc}.") from None
    assert name is not None
    return name


def app_model_name(config: EasyConfig) -> str | None:
    """The app's model, or None when its configuration names none."""
    try:
        return full_model_name(config.model)
    except AppUnavailable:
        return None


async def open_model(
    models: ModelRuntime, workspace_id: uuid.UUID, app_id: uuid.UUID, config: ModelConfig
) -> ChatModel:
    return await models.chat(workspace_id, full_model_name(config), app_id=app_id)


async def stream_reply(
    model: ChatModel,
    messages: Sequence[Message],
    parameters: Mapping[str, Any],
    reply: Reply,
    on_text: Callable[[str], None],
) -> None:
    """Stream one answer into `reply`, which keeps what came even if the call is cancelled."""
    started = time.perf_counter()
    request = ChatRequest(list(messages), parameters=dict(parameters))
    try:
        async for event in model.stream(request):
            if isinstance(event, TextDelta):
                if reply.first_token is None:
                    reply.first_token = time.perf_counter() - started
                reply.text += event.text
                on_text(event.text)
                # Let the reader send it: chunks that arrived together are otherwise all parsed
                # (without a pause) before the first of them goes out.
                await asyncio.sleep(0)
            elif isinstance(event, Usage):
                reply.usage = event
            elif isinstance(event, Finish):
                reply.finish_reason = event.reason
    finally:
        reply.latency = time.perf_counter() - started


def usage_of(models: ModelRuntime, reply: Reply) -> dict[str, Any]:
    """Dify's usage of one call, priced from the runtime's price table."""
    return usage_json(price_of(models.config.prices, reply.model), reply)


def estimated_usage(messages: Sequence[Message], answer: str) -> Usage:
    """Tokens of a call that was cut short, before the provider reported them (counted with
    Tusk's tokenizer, as Dify counts a stopped answer with the model's)."""
    counts = count_tokens([m.text for m in messages] + [answer])
    return Usage(sum(counts[:-1]), counts[-1] if answer else 0)


async def helper_model(
    models: ModelRuntime, workspace_id: uuid.UUID, app_id: uuid.UUID | None, fallback: str | None
) -> ChatModel:
    """The workspace's default chat model (Dify's choice for its helper calls), or `fallback`
    (the app's own model) when the workspace has no usable default."""
    try:
        return await models.chat(workspace_id, None, app_id=app_id)
    except MissingCredentials:
        if fallback is None:
            raise
    return await models.chat(workspace_id, fallback, app_id=app_id)


async def quick_answer(model: ChatModel, prompt: str, parameters: Mapping[str, Any]) -> str:
    result = await model.complete(
        ChatRequest([Message("user", prompt)], parameters=dict(parameters))
    )
    return result.text
