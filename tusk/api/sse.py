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


async def _with_pings(payloads: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    yield PING
    next_payload = asyncio.ensure_future(anext(payloads, None))
    try:
        while True:
            done, _ = await asyncio.wait({next_payload}, timeout=PING_EVERY)
            if not done:
                yield PING
                continue
            payload = next_payload.result()
            if payload is None:
                return
            yield frame(payload)
            next_payload = asyncio.ensure_future(anext(payloads, None))
    finally:
        next_payload.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
            await next_payload


def sse_response(payloads: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(_with_pings(payloads), media_type="text/event-stream", headers=headers)
