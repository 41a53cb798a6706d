"""Connections: the SQLAlchemy engine of a process, and waiting for the database at start-up."""

from __future__ import annotations

import asyncio
import logging
import select
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import psycopg
from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
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
    engine = create_async_engine(
        "postgresql+psycopg://",
        async_creator=partial(psycopg.AsyncConnection.connect, conninfo),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=POOL_TIMEOUT_SECONDS,
    )
    event.listen(engine.sync_engine.pool, "checkout", _refuse_closed)
    return engine


def _refuse_closed(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Replace, at checkout, a pooled connection that its server has closed (a restart, a
    failover, `idle_session_timeout`). The server says so before it goes (a FATAL message, then
    the end of the stream), and an idle connection has nothing else to read: so a look at the
    socket tells, where a ping (SQLAlchemy's pre-ping) took a round trip and a tenth of a
    millisecond of CPU at every checkout. The pool then takes another connection."""
    driver = record.driver_connection
    if driver is None or driver.closed or driver.broken or _readable(driver.fileno()):
        raise DisconnectionError("the server has closed this connection")


def _readable(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def session_of(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session, closed when the block ends, for the paths every request takes. SQLAlchemy's
    own context closes its session in a task of its own, under a shield: two turns of the event
    loop even for a session that took no connection (as when an app's config comes from the
    cache), and under load each turn takes milliseconds (12 to 20 ms at p50 for a chat's first
    step at 64 clients). A session that holds a connection is still closed under a shield, so
    that giving the connection back is not cut short; one that was never used (no transaction,
    no object) has nothing to close."""
    db = sessions()
    try:
        yield db
    finally:
        if db.in_transaction():
            await asyncio.shield(db.close())
        elif db.sync_session.identity_map or db.sync_session.new:
            await db.close()


@asynccontextmanager
async def transaction_of(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """`session_of` in a transaction, committed when the block ends (rolled back if it
    raises)."""
    async with session_of(sessions) as db, db.begin():
        yield db


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
