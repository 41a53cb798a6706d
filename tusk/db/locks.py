"""Advisory locks: named mutual exclusion between processes, held in PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tusk.db.kv import Db


class LockBusy(Exception):
    """Another session holds the lock."""


def lock_id(name: str) -> int:
    """A stable signed 64-bit key for a lock name, the same in every process."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def xact_lock(db: Db, name: str, *, wait: bool = True) -> bool:
    """Lock until the caller's transaction ends; without `wait`, False if it is taken."""
    fn = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
    result = await db.execute(text(f"SELECT {fn}(:id)"), {"id": lock_id(name)})
    return wait or bool(result.scalar_one())


@asynccontextmanager
async def advisory_lock(
    engine: AsyncEngine, name: str, *, wait: bool = True
) -> AsyncIterator[AsyncConnection]:
    """Hold a session-level lock on a connection of its own for the body of the block.

    Should this process die, its connection closes and PostgreSQL releases the lock.
    """
    key = {"id": lock_id(name)}
    async with engine.connect() as conn:
        fn = "pg_advisory_lock" if wait else "pg_try_advisory_lock"
        acquired = (await conn.execute(text(f"SELECT {fn}(:id)"), key)).scalar_one()
        await conn.commit()
        if wait is False and not acquired:
            raise LockBusy(name)
        try:
            yield conn
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:id)"), key)
            await conn.commit()
