"""Transactions sent through the driver (psycopg) on a connection of SQLAlchemy's pool, for the
writes on every run's path. There SQLAlchemy's statement building and session bookkeeping cost
more CPU than the statements themselves: about 0.4 ms of a 0.9 ms transaction of two statements.
Everything else goes through SQLAlchemy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

# For rows that only mark a start: a crash in the next fraction of a second may lose them, and
# the durable commit that follows flushes them (WAL is written in order).
NOT_WAITING_FOR_DISK = "SET LOCAL synchronous_commit = off"


def engine_of(sessions: async_sessionmaker[AsyncSession]) -> AsyncEngine:
    engine = sessions.kw.get("bind")
    if not isinstance(engine, AsyncEngine):
        raise TypeError("the session factory is not bound to an async engine")
    return engine


@asynccontextmanager
async def driver_transaction(
    sessions: async_sessionmaker[AsyncSession], *, wait_for_disk: bool = True
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A psycopg connection in a transaction, committed when the block ends (rolled back if it
    raises). A connection the server dropped is taken out of the pool."""
    async with engine_of(sessions).connect() as connection:
        pooled = await connection.get_raw_connection()
        driver = pooled.driver_connection
        assert isinstance(driver, psycopg.AsyncConnection)
        try:
            async with driver.pipeline(), driver.transaction():
                if not wait_for_disk:
                    await driver.execute(NOT_WAITING_FOR_DISK)
                yield driver
        except psycopg.OperationalError:
            await connection.invalidate()
            raise
