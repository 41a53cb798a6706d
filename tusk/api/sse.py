"""Server-sent events as Dify writes them: `data: {json}\\n\\n` per event, and `event: ping`
at once and then whenever the stream has been quiet for a while."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

PING = b"event: ping\n\n"
PING_EVERY = 10.0


def frame(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False, default=str).encode() + b"\n\n"


_END = object()


async def _with_pings(payloads: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """The payloads, read by a task of their own into a queue, which is read here with a
    timeout for the pings (a timeout cannot cut the payloads' own iterator short, but it can a
    wait on a queue). A task and a wait per payload cost more than the rest of its relay."""
    yield PING
    queue: asyncio.Queue[Any] = asyncio.Queue()
    reader = asyncio.create_task(_read_into(payloads, queue))
    try:
        while True:
            try:
                async with asyncio.timeout(PING_EVERY):
                    payload = await queue.get()
            except TimeoutError:
                yield PING
                continue
            if payload is _END:
                reader.result()  # raises what the payloads raised
                return
            yield frame(payload)
    finally:
        reader.cancel()  # the client has gone: the payloads' iterator is closed
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def _read_into(payloads: AsyncIterator[dict[str, Any]], queue: asyncio.Queue[Any]) -> None:
    try:
        async for payload in payloads:
            queue.put_nowait(payload)
    finally:
        queue.put_nowait(_END)


def sse_response(payloads: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(_with_pings(payloads), media_type="text/event-stream", headers=headers)
