"""What a process works with — database, storage, pub/sub, the queue, the model runtime —
made once per process (by the API's lifespan, or by `tusk worker`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import procrastinate
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tusk.accounts.service import TokenSettings
from tusk.config import Settings
from tusk.db.engine import create_engine, session_factory
from tusk.db.pubsub import Broker
from tusk.models.runtime import ModelRuntime, model_settings
from tusk.models.usage import UsageRecorder
from tusk.queue import build_app
from tusk.runtime import Runtime
from tusk.sandbox import Sandbox
from tusk.storage import Storage, create_storage


@dataclass(frozen=True)
class Services:
    runtime: Runtime
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    storage: Storage
    broker: Broker
    queue: procrastinate.App
    models: ModelRuntime
    sandbox: Sandbox

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def tokens(self) -> TokenSettings:
        return TokenSettings(
            secret_key=self.runtime.secret_key,
            access_ttl=self.settings.access_token_expire_minutes * 60,
            refresh_ttl=self.settings.refresh_token_expire_days * 86400,
        )

    def transaction(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A session in a transaction that commits when the block ends without an error."""
        return self.sessions.begin()


@asynccontextmanager
async def open_services(runtime: Runtime) -> AsyncIterator[Services]:
    settings = runtime.settings
    engine = create_engine(
        runtime.conninfo, pool_size=settings.pool_size, max_overflow=settings.pool_max_overflow
    )
    broker = Broker(runtime.conninfo)
    sessions = session_factory(engine)
    recorder = UsageRecorder(engine)
    models = ModelRuntime(sessions, runtime.secret_key, model_settings(settings), recorder)
    sandbox = Sandbox.from_settings(settings)
    try:
        await broker.start()
        await recorder.start()
        await sandbox.start()  # says now if code cannot run here; fills its pool meanwhile
        async with _background(models.follow_changes(broker)):
            yield Services(
                runtime=runtime,
                engine=engine,
                sessions=sessions,
                storage=create_storage(settings, engine),
                broker=broker,
                queue=build_app(),
                models=models,
                sandbox=sandbox,
            )
    finally:
        await sandbox.close()
        await recorder.close()
        await broker.close()
        await engine.dispose()


@asynccontextmanager
async def _background(work: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run `work` for the duration of the block."""
    task = asyncio.create_task(work)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def worker_context(services: Services) -> dict[str, Any]:
    """What jobs get from `tusk worker` (see `tusk.queue.app` for how they read it)."""
    return {
        "models": services.models,
        "storage": services.storage,
        "queue": services.queue,
        "sandbox": services.sandbox,
        "conninfo": services.runtime.conninfo,
    }
