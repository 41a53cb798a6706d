"""The expiring key-value table that replaces Redis for caches, counters and tokens."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.processes import start_actor, wait_ready
from tusk.db import kv


async def test_put_get_delete_round_trip(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await kv.put(conn, "k1", {"a": [1, 2]})
        assert await kv.get(conn, "k1") == {"a": [1, 2]}
        await kv.put(conn, "k1", "replaced")
        assert await kv.get(conn, "k1") == "replaced"
        assert await kv.delete(conn, "k1") is True
        assert await kv.get(conn, "k1") is None
        assert await kv.delete(conn, "k1") is False


async def test_expired_keys_read_as_absent_and_are_purged(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await kv.put(conn, "short", 1, ttl=0.2)
        await kv.put(conn, "long", 2, ttl=3600)
        await kv.put(conn, "forever", 3)
    await asyncio.sleep(0.3)
    async with engine.begin() as conn:
        assert await kv.get(conn, "short") is None
        assert await kv.get(conn, "long") == 2
        assert await kv.purge_expired(conn) >= 1
        assert await kv.get(conn, "forever") == 3
        assert await kv.pop(conn, "long") == 2
        assert await kv.get(conn, "long") is None


async def test_add_stores_only_when_absent_or_expired(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        assert await kv.add(conn, "once", "first", ttl=0.2) is True
        assert await kv.add(conn, "once", "second") is False
        assert await kv.get(conn, "once") == "first"
    await asyncio.sleep(0.3)
    async with engine.begin() as conn:
        assert await kv.add(conn, "once", "third") is True
        assert await kv.get(conn, "once") == "third"


async def test_counter_restarts_after_its_window(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        assert [await kv.incr(conn, "c", ttl=0.3) for _ in range(3)] == [1, 2, 3]
        window = await kv.count_in_window(conn, "c", limit=3, window_seconds=0.3)
        assert window.count == 4
        assert window.exceeded
    await asyncio.sleep(0.4)
    async with engine.begin() as conn:
        assert await kv.incr(conn, "c", 5, ttl=0.3) == 5


async def test_two_processes_count_without_losing_increments(
    engine: AsyncEngine, database: str
) -> None:
    children = [start_actor("incr", database, "shared", "150") for _ in range(2)]
    for child in children:
        wait_ready(child)
    async with engine.begin() as conn:
        for _ in range(150):
            await kv.incr(conn, "shared")
    for child in children:
        assert child.wait(timeout=60) == 0
    async with engine.connect() as conn:
        assert await kv.get(conn, "shared") == 450
