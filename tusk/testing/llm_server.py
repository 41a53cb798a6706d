"""Machinery shared by the fake model providers (`FakeOpenAI`, `FakeAnthropic`): a Starlette app
served by uvicorn from a background thread, the requests it received, and the queue of scripted
replies and faults that a test sets up before calling it."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import re
import socket
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

HOST = "127.0.0.1"
START_TIMEOUT = 10.0
ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    json: Any  # the parsed body, or None when it is not JSON
    client: str = ""  # the caller's address and port: one per connection


@dataclass(frozen=True)
class ToolCall:
    """A tool call in a scripted reply; an id is generated when `id` is None."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    id: str | None = None

    def arguments_json(self) -> str:
        return json.dumps(self.arguments, separators=(",", ":"))


@dataclass(frozen=True)
class Reply:
    """One scripted chat reply, in no particular protocol."""

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    chunks: tuple[str, ...] | None = None
    delay: float = 0.0
    ttft: float = 0.0
    usage: tuple[int, int] | None = None
    finish_reason: str | None = None
    cut_after: int | None = None

    def pieces(self) -> list[str]:
        return list(self.chunks) if self.chunks is not None else split_words(self.text)

    def completion_tokens(self) -> int:
        calls = sum(1 + len(fragments(call.arguments_json())) for call in self.tool_calls)
        return words(self.text) + calls


@dataclass(frozen=True)
class Failure:
    """An HTTP error answer; `error_type` and `code` are already the protocol's values."""

    status: int
    message: str
    error_type: str
    code: str | None = None
    retry_after: float | None = None

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"retry-after": f"{self.retry_after:g}"}


@dataclass(frozen=True)
class Garbage:
    """A 200 answer whose body (or stream event) is not JSON."""


Fault = Failure | Garbage


class StreamCut(Exception):
    """Raised inside a streamed body: uvicorn then drops the connection without ending the body."""


def split_words(text: str) -> list[str]:
    """`text` in word-ish pieces that keep their leading spaces, as tokens do."""
    return re.findall(r"\s*\S+|\s+", text)


def fragments(text: str) -> list[str]:
    """`text` (a JSON document) in the small pieces that a model streams tool arguments in."""
    return re.findall(r"\w+|\W+", text)


def words(text: str) -> int:
    return len(text.split())


def text_of(content: Any) -> str:
    """The text of a message's `content`: a string, or a list of parts with `text` (or, for tool
    results, nested `content`)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(_part_text(part) for part in content)
    return ""


def _part_text(part: Any) -> str:
    if not isinstance(part, dict):
        return ""
    text = part.get("text")
    return text if isinstance(text, str) else text_of(part.get("content"))


def last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return text_of(message.get("content"))
    return ""


def message_chars(messages: list[Any]) -> int:
    return sum(len(text_of(m.get("content"))) for m in messages if isinstance(m, dict))


def message_words(messages: list[Any]) -> int:
    return sum(words(text_of(m.get("content"))) for m in messages if isinstance(m, dict))


def tool_call_id(call: ToolCall, prefix: str, reply_id: str, index: int) -> str:
    if call.id is not None:
        return call.id
    digest = hashlib.sha256(f"{reply_id}:{index}:{call.name}".encode()).hexdigest()
    return prefix + digest[:24]


FrameKind = Literal["frame", "delta", "end"]
Frame = tuple[FrameKind, bytes]


async def paced(frames: Iterable[Frame], reply: Reply) -> AsyncIterator[bytes]:
    """The frames of a stream, timed by `reply`: `ttft` before the first, `delay` between deltas
    (the content pieces); with `cut_after`, the stream breaks after that many deltas, or before
    the first end frame, whichever comes first."""
    await asyncio.sleep(reply.ttft)
    sent = 0
    for kind, data in frames:
        if kind == "delta":
            if sent == reply.cut_after:
                raise StreamCut(f"scripted cut after {sent} chunks")
            if sent:
                await asyncio.sleep(reply.delay)
            sent += 1
        elif kind == "end" and reply.cut_after is not None:
            raise StreamCut(f"scripted cut after {sent} chunks")
        yield data


def sse(data: dict[str, Any], event: str | None = None) -> bytes:
    """One server-sent event carrying `data` as JSON, named `event` if given."""
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def event_stream(body: AsyncIterator[bytes]) -> StreamingResponse:
    headers = {"cache-control": "no-cache"}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def garbage_response(stream: bool, event: bytes) -> Response:
    if stream:
        return event_stream(_once(event))
    return Response(b'{"id": "broken', media_type="application/json")


class _HideStreamCuts(logging.Filter):
    """A scripted cut is not a server error worth a traceback in the test log."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not _is_cut(error)


