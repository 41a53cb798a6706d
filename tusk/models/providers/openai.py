"""`openai`: the OpenAI API and every OpenAI-compatible server (vLLM, Ollama, LM Studio,
llama.cpp, DeepSeek, Groq, Together), and Azure OpenAI when an API version is given.

Streamed chats, the hot path, are plain HTTP (openai_http); embeddings and model listing use the
official SDK. Retries are the runtime's, with one policy for all providers and never after a
stream has started (the SDK's own are off).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from functools import cached_property
from typing import Any

import aiohttp
import openai

from tusk.models.base import ChatModel, CredentialField, EmbeddingModel, Model, Provider
from tusk.models.errors import (
    BadResponse,
    ModelError,
    ModelTimeout,
    ProviderUnavailable,
)
from tusk.models.providers.http_rerank import HttpRerank
from tusk.models.providers.openai_http import (
    auth_headers,
    chat_url,
    http_session,
    not_the_protocol,
    status_error,
    stream_chunks,
)
from tusk.models.providers.openai_wire import (
    chunk_events,
    finish_reason,
    message_to_wire,
    tools_to_wire,
)
from tusk.models.types import (
    ChatEvent,
    ChatRequest,
    EmbeddingBatch,
    Finish,
    InputType,
    ModelInfo,
    ModelType,
)
from tusk.net.tls import ssl_context

DEFAULT_BASE_URL = "https://api.openai.com/v1"
KNOWN_MODELS = [
    ModelInfo("gpt-4o-mini", "llm", context_window=128_000),
    ModelInfo("gpt-4o", "llm", context_window=128_000),
    ModelInfo("gpt-4.1-mini", "llm", context_window=1_047_576),
    ModelInfo("gpt-4.1", "llm", context_window=1_047_576),
    ModelInfo("text-embedding-3-small", "text-embedding", dimensions=1536),
    ModelInfo("text-embedding-3-large", "text-embedding", dimensions=3072),
]


def provider_error(model: str, exc: Exception) -> ModelError:
    """The typed error for anything the SDK or the connection raised."""
    if isinstance(exc, ModelError):
        return exc
    if isinstance(exc, openai.APIStatusError):
        response = exc.response
        return status_error(model, response.status_code, response.headers, response.content)
    if isinstance(exc, openai.APITimeoutError):
        return ModelTimeout(model, "the request timed out")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return ProviderUnavailable(model, f"cannot connect: {' '.join(str(cause).split())}")
    return not_the_protocol(model, " ".join(str(exc).split()) or type(exc).__name__)


class OpenAIChat(ChatModel):
    tells_request_sent = True  # through stream_chunks

    def __init__(self, provider: OpenAIProvider, name: str) -> None:
        super().__init__(provider.instance_name, name)
        self.http = provider.http
        self.url, self.params = chat_url(provider.base_url, name, provider.api_version)

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            # Parameters go in the body as given, including a server's own (vLLM's top_k, ...).
            **request.parameters,
            "model": self.name,
            "messages": [message_to_wire(m) for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            body["tools"] = tools_to_wire(request.tools)
        return body

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        reason = None
        chunks = stream_chunks(
            self.http, self.full_name, self.url, self.params, self._body(request)
        )
        try:
            async for chunk in chunks:
                reason = finish_reason(chunk) or reason
                for event in chunk_events(chunk):
                    yield event
        finally:
            await chunks.aclose()  # also when the caller stops early: the request ends upstream
        if reason is None:
            raise BadResponse(self.full_name, "the stream ended without a finish reason")
        yield Finish(reason)


class OpenAIEmbedding(EmbeddingModel):
    max_batch = 256

    def __init__(self, provider: OpenAIProvider, name: str, dimensions: int | None) -> None:
        super().__init__(provider.instance_name, name, dimensions)
        self.client = provider.client

    async def embed_batch(self, texts: Sequence[str], input_type: InputType) -> EmbeddingBatch:
        try:
            response = await self.client.embeddings.create(
                model=self.name, input=list(texts), encoding_format="float"
            )
        except Exception as exc:
            raise provider_error(self.full_name, exc) from exc
        vectors = [item.embedding for item in sorted(response.data, key=lambda d: d.index)]
        if len(vectors) != len(texts):
            raise BadResponse(self.full_name, f"{len(vectors)} vectors for {len(texts)} texts")
        return EmbeddingBatch(vectors, response.usage.prompt_tokens if response.usage else 0)


class OpenAIProvider(Provider):
    name = "openai"
    label = "OpenAI and OpenAI-compatible"
    model_types = ("llm", "text-embedding", "rerank")
    credential_fields = (
        CredentialField("api_key", "API key", secret=True),
        CredentialField("base_url", "Base URL (for an OpenAI-compatible server)"),
        CredentialField("api_version", "API version (Azure OpenAI only)"),
        CredentialField("organization", "Organization"),
    )

    @property
    def base_url(self) -> str:
        return (self.credentials.get("base_url") or DEFAULT_BASE_URL).rstrip("/")

    @property
    def api_key(self) -> str:
        # Local servers (Ollama, vLLM) take any key; the SDK insists on one.
        return self.credentials.get("api_key") or "unused"

    @property
    def api_version(self) -> str | None:
        return self.credentials.get("api_version") or None

    @cached_property
    def http(self) -> aiohttp.ClientSession:
        """Streamed chats go through this session (see openai_http); the rest through the SDK."""
        return http_session(
            self.base_url,
            auth_headers(
                self.api_key, self.credentials.get("organization"), self.api_version is not None
            ),
            connect=self.timeouts.connect,
            read=self.timeouts.read,
            ssl=ssl_context(),
        )

    @cached_property
    def client(self) -> openai.AsyncOpenAI:
        timeout = openai.Timeout(self.timeouts.read, connect=self.timeouts.connect)
        api_key = self.api_key
        if self.credentials.get("api_version"):
            return openai.AsyncAzureOpenAI(
                api_key=api_key,
                azure_endpoint=self.base_url,
                api_version=self.credentials["api_version"],
                timeout=timeout,
                max_retries=0,
                http_client=openai.DefaultAsyncHttpxClient(verify=ssl_context()),
            )
        return openai.AsyncOpenAI(
            api_key=api_key,
            base_url=self.base_url,
            organization=self.credentials.get("organization") or None,
            timeout=timeout,
            max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(verify=ssl_context()),
        )

    async def aclose(self) -> None:
        if "client" in self.__dict__:
            await self.client.close()
        if "http" in self.__dict__:
            await self.http.close()

    def models(self) -> list[ModelInfo]:
        if self.declared_models or self.credentials.get("base_url"):
            return self.declared_models
        return KNOWN_MODELS

    def create(self, model_type: ModelType, model: str) -> Model:
        if model_type == "llm":
            return OpenAIChat(self, model)
        if model_type == "text-embedding":
            known = {m.name: m.dimensions for m in self.models()}
            return OpenAIEmbedding(self, model, known.get(model))
        return HttpRerank(
            self.instance_name,
            model,
            base_url=self.base_url,
            api_key=self.credentials.get("api_key"),
            timeouts=self.timeouts,
        )

    async def validate(self) -> None:
        """Listing the models needs a valid key and a compatible server, and costs nothing."""
        try:
            await self.client.models.list()
        except Exception as exc:
            raise provider_error(self.instance_name, exc) from exc
