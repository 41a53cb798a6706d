"""What every model call goes through: retries before the first event, fallback models, and a
usage record. The provider's model is wrapped; callers see the same interfaces."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from tusk.models.base import ChatModel, EmbeddingModel, RerankModel, tell_request_sent
from tusk.models.errors import ModelError
from tusk.models.prices import Price, price_of
from tusk.models.resilience import RetryPolicy, pause_before_retry, with_retries
from tusk.models.types import (
    ChatEvent,
    ChatRequest,
    EmbeddingBatch,
    InputType,
    RerankResult,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from tusk.models.usage import UsageRecord, UsageRecorder


@dataclass(frozen=True)
class CallContext:
    """Who a call is made for, and where its usage goes."""

    workspace_id: uuid.UUID
    app_id: uuid.UUID | None
    recorder: UsageRecorder | None
    prices: dict[str, Price]
    policy: RetryPolicy


class _Meter:
    """Times one call and turns it into a usage record."""

    def __init__(self, context: CallContext, provider: str, model: str, model_type: str) -> None:
        self.context = context
        self.provider = provider
        self.model = model
        self.model_type = model_type
        self.started = time.perf_counter()
        self.created_at = datetime.now(UTC)
        self.first_token: float | None = None
        self.usage = Usage(0, 0)

    def first(self) -> None:
        if self.first_token is None:
            self.first_token = time.perf_counter()

    def done(self, status: str, error: str | None = None) -> None:
        recorder = self.context.recorder
        if recorder is None:
            return
        price = price_of(self.context.prices, f"{self.provider}:{self.model}")
        usage = self.usage
        ttft = None if self.first_token is None else (self.first_token - self.started) * 1000
        recorder.record(
            UsageRecord(
                workspace_id=self.context.workspace_id,
                app_id=self.context.app_id,
                provider=self.provider,
                model=self.model,
                model_type=self.model_type,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                latency_ms=(time.perf_counter() - self.started) * 1000,
                ttft_ms=ttft,
                status=status,
                error=error,
                cost=price.cost(usage.prompt_tokens, usage.completion_tokens),
                currency=price.currency,
                created_at=self.created_at,
            )
        )


async def _metered(
    model: ChatModel, request: ChatRequest, meter: _Meter
) -> AsyncGenerator[ChatEvent]:
    status, error = "cancelled", None
    try:
        async for event in model.stream(request):
            if isinstance(event, TextDelta | ToolCallDelta):
                meter.first()
            elif isinstance(event, Usage):
                meter.usage = event
            yield event
        status = "success"
    except ModelError as exc:
        status, error = "error", exc.message
        raise
    finally:
        meter.done(status, error)


class GuardedChat(ChatModel):
    """The first model of `candidates`, retried before its first event; on an availability
    error before any event, the next one takes over."""

    def __init__(self, candidates: Sequence[ChatModel], context: CallContext) -> None:
        super().__init__(candidates[0].provider, candidates[0].name)
        self.candidates = list(candidates)
        self.context = context

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        for position, model in enumerate(self.candidates):
            try:
                first, events = await self._open(model, request)
            except ModelError as error:
                if not error.fallback or position == len(self.candidates) - 1:
                    raise
                continue
            if first is None:
                return
            try:
                yield first
                async for event in events:
                    yield event
            finally:
                await events.aclose()
            return

    async def _open(
        self, model: ChatModel, request: ChatRequest
    ) -> tuple[ChatEvent | None, AsyncGenerator[ChatEvent]]:
        """A stream and its first event, with the retries that are allowed before it."""
        attempt = 0
        while True:
            if not model.tells_request_sent:
                tell_request_sent()
            meter = _Meter(self.context, model.provider, model.name, "llm")
            events = _metered(model, request, meter)
            try:
                return await anext(events), events
            except StopAsyncIteration:
                return None, events
            except ModelError as error:
                await events.aclose()
                attempt += 1
                await pause_before_retry(self.context.policy, attempt, error)


class GuardedEmbedding(EmbeddingModel):
    def __init__(self, inner: EmbeddingModel, context: CallContext) -> None:
        super().__init__(inner.provider, inner.name, inner.dimensions)
        self.inner = inner
        self.context = context
        self.max_batch = inner.max_batch

    async def embed_batch(self, texts: Sequence[str], input_type: InputType) -> EmbeddingBatch:
        async def call() -> EmbeddingBatch:
            meter = _Meter(self.context, self.provider, self.name, "text-embedding")
            try:
                batch = await self.inner.embed_batch(texts, input_type)
            except ModelError as error:
                meter.done("error", error.message)
                raise
            meter.usage = Usage(batch.tokens, 0)
            meter.done("success")
            return batch

        return await with_retries(call, self.context.policy)


class GuardedRerank(RerankModel):
    def __init__(self, inner: RerankModel, context: CallContext) -> None:
        super().__init__(inner.provider, inner.name)
        self.inner = inner
        self.context = context

    async def rerank(
        self, query: str, documents: Sequence[str], top_n: int | None = None
    ) -> list[RerankResult]:
        async def call() -> list[RerankResult]:
            meter = _Meter(self.context, self.provider, self.name, "rerank")
            try:
                results = await self.inner.rerank(query, documents, top_n)
            except ModelError as error:
                meter.done("error", error.message)
                raise
            meter.done("success")
            return results

        return await with_retries(call, self.context.policy)
