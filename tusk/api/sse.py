"""Server-sent events as Dify writes them: `data: {json}\\n\\n` per event, and `event: ping`
at once and then whenever the stream has been quiet for a while.

The events are sent from the request's own task, as soon as each is produced. A second task
waits for the client to leave, which ends the stream (and so stops what produces the events),
and sends the pings. Starlette's streaming response would start a task of its own to send, and
a reader task was needed to time the pings: under load each such hand-over waits a turn of the
event loop, on the way of every event, the first included."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

PING = b"event: ping\n\n"
PING_EVERY = 10.0
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

Payloads = AsyncGenerator[dict[str, Any]]


def frame(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False, default=str).encode() + b"\n\n"


class _Sender:
    """Writes of the stream and of its pings, one at a time; remembers when it last wrote."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._lock = asyncio.Lock()
        self._clock = asyncio.get_running_loop().time
        self.last = self._clock()

    def quiet(self) -> bool:
        return self._clock() >= self.last + PING_EVERY

    async def body(self, data: bytes, more: bool = True) -> None:
        async with self._lock:
            await self._send({"type": "http.response.body", "body": data, "more_body": more})
            self.last = self._clock()


class EventStream(StreamingResponse):
    """The response of a streamed call, sending `body_iterator`'s payloads as events: `first`
    before them, `last` after them if they all came, and `ping` when the stream is quiet
    (Dify's stream by default; OpenAI's pings with a comment and ends with `[DONE]`)."""

    def __init__(
        self, payloads: Payloads, *, first: bytes = PING, ping: bytes = PING, last: bytes = b""
    ) -> None:
        # Its body is payloads, framed as they are sent (`body_iterator` stays replaceable).
        super().__init__(payloads, media_type="text/event-stream", headers=HEADERS)  # type: ignore[arg-type]
        self.first, self.ping, self.last = first, ping, last
        self.client_left = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
        await send(start)
        sender = _Sender(send)
        streaming = asyncio.current_task()
        assert streaming is not None
        watcher = asyncio.create_task(self._watch(receive, sender, streaming))
        try:
            await self._send_all(sender)
        except asyncio.CancelledError:
            # Cancelled by the watcher as the client left: the stream ends here, quietly,
            # unless the task is being cancelled for another reason too.
            if not self.client_left or streaming.uncancel() > 0:
                raise
        finally:
            watcher.cancel()

    async def _send_all(self, sender: _Sender) -> None:
        payloads: Payloads = self.body_iterator  # type: ignore[assignment]
        async with contextlib.aclosing(payloads):  # stopped early, it stops what it reads
            if self.first:
                await sender.body(self.first)
            async for payload in payloads:
                await sender.body(frame(payload))
        await sender.body(self.last, more=False)

    async def _watch(self, receive: Receive, sender: _Sender, streaming: asyncio.Task[Any]) -> None:
        """Cancel the stream when the client leaves; ping when it has been quiet."""
        while True:
            try:
                async with asyncio.timeout_at(sender.last + PING_EVERY):
                    message = await receive()
            except TimeoutError:
                if sender.quiet():
                    await sender.body(self.ping)
                continue
            if message["type"] == "http.disconnect":
                self.client_left = True
                streaming.cancel()
                return


def sse_response(payloads: Payloads) -> EventStream:
    return EventStream(payloads)
