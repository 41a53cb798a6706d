"""What a provider implements: chat, embedding and rerank models, and a factory for them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import ClassVar

from tusk.models.errors import UnknownModel
from tusk.models.types import (
    ChatEvent,
    ChatRequest,
    ChatResult,
    EmbeddingBatch,
    InputType,
    ModelInfo,
    ModelType,
    RerankResult,
    collect,
)

# What a caller does once its chat request is on the wire, while the model thinks: a chat turn
# writes its rows then, so that they do not hold the request back (tusk.apps.running).
request_sent: ContextVar[Callable[[], None] | None] = ContextVar("request_sent", default=None)


def tell_request_sent() -> None:
    callback = request_sent.get()
    if callback is not None:
        callback()


class NamedModel:
    """A model of a provider, called by `provider:name`."""

    def __init__(self, provider: str, name: str) -> None:
        self.provider = provider
        self.name = name

    @property
    def full_name(self) -> str:
        return f"{self.provider}:{self.name}"


class ChatModel(NamedModel):
    # True when `stream` calls `tell_request_sent()` once its request is sent; for the others,
    # the call is told as it starts (tusk.models.guarded).
    tells_request_sent: ClassVar[bool] = False

    @abstractmethod
    def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        """Text and tool-call deltas as they come, then usage and the finish reason."""

    async def complete(self, request: ChatRequest) -> ChatResult:
        return await collect(self.stream(request))


class EmbeddingModel(NamedModel):
    max_batch: int = 64  # texts per provider call

    def __init__(self, provider: str, name: str, dimensions: int | None = None) -> None:
        super().__init__(provider, name)
        self.dimensions = dimensions

    @abstractmethod
    async def embed_batch(self, texts: Sequence[str], input_type: InputType) -> EmbeddingBatch:
        """Vectors for at most `max_batch` texts, in order, and the tokens they took."""

    async def embed(
        self, texts: Sequence[str], input_type: InputType = "document"
    ) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.max_batch):
            batch = await self.embed_batch(texts[start : start + self.max_batch], input_type)
            vectors += batch.vectors
        return vectors


class RerankModel(NamedModel):
    @abstractmethod
    async def rerank(
        self, query: str, documents: Sequence[str], top_n: int | None = None
    ) -> list[RerankResult]:
        """Indexes into `documents` with their scores, best first."""


Model = ChatModel | EmbeddingModel | RerankModel


@dataclass(frozen=True)
class CredentialField:
    name: str
    label: str
    secret: bool = False
    required: bool = False


@dataclass(frozen=True)
class Timeouts:
    connect: float = 10.0
    read: float = 60.0


class Provider(ABC):
    """A source of models, made from its credentials (which may be empty)."""

    name: ClassVar[str]
    label: ClassVar[str]
    model_types: ClassVar[tuple[ModelType, ...]]
    credential_fields: ClassVar[tuple[CredentialField, ...]] = ()

    def __init__(
        self,
        credentials: Mapping[str, str],
        *,
        instance_name: str | None = None,
        models: Sequence[ModelInfo] = (),
        timeouts: Timeouts = Timeouts(),
    ) -> None:
        self.credentials = dict(credentials)
        # A custom endpoint is an instance of a provider under a name of its own.
        self.instance_name = instance_name or self.name
        self.declared_models = list(models)
        self.timeouts = timeouts

    @abstractmethod
    def create(self, model_type: ModelType, model: str) -> Model:
        """A model of this provider; raises UnknownModel for a type it does not serve."""

    def models(self) -> list[ModelInfo]:
        """The models this provider offers (those declared for it, or its known ones)."""
        return self.declared_models

    async def validate(self) -> None:
        """Make a minimal real call with these credentials; raise the provider's error."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release connections (providers with HTTP clients close them)."""
        return

    def unsupported(self, model_type: ModelType, model: str) -> UnknownModel:
        return UnknownModel(f"{self.instance_name}:{model}", f"does not serve {model_type} models")
