"""Rerank through the common `/rerank` HTTP shape (Cohere, Jina, vLLM; Text Embeddings Inference
with `api_style="tei"`), and the `rerank` provider that serves such an endpoint."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from tusk.models.base import CredentialField, Model, Provider, RerankModel, Timeouts
from tusk.models.errors import (
    BadRequest,
    BadResponse,
    InvalidCredentials,
    ModelError,
    ModelTimeout,
    ProviderUnavailable,
    RateLimited,
    UnknownModel,
)
from tusk.models.resilience import parse_retry_after
from tusk.models.types import ModelType, RerankResult
from tusk.net.tls import ssl_context


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error", body.get("message", body))
        if isinstance(error, dict):
            return str(error.get("message", error))
        return str(error)
    return str(body)


def status_error(model: str, response: httpx.Response) -> ModelError:
    message = f"{response.status_code}: {_error_message(response)}"
    retry_after = parse_retry_after(dict(response.headers))
    if response.status_code in (401, 403):
        return InvalidCredentials(model, message)
    if response.status_code == 429:
        return RateLimited(model, message, retry_after=retry_after)
    if response.status_code == 404:
        return UnknownModel(model, f"{message} (is the base URL a /rerank endpoint's parent?)")
    if response.status_code >= 500:
        return ProviderUnavailable(model, message, retry_after=retry_after)
    return BadRequest(model, message)


def parse_results(model: str, body: Any) -> list[RerankResult]:
    """Cohere/Jina/vLLM answer {"results": [{index, relevance_score}]}; TEI, [{index, score}]."""
    items = body.get("results") if isinstance(body, dict) else body
    if not isinstance(items, list):
        raise BadResponse(model, "the answer is not in the /rerank shape")
    try:
        results = [
            RerankResult(int(item["index"]), float(item.get("relevance_score", item.get("score"))))
            for item in items
        ]
    except (TypeError, KeyError, ValueError):
        raise BadResponse(model, "the answer is not in the /rerank shape") from None
    return sorted(results, key=lambda r: r.score, reverse=True)


class HttpRerank(RerankModel):
    def __init__(
        self,
        provider: str,
        name: str,
        *,
        base_url: str,
        api_key: str | None,
        timeouts: Timeouts,
        api_style: str = "cohere",
    ) -> None:
        super().__init__(provider, name)
        self.url = f"{base_url.rstrip('/')}/rerank"
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = httpx.Timeout(timeouts.read, connect=timeouts.connect)
        self.api_style = api_style

    def _body(self, query: str, documents: Sequence[str], top_n: int | None) -> dict[str, Any]:
        if self.api_style == "tei":
            return {"query": query, "texts": list(documents), "raw_scores": False}
        body: dict[str, Any] = {"model": self.name, "query": query, "documents": list(documents)}
        if top_n is not None:
            body["top_n"] = top_n
        return body

    async def rerank(
        self, query: str, documents: Sequence[str], top_n: int | None = None
    ) -> list[RerankResult]:
        if not documents:
            return []
        try:
            async with httpx.AsyncClient(timeout=self.timeout, verify=ssl_context()) as client:
                response = await client.post(
                    self.url, json=self._body(query, documents, top_n), headers=self.headers
                )
        except httpx.TimeoutException:
            raise ModelTimeout(self.full_name, "the request timed out") from None
        except httpx.TransportError as exc:
            raise ProviderUnavailable(self.full_name, f"cannot connect: {exc}") from None
        if response.status_code != 200:
            raise status_error(self.full_name, response)
        try:
            body = response.json()
        except ValueError:
            raise BadResponse(self.full_name, "the answer is not JSON") from None
        return parse_results(self.full_name, body)[:top_n]


class RerankProvider(Provider):
    """Any server with a `/rerank` endpoint: Cohere, Jina, Text Embeddings Inference, vLLM."""

    name = "rerank"
    label = "Rerank endpoint (/rerank)"
    model_types = ("rerank",)
    credential_fields = (
        CredentialField("base_url", "Base URL (…/rerank is appended)", required=True),
        CredentialField("api_key", "API key", secret=True),
        CredentialField("api_style", "cohere (Cohere, Jina, vLLM) or tei"),
    )

    def create(self, model_type: ModelType, model: str) -> Model:
        if model_type != "rerank":
            raise self.unsupported(model_type, model)
        base_url = self.credentials.get("base_url")
        if not base_url:
            raise InvalidCredentials(f"{self.instance_name}:{model}", "base_url is required")
        return HttpRerank(
            self.instance_name,
            model,
            base_url=base_url,
            api_key=self.credentials.get("api_key"),
            timeouts=self.timeouts,
            api_style=self.credentials.get("api_style") or "cohere",
        )

    async def validate(self) -> None:
        declared = self.models()
        model = self.create("rerank", declared[0].name if declared else "rerank")
        assert isinstance(model, RerankModel)
        await model.rerank("ping", ["ping"])
