"""The SSE response: events in order, pings when quiet, and a client that leaves ends the
stream and closes what produces it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from tusk.api import sse
from tusk.api.sse import PING, EventStream


class Client:
    """An ASGI server's side of one request: what was sent, and a switch to leave."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.started: dict[str, Any] = {}
        self.left = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.left.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.started = message
        else:
            self.sent.append(message["body"])

    def events(self) -> list[Any]:
        return [
            json.loads(part[6:]) if part.startswith(b"data: ") else part
            for part in self.sent
            if part
        ]


async def respond(stream: EventStream, client: Client) -> None:
    await stream({"type": "http"}, client.receive, client.send)  # type: ignore[arg-type]


async def test_payloads_are_sent_as_data_events_after_a_first_ping() -> None:
    async def payloads() -> AsyncGenerator[dict[str, Any]]:
        yield {"event": "message", "answer": "Hé"}
        yield {"event": "message_end"}

    client = Client()
    await respond(EventStream(payloads()), client)
    assert client.events() == [PING, {"event": "message", "answer": "Hé"}, {"event": "message_end"}]
    assert client.sent[-1] == b""  # the end of the body
    assert (b"content-type", b"text/event-stream; charset=utf-8") in client.started["headers"]


async def test_a_quiet_stream_is_pinged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "PING_EVERY", 0.05)

    async def payloads() -> AsyncGenerator[dict[str, Any]]:
        yield {"n": 1}
        await asyncio.sleep(0.23)
        yield {"n": 2}

    client = Client()
    await respond(EventStream(payloads()), client)
    events = client.events()
    assert events[:2] == [PING, {"n": 1}]
    assert events[-1] == {"n": 2}
    assert 2 <= events.count(PING) - 1 <= 5  # one about every 50 ms of the 230 ms of quiet


async def test_a_client_that_leaves_ends_the_stream_and_closes_its_source() -> None:
    closed = asyncio.Event()

    async def payloads() -> AsyncGenerator[dict[str, Any]]:
        try:
            yield {"n": 1}
            await asyncio.sleep(30)
            yield {"n": 2}
        finally:
            closed.set()

    client = Client()
    responding = asyncio.create_task(respond(EventStream(payloads()), client))
    while len(client.sent) < 2:
        await asyncio.sleep(0.01)
    client.left.set()
    await asyncio.wait_for(responding, 2)  # ends without an error
    assert closed.is_set()
    assert client.events() == [PING, {"n": 1}]


async def test_a_stream_cancelled_for_another_reason_is_cancelled() -> None:
    async def payloads() -> AsyncGenerator[dict[str, Any]]:
        yield {"n": 1}
        await asyncio.sleep(30)
        yield {"n": 2}

    client = Client()
    responding = asyncio.create_task(respond(EventStream(payloads()), client))
    while len(client.sent) < 2:
        await asyncio.sleep(0.01)
    responding.cancel()
    with pytest.raises(asyncio.CancelledError):
        await responding


async def test_openais_stream_has_no_first_ping_and_ends_with_done() -> None:
    async def payloads() -> AsyncGenerator[dict[str, Any]]:
        yield {"choices": []}

    client = Client()
    stream = EventStream(payloads(), first=b"", ping=b": ping\n\n", last=b"data: [DONE]\n\n")
    await respond(stream, client)
    assert client.sent == [b'data: {"choices": []}\n\n', b"data: [DONE]\n\n"]
