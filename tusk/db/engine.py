"""Connections: the SQLAlchemy engine of a process, and waiting for the database at start-up."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import psycopg
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from tusk.db.conninfo import describe

log = logging.getLogger(__name__)

POOL_TIMEOUT_SECONDS = 10


class DatabaseUnreachable(Exception):
    """The database could not be reached; the message names where and why."""


def create_engine(conninfo: str, *, pool_size: int = 5, max_overflow: int = 5) -> AsyncEngine:
    return create_async_engine(
        "postgresql+psycopg://",
        async_creator=partial(psycopg.AsyncConnection.connect, conninfo),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=POOL_TIMEOUT_SECONDS,
        # A connection that died with its server (restart, failover) is replaced on checkout.
        pool_pre_ping=True,
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def engine_scope(conninfo: str, **kwargs: int) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(conninfo, **kwargs)
    try:
        yield engine
    finally:
        await engine.dispose()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


async def wait_for_database(conninfo: str, patience: float) -> None:
    """Retry with backoff until the server answers, logging one line per failed attempt."""
    target = describe(conninfo)
    deadline = time.monotonic() + patience
    delay, attempt = 0.5, 0
    while True:
        attempt += 1
        try:
            conn = await psycopg.AsyncConnection.connect(conninfo)
        except psycopg.OperationalError as exc:
            error = _one_line(exc)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DatabaseUnreachable(
                    f"cannot reach PostgreSQL at {target.where} after {attempt} attempts "
                    f"in {patience:.0f} s: {error}"
                ) from None
            wait = min(delay, remaining)
            log.warning(
                "database at %s not reachable (attempt %d): %s; retrying in %.1f s",
                target.where,
                attempt,
                error,
                wait,
            )
            await asyncio.sleep(wait)
            delay = min(delay * 2, 5.0)
        else:
            await conn.close()
            return
