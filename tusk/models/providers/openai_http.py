"""OpenAI's streamed chat completions over plain HTTP, the hot path of every chat.

The official SDK turns every chunk into typed objects and every request's parameters through its
type annotations: about a fifth of the API process's CPU in a streamed chat, and a millisecond
before the request leaves. Here the request is one JSON body, and each chunk one `json.loads`;
the SDK still serves the calls that are not hot (embeddings, listing models).

The client is aiohttp. A streamed call of 5 chunks took 0.95 ms of CPU through httpx2 (the SDKs'
client, already a third of httpx's) and takes 0.3 ms; 44 chunks, 1.7 and 0.7 ms. And it sends a
request's headers and body in one write, where httpx2 (through anyio) yields to the event loop
between the two: under load the body reached the server a turn of the loop later, and the
model's time to first token started then.

The errors are OpenAI's: an HTTP status with `{"error": {"message", "type", "code"}}`, or an
`error` object in the stream."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

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


def transport_error(model: str, exc: aiohttp.ClientError | TimeoutError) -> ModelError:
    """The typed error of a request that got no answer."""
    if isinstance(exc, TimeoutError):
        return ModelTimeout(model, "the request timed out")
    detail = " ".join(str(exc.__cause__ or exc).split()) or type(exc).__name__
    return ProviderUnavailable(model, f"cannot connect: {detail}")


def not_the_protocol(model: str, detail: str) -> BadResponse:
    return BadResponse(model, f"the server's answer is not OpenAI's protocol: {detail}")


def http_session(
    base_url: str, headers: Mapping[str, str], *, connect: float, read: float, ssl: Any
) -> aiohttp.ClientSession:
    """The session of a provider's streamed chats to `base_url`: through the proxy that the
    environment names for it; a read timeout between chunks, not on the whole stream."""
    proxy, proxy_auth = env_proxy(base_url)
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1000, ssl=ssl),
        headers={**headers, "Content-Type": "application/json"},
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read),
        trace_configs=[_TELLING_REQUEST_SENT],
        proxy=proxy,
        proxy_auth=proxy_auth,
    )


def env_proxy(url: str) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The proxy that `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` name for `url`, and its
    credentials, read once per provider. (aiohttp's `trust_env` reads them, and `~/.netrc`, at
    every request, in two hops to a worker thread: under load they held each request back
    30 ms at p50 before it left.)"""
    try:
        return get_env_proxy_for_url(URL(url))
    except LookupError:
        return None, None


async def _tell_sent(_session: Any, context: Any, _params: Any) -> None:
    """The body's chunk is about to be written, in this same step of the event loop (with
    the headers: a small body goes out in one write)."""
    if context.trace_request_ctx is not None:
        context.trace_request_ctx()


_TELLING_REQUEST_SENT = aiohttp.TraceConfig()
_TELLING_REQUEST_SENT.on_request_chunk_sent.append(_tell_sent)
_TELLING_REQUEST_SENT.freeze()


async def stream_chunks(
    session: aiohttp.ClientSession,
    model: str,
    url: str,
    params: Mapping[str, str],
    body: Mapping[str, Any],
) -> AsyncGenerator[dict[str, Any]]:
    """The `chat.completion.chunk` objects of a streamed request, as parsed JSON. Closing the
    iterator early closes the response, which ends the request upstream. The caller's
    `request_sent` callback is called once the request's body is written."""
    data = json.dumps(body, ensure_ascii=False).encode()
    try:
        response = await session.post(
            url, params=params or None, data=data, trace_request_ctx=request_sent.get()
        )
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise transport_error(model, exc) from exc
    try:
        if response.status >= 400:
            raw = await response.read()
            raise status_error(model, response.status, response.headers, raw)
        async for chunk in _sse_data(model, response):
            yield chunk
    except TimeoutError:
        raise ModelTimeout(model, "the stream stalled past the read timeout") from None
    except aiohttp.ClientError as exc:
        raise broken_stream(model, exc) from exc
    finally:
        response.release()  # the connection is kept if the body was read to its end


async def _lines(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The body's lines, however long (aiohttp's own line reader refuses lines over 128 KiB,
    and a server may send a whole answer as one event)."""
    rest = b""
    async for data in response.content.iter_any():
        *lines, rest = (rest + data).split(b"\n")
        for line in lines:
            yield line.rstrip(b"\r")
    if rest:
        yield rest


async def _sse_data(model: str, response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """The JSON objects of the stream's `data:` lines, up to `[DONE]`; the body is then read
    to its end, so that its connection goes back to the pool (a response closed before its end
    takes its connection with it, and the next call would connect anew)."""
    event = b""
    lines = _lines(response)
    async for line in lines:
        if line.startswith(b"data:"):
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            yield _chunk(model, data, event)
        elif line.startswith(b"event:"):
            event = line[6:].strip()
        elif not line:
            event = b""
    async for _ in lines:
        pass


def _chunk(model: str, data: bytes, event: bytes) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except ValueError:
        raise not_the_protocol(model, f"a stream event is not JSON: {_text(data)!r}") from None
    if not isinstance(chunk, dict):
        raise not_the_protocol(model, f"a stream event is not an object: {_text(data)!r}")
    if event == b"error" or "error" in chunk:
        message, _ = _error_fields(data)
        raise ProviderUnavailable(model, f"the server sent an error in the stream: {message}")
    return chunk


def _text(data: bytes) -> str:
    return data[:200].decode(errors="replace")
