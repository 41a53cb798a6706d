"""How many requests an app may run at once (Dify's `max_active_requests`), counted in
PostgreSQL so that every API process sees the same count.

Each admitted request holds a lease: a row of the key-value store that expires on its own, so a
request whose process dies gives its slot back after `LEASE_SECONDS` at the latest (Dify forgets
an active request after the same ten minutes). A request that ends deletes its lease at once; a
streamed response keeps it until its last chunk is sent or its client goes away."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, ParamSpec

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tusk.config import Settings
from tusk.db import kv
from tusk.db.locks import xact_lock
from tusk.db.models import App
from tusk.errors import TooManyRequests

LEASE_SECONDS = 600.0
PREFIX = "app-active-request:"

P = ParamSpec("P")
Sessions = async_sessionmaker[AsyncSession]

_ADMIT = text(
    """
    INSERT INTO kv_store (key, value, expires_at)
    SELECT :key, 'true'::jsonb, now() + CAST(:ttl AS float8) * interval '1 second'
    WHERE (SELECT count(*) FROM kv_store
           WHERE key LIKE :pattern AND expires_at > now()) < :limit
    RETURNING key
    """
)
_releasing: set[asyncio.Task[None]] = set()  # kept referenced until they finish


def effective_limit(app_limit: int | None, deployment_limit: int) -> int:
    """The smaller of the app's and the deployment's limits; 0 (either or both) means none."""
    limits = [n for n in (app_limit or 0, deployment_limit) if n > 0]
    return min(limits) if limits else 0


def limit_for(app: App, settings: Settings) -> int:
    """The app's limit under the deployment's `APP_MAX_ACTIVE_REQUESTS` (0 when unset)."""
    return effective_limit(app.max_active_requests, settings.app_max_active_requests)


def too_many(app: App, limit: int) -> TooManyRequests:
    return TooManyRequests(
        "Too many requests. Please try again later. The current maximum concurrent requests "
        f"allowed for {app.id} is {limit}."
    )


class Lease:
    """A slot taken by one request; `release()` gives it back (once)."""

    def __init__(self, sessions: Sessions, key: str | None) -> None:
        self.sessions = sessions
        self.key = key

    def release(self) -> None:
        """Delete the lease in a task of its own: the caller may be a stream being cancelled,
        whose own awaits would be cancelled too."""
        key, self.key = self.key, None
        if key is None:
            return
        task = asyncio.get_running_loop().create_task(self._delete(key))
        _releasing.add(task)
        task.add_done_callback(_releasing.discard)

    async def _delete(self, key: str) -> None:
        async with self.sessions.begin() as db:
            await kv.delete(db, key)

    async def held_during(self, body: AsyncGenerator[Any]) -> AsyncGenerator[Any]:
        try:
            async with contextlib.aclosing(body):  # closed early, it closes what it reads
                async for part in body:
                    yield part
        finally:
            self.release()


async def acquire(sessions: Sessions, app: App, limit: int) -> Lease:
    """Take a slot of `app`, or raise 429 `too_many_requests` when all `limit` are taken."""
    if limit <= 0:
        return Lease(sessions, None)
    scope = f"{PREFIX}{app.id}:"
    key = f"{scope}{uuid.uuid4()}"
    async with sessions.begin() as db:
        await xact_lock(db, scope)  # count and insert as one step across processes
        params = {"key": key, "ttl": LEASE_SECONDS, "pattern": f"{scope}%", "limit": limit}
        admitted = (await db.execute(_ADMIT, params)).first() is not None
    if not admitted:
        raise too_many(app, limit)
    return Lease(sessions, key)


async def active_requests(sessions: Sessions, app: App) -> int:
    """Leases of `app` that have not expired (for tests and diagnostics)."""
    sql = text("SELECT count(*) FROM kv_store WHERE key LIKE :pattern AND expires_at > now()")
    async with sessions.begin() as db:
        result = await db.execute(sql, {"pattern": f"{PREFIX}{app.id}:%"})
    return int(result.scalar_one())


async def run_limited(
    sessions: Sessions, app: App, limit: int, respond: Callable[[], Awaitable[Any]]
) -> Any:
    """`respond()` inside a lease. A streamed response (anything with a `body_iterator`)
    keeps the lease until its body is done; anything else gives it back at once."""
    lease = await acquire(sessions, app, limit)
    try:
        result = await respond()
    except BaseException:
        lease.release()
        raise
    body = getattr(result, "body_iterator", None)
    if body is None:
        lease.release()
    else:
        result.body_iterator = lease.held_during(body)
    return result


def concurrency_limited(handler: Callable[P, Awaitable[Any]]) -> Callable[P, Awaitable[Any]]:
    """Decorate a Service API handler that takes `caller` (the app's caller) and `services`:
    it runs within the app's concurrency limit."""
    signature = inspect.signature(handler)

    @functools.wraps(handler)
    async def limited(*args: P.args, **kwargs: P.kwargs) -> Any:
        bound = signature.bind(*args, **kwargs).arguments
        app, services = bound["caller"].app, bound["services"]
        limit = limit_for(app, services.settings)
        return await run_limited(services.sessions, app, limit, lambda: handler(*args, **kwargs))

    return limited
