"""OpenAI's streamed chat completions over plain HTTP, the hot path of every chat.

The official SDK turns every chunk into typed objects and every request's parameters through its
type annotations: about a fifth of the API process's CPU in a streamed chat, and a millisecond
before the request leaves. Here the request is one JSON body, and each chunk one `json.loads`;
the SDK still serves the calls that are not hot (embeddings, listing models).

The client is httpx2, the SDKs' own: with many concurrent calls, httpx's connection pool scans
all its connections, several times per request (a tenth of the API's CPU with 60 connections,
against a workflow's LLM node); httpx2's pool does it once. 15% more workflow runs per second
at 60 clients.

The errors are OpenAI's: an HTTP status with `{"error": {"message", "type", "code"}}`, or an
`error` object in the stream."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import httpx2

from tusk.models.base import request_sent
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

ERROR_BODY_CHARS = 2000  # of a body that is not OpenAI's error object


def chat_url(base_url: str, model: str, api_version: str | None) -> tuple[str, dict[str, str]]:
    """Where the chat completions of `model` are posted, and the query string (Azure OpenAI
    names the deployment in the path and the API version in the query)."""
    if api_version:
        return f"{base_url}/openai/deployments/{model}/chat/completions", {
            "api-version": api_version
        }
    return f"{base_url}/chat/completions", {}


def auth_headers(api_key: str, organization: str | None, azure: bool) -> dict[str, str]:
    if azure:
        return {"api-key": api_key}
    headers = {"Authorization": f"Bearer {api_key}"}
    if organization:
        headers["OpenAI-Organization"] = organization
    return headers


def _error_fields(body: bytes) -> tuple[str, str | None]:
    """The message and code of an error body (OpenAI's shape, or whatever the server sent)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        code = error.get("code")
        return str(error.get("message") or parsed), str(code) if code is not None else None
    if isinstance(error, str):
        return error, None
    text = body.decode(errors="replace").strip()[:ERROR_BODY_CHARS]
    return text or "(empty body)", None


def status_error(model: str, status: int, headers: Mapping[str, str], body: bytes) -> ModelError:
    """The typed error of a refused request, keeping the provider's words."""
    message, code = _error_fields(body)
    message = f"Error code: {status} - {message}"
    retry_after = parse_retry_after(dict(headers))
    if status in (401, 403):
        return InvalidCredentials(model, message)
    if status == 429:
        return RateLimited(model, message, retry_after=retry_after)
    if code == "context_length_exceeded" or "maximum context length" in message:
        return ContextTooLong(model, message)
    if status == 404:
        if code == "model_not_found" or "model" in message.lower():
            return UnknownModel(model, message)
        return BadResponse(model, f"404 from the server: is it an OpenAI-compatible API? {message}")
    if status >= 500:
        return ProviderUnavailable(model, message, retry_after=retry_after)
    return BadRequest(model, message)


def transport_error(model: str, exc: httpx2.HTTPError) -> ModelError:
    """The typed error of a request that got no answer."""
    if isinstance(exc, httpx2.TimeoutException):
        return ModelTimeout(model, "the request timed out")
    detail = " ".join(str(exc.__cause__ or exc).split()) or type(exc).__name__
    return ProviderUnavailable(model, f"cannot connect: {detail}")


def not_the_protocol(model: str, detail: str) -> BadResponse:
    return BadResponse(model, f"the server's answer is not OpenAI's protocol: {detail}")


async def stream_chunks(
    client: httpx2.AsyncClient,
    model: str,
    url: str,
    params: Mapping[str, str],
    body: Mapping[str, Any],
) -> AsyncGenerator[dict[str, Any]]:
    """The `chat.completion.chunk` objects of a streamed request, as parsed JSON. Closing the
    iterator early closes the response, which ends the request upstream. The caller's
    `request_sent` callback is called once the request's body is written."""
    callback = request_sent.get()
    extensions = {"trace": _calling_when_sent(callback)} if callback is not None else None
    request = client.build_request("POST", url, params=params, json=body, extensions=extensions)
    try:
        response = await client.send(request, stream=True)
    except httpx2.HTTPError as exc:
        raise transport_error(model, exc) from exc
    try:
        if response.status_code >= 400:
            raw = await response.aread()
            raise status_error(model, response.status_code, response.headers, raw)
        async for chunk in _sse_data(model, response):
            yield chunk
    except httpx2.HTTPError as exc:
        raise broken_stream(model, exc) from exc
    finally:
        await response.aclose()


def _calling_when_sent(
    callback: Callable[[], None],
) -> Callable[[str, dict[str, Any]], Awaitable[None]]:
    """An httpcore `trace` hook that calls `callback` when the request body is written."""

    async def trace(event: str, info: dict[str, Any]) -> None:
        if event.endswith("send_request_body.complete"):
            callback()

    return trace


async def _sse_data(model: str, response: httpx2.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects of the stream's `data:` lines, up to `[DONE]`; the body is then read
    to its end, so that its connection goes back to the pool (a response closed before its end
    takes its connection with it, and the next call would connect anew)."""
    event = ""
    lines = response.aiter_lines()
    async for line in lines:
        if line.startswith("data:"):
            data = line[5:].strip()
            if data == "[DONE]":
                break
            yield _chunk(model, data, event)
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif not line:
            event = ""
    async for _ in lines:
        pass


def _chunk(model: str, data: str, event: str) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except ValueError:
        raise not_the_protocol(model, f"a stream event is not JSON: {data[:200]!r}") from None
    if not isinstance(chunk, dict):
        raise not_the_protocol(model, f"a stream event is not an object: {data[:200]!r}")
    if event == "error" or "error" in chunk:
        message, _ = _error_fields(data.encode())
        raise ProviderUnavailable(model, f"the server sent an error in the stream: {message}")
    return chunk
