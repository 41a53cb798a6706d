"""Publish/subscribe between processes with LISTEN/NOTIFY.

Every process LISTENs on one channel on a connection of its own; a message carries its topic,
and each process hands it to the local subscribers of that topic. Subscribing is therefore
instant (no LISTEN round trip), and the listening connection is re-opened after a database
restart. Delivery is at most once, to subscribers present when it arrives: state that must
survive goes in a table, and the message only says to look.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from sqlalchemy import text

from tusk.db.kv import Db

log = logging.getLogger(__name__)

CHANNEL = "tusk_events"
MAX_PAYLOAD_BYTES = 7900  # PostgreSQL's limit is 8000 bytes per notification
QUEUE_SIZE = 1000


class PayloadTooLarge(ValueError):
    pass


def encode(topic: str, data: Any) -> str:
    payload = json.dumps({"topic": topic, "data": data}, separators=(",", ":"))
    if len(payload.encode()) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(f"a message on {topic!r} is over {MAX_PAYLOAD_BYTES} bytes")
    return payload


async def publish(db: Db, topic: str, data: Any) -> None:
    """Send `data` to the subscribers of `topic` in every process, when `db` commits."""
    await db.execute(
        text("SELECT pg_notify(:channel, :payload)"),
        {"channel": CHANNEL, "payload": encode(topic, data)},
    )


class Subscription:
    def __init__(self, queue: asyncio.Queue[Any]) -> None:
        self._queue = queue

    async def get(self, timeout: float | None = None) -> Any:
        """The next message; raises TimeoutError when none arrives in time."""
        async with asyncio.timeout(timeout):
            return await self._queue.get()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while True:
            yield await self._queue.get()


class Broker:
    """The process's listening connection and its local subscribers."""

    def __init__(self, conninfo: str, *, reconnect_delay: float = 1.0) -> None:
        self._conninfo = conninfo
        self._reconnect_delay = reconnect_delay
        self._subscribers: dict[str, set[asyncio.Queue[Any]]] = defaultdict(set)
        self._listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 10.0) -> None:
        self._task = asyncio.create_task(self._run(), name="pubsub-listener")
        async with asyncio.timeout(timeout):
            await self._listening.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def listening(self) -> bool:
        return self._listening.is_set()

    @asynccontextmanager
    async def subscribe(self, topic: str) -> AsyncIterator[Subscription]:
        queue: asyncio.Queue[Any] = asyncio.Queue(QUEUE_SIZE)
        self._subscribers[topic].add(queue)
        try:
            yield Subscription(queue)
        finally:
            self._subscribers[topic].discard(queue)
            if not self._subscribers[topic]:
                del self._subscribers[topic]

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except psycopg.OperationalError as exc:
                self._listening.clear()
                log.warning(
                    "pub/sub connection lost (%s); reconnecting", " ".join(str(exc).split())
                )
                await asyncio.sleep(self._reconnect_delay)

    async def _listen(self) -> None:
        conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
        async with conn:
            await conn.execute(f"LISTEN {CHANNEL}")
            self._listening.set()
            async for note in conn.notifies():
                self._deliver(note.payload)

    def _deliver(self, payload: str) -> None:
        try:
            message = json.loads(payload)
            topic, data = message["topic"], message["data"]
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed message on %s", CHANNEL)
            return
        for queue in self._subscribers.get(topic, ()):
            if queue.full():
                queue.get_nowait()  # a subscriber that does not read loses its oldest message
            queue.put_nowait(data)