def _is_cut(error: BaseException | None) -> bool:
    if isinstance(error, BaseExceptionGroup):
        return any(_is_cut(inner) for inner in error.exceptions)
    return isinstance(error, StreamCut)


_HIDE_STREAM_CUTS = _HideStreamCuts()


class BackgroundServer:
    """Serves an ASGI app with uvicorn on a loopback port from a daemon thread, so that sync tests,
    async tests (whose own loop must stay free) and benchmarks can all call it."""

    def __init__(self, app: ASGIApp, name: str) -> None:
        self._app = app
        self._name = name
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{self._name} is not running; use `with` or start()")
        return self._port

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self._name} is already running")
        logging.getLogger("uvicorn.error").addFilter(_HIDE_STREAM_CUTS)
        # Binding here, not in uvicorn, leaves no window in which another process takes the port.
        sock = socket.socket()
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        server = uvicorn.Server(self._config(port))
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=self._name, daemon=True
        )
        thread.start()
        self._server, self._thread = server, thread
        self._wait_started(server, thread)
        self._port = port

    def _config(self, port: int) -> uvicorn.Config:
        # log_config=None: the test process's logging is not ours to reconfigure.
        return uvicorn.Config(
            self._app,
            host=HOST,
            port=port,
            log_level="warning",
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )

    def _wait_started(self, server: uvicorn.Server, thread: threading.Thread) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self._name} did not start")
            time.sleep(0.005)

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = self._port = None
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout=3)
        if thread.is_alive():  # a client holds a stream open: stop waiting for it
            server.force_exit = True
            thread.join(timeout=5)


