"""What request handlers use, made once per process by the app's lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import procrastinate
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tusk.accounts.service import TokenSettings
from tusk.config import Settings
from tusk.db.engine import create_engine, session_factory
from tusk.db.pubsub import Broker
from tusk.queue import build_app
from tusk.runtime import Runtime
from tusk.storage import Storage, create_storage


@dataclass(frozen=True)
class Services:
    runtime: Runtime
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    storage: Storage
    broker: Broker
    queue: procrastinate.App

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
    try:
        await broker.start()
        yield Services(
            runtime=runtime,
            engine=engine,
            sessions=session_factory(engine),
            storage=create_storage(settings, engine),
            broker=broker,
            queue=build_app(),
        )
    finally:
        await broker.close()
        await engine.dispose()
