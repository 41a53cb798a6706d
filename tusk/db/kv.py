"""A small expiring key-value store in PostgreSQL: caches, rate-limit counters, short-lived tokens.

Functions run in the caller's transaction (an `AsyncSession` or `AsyncConnection`) and take
effect when it commits. Expired keys read as absent and are purged by a periodic job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

Db = AsyncSession | AsyncConnection

_EXPIRY = (
    "CASE WHEN CAST(:ttl AS float8) IS NULL THEN NULL ELSE now() + make_interval(secs => :ttl) END"
)
_LIVE = "(expires_at IS NULL OR expires_at > now())"


async def get(db: Db, key: str) -> Any | None:
    sql = (
        "SELECT value FROM kv_store WHERE key = :key AND (expires_at IS NULL OR expires_at > now())"
    )
    return (await db.execute(text(sql), {"key": key})).scalar_one_or_none()


async def put(db: Db, key: str, value: Any, ttl: float | None = None) -> None:
    sql = """
        INSERT INTO kv_store (key, value, expires_at)
        VALUES (:key, CAST(:value AS jsonb), now() + CAST(:ttl AS float8) * interval '1 second')
        ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
    """
    await db.execute(text(sql), {"key": key, "value": json.dumps(value), "ttl": ttl})


async def add(db: Db, key: str, value: Any, ttl: float | None = None) -> bool:
    """Store only if the key is absent (or expired); True when this call stored it."""
    sql = """
        INSERT INTO kv_store (key, value, expires_at)
        VALUES (:key, CAST(:value AS jsonb), now() + CAST(:ttl AS float8) * interval '1 second')
        ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
            WHERE kv_store.expires_at IS NOT NULL AND kv_store.expires_at <= now()
        RETURNING key
    """
    params = {"key": key, "value": json.dumps(value), "ttl": ttl}
    return (await db.execute(text(sql), params)).first() is not None


async def pop(db: Db, key: str) -> Any | None:
    """Delete a key and return its live value, if any."""
    sql = """
        DELETE FROM kv_store WHERE key = :key
        RETURNING value, (expires_at IS NULL OR expires_at > now()) AS live
    """
    row = (await db.execute(text(sql), {"key": key})).first()
    return row.value if row is not None and row.live else None


async def delete(db: Db, key: str) -> bool:
    result = await db.execute(
        text("DELETE FROM kv_store WHERE key = :key RETURNING 1"), {"key": key}
    )
    return result.first() is not None


async def incr(db: Db, key: str, amount: int = 1, ttl: float | None = None) -> int:
    """Add to a counter atomically; an expired counter starts again, with a fresh `ttl`."""
    sql = """
        INSERT INTO kv_store (key, value, expires_at)
        VALUES (:key, to_jsonb(CAST(:amount AS bigint)),
                now() + CAST(:ttl AS float8) * interval '1 second')
        ON CONFLICT (key) DO UPDATE SET
            value = CASE WHEN kv_store.expires_at <= now() THEN excluded.value
                         ELSE to_jsonb(CAST(kv_store.value AS bigint) + :amount) END,
            expires_at = CASE WHEN kv_store.expires_at <= now() THEN excluded.expires_at
                              ELSE kv_store.expires_at END
        RETURNING CAST(value AS bigint)
    """
    result = await db.execute(text(sql), {"key": key, "amount": amount, "ttl": ttl})
    return int(result.scalar_one())


async def purge_expired(db: Db) -> int:
    result = await db.execute(text("DELETE FROM kv_store WHERE expires_at <= now()"))
    return int(getattr(result, "rowcount", 0) or 0)


@dataclass(frozen=True)
class Window:
    count: int
    limit: int

    @property
    def exceeded(self) -> bool:
        return self.count > self.limit


async def count_in_window(db: Db, key: str, limit: int, window_seconds: float) -> Window:
    """A fixed-window rate-limit counter: each call counts one hit."""
    return Window(await incr(db, key, 1, ttl=window_seconds), limit)