class Script:
    """Scripted replies and faults, and the requests received: written by the test's thread and
    read by the server's, hence the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._replies: deque[Reply] = deque()
        self._faults: deque[Fault] = deque()
        self._requests: list[RecordedRequest] = []

    def add_reply(self, reply: Reply) -> None:
        with self._lock:
            self._replies.append(reply)

    def add_fault(self, fault: Fault, times: int) -> None:
        with self._lock:
            self._faults.extend([fault] * times)

    def next_reply(self) -> Reply | None:
        with self._lock:
            return self._replies.popleft() if self._replies else None

    def next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._replies.clear()
            self._faults.clear()
            self._requests.clear()


Handler = Callable[[RecordedRequest], Awaitable[Response]]


class FakeServer:
    """A local server that speaks one provider's protocol. Subclasses supply the routes, the auth
    check and the error body; this class runs the server and keeps the script."""

    base_path = ""
    garbage_event = b"data: {not json\n\n"
    not_found_type = "invalid_request_error"

    def __init__(
        self, *, api_key: str | None, models: Sequence[str], context_chars: int | None
    ) -> None:
        self.api_key = api_key
        self.models = tuple(models)
        self.context_chars = context_chars
        self._script = Script()
        self._ids = itertools.count(1)
        self._runner = BackgroundServer(Starlette(routes=self.routes()), type(self).__name__)

    # Running.

    def start(self) -> Self:
        self._runner.start()
        return self

    def stop(self) -> None:
        self._runner.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The server's root, without the protocol's path prefix."""
        return f"http://{HOST}:{self._runner.port}"

    @property
    def base_url(self) -> str:
        """What the provider's SDK takes as `base_url`."""
        return self.url + self.base_path

    @property
    def requests(self) -> list[RecordedRequest]:
        """The requests received so far, oldest first (a copy)."""
        return self._script.requests()

    # Scripting.

    def reply(
        self,
        text: str,
        *,
        chunks: Sequence[str] | None = None,
        delay: float = 0.0,
        ttft: float = 0.0,
        usage: tuple[int, int] | None = None,
        finish_reason: str | None = None,
        cut_after: int | None = None,
    ) -> None:
        """Queue the reply to one chat call (FIFO). `chunks` (the streamed pieces) must join to
        `text`; `ttft` is waited before the first chunk or the whole body, `delay` between
        chunks; with `cut_after`, a stream drops its connection after that many content chunks
        (text pieces and tool-call deltas), never sending its end. `usage` is (prompt,
        completion) tokens, word counts by default. `finish_reason` defaults to a normal end and
        is translated between the protocols ("stop" <-> "end_turn", "length" <-> "max_tokens",
        "tool_calls" <-> "tool_use")."""
        self.reply_tool_calls(
            (),
            text,
            chunks=chunks,
            delay=delay,
            ttft=ttft,
            usage=usage,
            finish_reason=finish_reason,
            cut_after=cut_after,
        )

    def reply_tool_calls(
        self,
        calls: Sequence[ToolCall],
        text: str | None = None,
        *,
        chunks: Sequence[str] | None = None,
        delay: float = 0.0,
        ttft: float = 0.0,
        usage: tuple[int, int] | None = None,
        finish_reason: str | None = None,
        cut_after: int | None = None,
    ) -> None:
        """Queue a reply whose assistant message makes `calls` (after `text`, if any)."""
        text = text or ""
        if chunks is not None and "".join(chunks) != text:
            raise ValueError(f"chunks {list(chunks)!r} do not join to the text {text!r}")
        reply = Reply(
            text=text,
            tool_calls=tuple(calls),
            chunks=None if chunks is None else tuple(chunks),
            delay=delay,
            ttft=ttft,
            usage=usage,
            finish_reason=finish_reason,
            cut_after=cut_after,
        )
        self._script.add_reply(reply)

    def garbage(self, times: int = 1) -> None:
        """The next `times` model calls answer 200 with a body (or an event) that is not JSON."""
        self._script.add_fault(Garbage(), times)

    def clear(self) -> None:
        """Forget queued replies and faults and the recorded requests."""
        self._script.clear()

    # For subclasses.

    def routes(self) -> list[Route]:
        raise NotImplementedError

    def refuse(self, request: RecordedRequest) -> Response | None:
        """The answer to a request that fails authentication, or None."""
        return None

    def error(
        self,
        status: int,
        message: str,
        *,
        error_type: str,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        raise NotImplementedError

    def bad_request(self, message: str, param: str | None = None) -> Response:
        return self.error(400, message, error_type="invalid_request_error", param=param)

    def model_not_found(self, model: str) -> Response:
        raise NotImplementedError

    def route(self, path: str, handler: Handler, methods: Sequence[str] = ("POST",)) -> Route:
        async def endpoint(request: Request) -> Response:
            recorded = await _recorded(request)
            self._script.record(recorded)
            return self.refuse(recorded) or await handler(recorded)

        return Route(path, endpoint, methods=list(methods))

    def admit(self, request: RecordedRequest) -> Response | None:
        """The answer that ends a model call before any work: a scripted fault, a body that is
        not a JSON object, a missing or unknown model. None lets the call go on."""
        body = request.json
        fault = self._script.next_fault()
        if isinstance(fault, Garbage):
            stream = isinstance(body, dict) and body.get("stream") is True
            return garbage_response(stream, self.garbage_event)
        if fault is not None:
            return self.error(
                fault.status,
                fault.message,
                error_type=fault.error_type,
                code=fault.code,
                headers=fault.headers(),
            )
        if not isinstance(body, dict):
            return self.bad_request("The body of the request is not a JSON object.")
        return self._check_model(body.get("model"))

    def _check_model(self, model: Any) -> Response | None:
        if not isinstance(model, str) or not model:
            return self.bad_request("model: a model name is required", param="model")
        if self.models and model not in self.models:
            return self.model_not_found(model)
        return None

    def next_reply(self, last_user: str) -> Reply:
        """The scripted reply, or an echo of the last user message when none is queued."""
        return self._script.next_reply() or Reply(f"Echo: {last_user}")

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):024x}"

    def catch_all(self) -> Route:
        """The last route: any other path is recorded and answered 404 in the protocol's shape,
        which makes a wrong base URL plain to see."""
        return self.route("/{rest:path}", self._unknown_path, ALL_METHODS)

    async def _unknown_path(self, request: RecordedRequest) -> Response:
        message = f"Invalid URL ({request.method} {request.path})"
        return self.error(404, message, error_type=self.not_found_type)


async def _recorded(request: Request) -> RecordedRequest:
    body = await request.body()
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    headers = {name.lower(): value for name, value in request.headers.items()}
    client = f"{request.client.host}:{request.client.port}" if request.client else ""
    return RecordedRequest(request.method, request.url.path, headers, body, parsed, client)
