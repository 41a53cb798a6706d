"""The engine's pool replaces the connections their server has closed, before they are used."""

from __future__ import annotations

import psycopg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tusk.db.engine import create_engine


async def backend_pids(engine: AsyncEngine, count: int) -> set[int]:
    """Check out `count` connections at once (so that the pool keeps that many), and give
    them back."""
    held = [await engine.connect() for _ in range(count)]
    try:
        return {int((await c.execute(text("SELECT pg_backend_pid()"))).scalar_one()) for c in held}
    finally:
        for connection in held:
            await connection.close()


async def test_connections_closed_by_the_server_are_replaced_unnoticed(database: str) -> None:
    engine = create_engine(database, pool_size=3, max_overflow=0)
    try:
        before = await backend_pids(engine, 3)
        async with await psycopg.AsyncConnection.connect(database, autocommit=True) as admin:
            for pid in before:  # as a restart or failover does: FATAL, then the end
                await admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
        after = await backend_pids(engine, 3)  # no error: each dead one was replaced
        assert not after & before
        assert len(after) == 3
    finally:
        await engine.dispose()


async def test_live_connections_are_kept(database: str) -> None:
    engine = create_engine(database, pool_size=2, max_overflow=0)
    try:
        assert await backend_pids(engine, 2) == await backend_pids(engine, 2)
    finally:
        await engine.dispose()
