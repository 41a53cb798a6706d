"""The job queue: transactional enqueue, workers, retries, periodic jobs, recovery."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from typing import Any

import procrastinate
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.processes import start_actor, wait_ready
from tusk.config import Settings
from tusk.db import kv, migrate
from tusk.db.embedded import EmbeddedPostgres
from tusk.db.engine import engine_scope
from tusk.queue import build_app, enqueue
from tusk.queue.worker import recover_stalled_jobs, run_worker

JOBS = "tests.support.jobs:blueprint"


def fast_settings() -> Settings:
    return Settings(worker_heartbeat_seconds=0.5, worker_stalled_seconds=2, worker_concurrency=2)


async def jobs_for(engine: AsyncEngine, key: str) -> list[Any]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT status, attempts FROM procrastinate_jobs WHERE args->>'key' = :key"),
            {"key": key},
        )
        return [tuple(row) for row in rows]


async def wait_for(predicate: Any, timeout: float = 20) -> Any:
    async with asyncio.timeout(timeout):
        while not (result := await predicate()):
            await asyncio.sleep(0.1)
        return result


@contextlib.asynccontextmanager
async def running_worker(database: str) -> AsyncIterator[None]:
    task = asyncio.create_task(run_worker(database, fast_settings(), [JOBS]))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def done(engine: AsyncEngine, key: str) -> Any:
    async def check() -> Any:
        async with engine.connect() as conn:
            return await kv.get(conn, f"done:{key}")

    return check


async def test_a_job_exists_only_if_its_transaction_commits(engine: AsyncEngine) -> None:
    app = build_app([JOBS])
    async with engine.connect() as conn:
        await kv.put(conn, "row:kept", "row")
        await enqueue(conn, app, "tests.support.jobs:record", key="kept")
        await conn.commit()
        await kv.put(conn, "row:dropped", "row")
        await enqueue(conn, app, "tests.support.jobs:record", key="dropped")
        await conn.rollback()
    assert await jobs_for(engine, "kept") == [("todo", 0)]
    assert await jobs_for(engine, "dropped") == []
    async with engine.connect() as conn:
        assert await kv.get(conn, "row:dropped") is None


async def test_a_crash_before_commit_leaves_neither_row_nor_job(
    engine: AsyncEngine, database: str
) -> None:
    child = start_actor("write_then_hang", database, "crashed")
    wait_ready(child)  # the row and the job are written, not committed
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    async with engine.connect() as conn:
        assert await kv.get(conn, "row:crashed") is None
    assert await jobs_for(engine, "crashed") == []


async def test_a_worker_runs_enqueued_jobs(engine: AsyncEngine, database: str) -> None:
    app = build_app([JOBS])
    async with engine.begin() as conn:
        await enqueue(conn, app, "tests.support.jobs:record", key="run-me")
    async with running_worker(database):
        assert await wait_for(done(engine, "run-me"))


async def test_failing_jobs_are_retried_after_a_wait(engine: AsyncEngine, database: str) -> None:
    app = build_app([JOBS])
    async with engine.begin() as conn:
        await enqueue(conn, app, "tests.support.jobs:flaky", key="flaky", failures=2)
    async with running_worker(database):
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await wait_for(done(engine, "flaky")) == 3
        # Two retries, each scheduled one second after the failure.
        assert loop.time() - started >= 2.0


async def test_a_job_that_always_fails_ends_failed(engine: AsyncEngine, database: str) -> None:
    app = build_app([JOBS])
    async with engine.begin() as conn:
        await enqueue(conn, app, "tests.support.jobs:flaky", key="hopeless", failures=99)

    async def failed() -> bool:
        return [status for status, _ in await jobs_for(engine, "hopeless")] == ["failed"]

    async with running_worker(database):
        assert await wait_for(failed)
    async with engine.connect() as conn:
        assert await kv.get(conn, "attempts:hopeless") == 4  # the first run and three retries


async def test_periodic_jobs_run_on_their_schedule(engine: AsyncEngine, database: str) -> None:
    async def ticked_twice() -> bool:
        async with engine.connect() as conn:
            return (await kv.get(conn, "ticks") or 0) >= 2

    async with running_worker(database):
        assert await wait_for(ticked_twice, timeout=30)


async def test_jobs_of_a_dead_worker_are_queued_again(engine: AsyncEngine, database: str) -> None:
    app = build_app([JOBS])
    async with engine.begin() as conn:
        job_id = await enqueue(conn, app, "tests.support.jobs:record", key="orphan")
        # A worker took the job, then stopped sending heartbeats.
        await conn.execute(
            text(
                "WITH w AS (INSERT INTO procrastinate_workers (last_heartbeat) "
                "VALUES (now() - interval '1 hour') RETURNING id) "
                "UPDATE procrastinate_jobs SET status = 'doing', worker_id = (SELECT id FROM w) "
                "WHERE id = :id"
            ),
            {"id": job_id},
        )
    connector = procrastinate.PsycopgConnector(conninfo=database)
    with app.replace_connector(connector):
        async with app.open_async():
            assert await recover_stalled_jobs(app, stalled_seconds=60) == 1
            assert await recover_stalled_jobs(app, stalled_seconds=60) == 0
    assert await jobs_for(engine, "orphan") == [("todo", 1)]


async def test_a_worker_outlives_a_database_restart(own_server: EmbeddedPostgres) -> None:
    conninfo = own_server.conninfo()
    await asyncio.to_thread(migrate.upgrade, conninfo)
    async with running_worker(conninfo):
        await asyncio.sleep(1)  # the worker is up and listening
        await asyncio.to_thread(own_server.stop)
        await asyncio.sleep(7)  # long enough for a restart to fail while it is down
        await asyncio.to_thread(own_server.start)
        async with engine_scope(conninfo) as engine:
            async with engine.begin() as conn:
                await enqueue(conn, build_app([JOBS]), "tests.support.jobs:record", key="after")
            assert await wait_for(done(engine, "after"), timeout=30)
