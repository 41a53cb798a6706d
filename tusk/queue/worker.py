"""`tusk worker`: runs the queue, recovers the jobs of dead workers, outlives database restarts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Iterable

import procrastinate
import psycopg
from sqlalchemy.ext.asyncio import AsyncEngine

from tusk.config import Settings
from tusk.db.engine import engine_scope
from tusk.queue.app import build_app

log = logging.getLogger(__name__)

RESTART_DELAY_SECONDS = 2.0


async def recover_stalled_jobs(app: procrastinate.App, stalled_seconds: float) -> int:
    """Put back in the queue the running jobs of workers whose heartbeat stopped."""
    recovered = 0
    for job in await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=stalled_seconds):
        try:
            await app.job_manager.retry_job(job)
        except procrastinate.exceptions.ConnectorException:
            continue  # another worker recovered it first
        log.warning("job %s (%s) of a dead worker is queued again", job.id, job.task_name)
        recovered += 1
    return recovered


async def _recovery_loop(app: procrastinate.App, settings: Settings) -> None:
    while True:
        await asyncio.sleep(settings.worker_heartbeat_seconds)
        try:
            await recover_stalled_jobs(app, settings.worker_stalled_seconds)
        except (procrastinate.exceptions.ConnectorException, psycopg.Error) as exc:
            log.warning("stalled-job check failed: %s", exc)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def _run_once(app: procrastinate.App, conninfo: str, settings: Settings) -> None:
    connector = procrastinate.PsycopgConnector(
        conninfo=conninfo, min_size=1, max_size=settings.worker_concurrency + 2
    )
    with app.replace_connector(connector):
        async with engine_scope(conninfo) as engine, app.open_async():
            await _work(app, engine, settings)


async def _work(app: procrastinate.App, engine: AsyncEngine, settings: Settings) -> None:
    recovery = asyncio.create_task(_recovery_loop(app, settings))
    try:
        await app.run_worker_async(
            concurrency=settings.worker_concurrency,
            name=worker_name(),
            update_heartbeat_interval=settings.worker_heartbeat_seconds,
            stalled_worker_timeout=settings.worker_stalled_seconds,
            additional_context={"engine": engine},
            delete_jobs="successful",
        )
    finally:
        recovery.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await recovery


async def run_worker(conninfo: str, settings: Settings, extra_tasks: Iterable[str] = ()) -> None:
    """Run until SIGINT/SIGTERM; a lost database connection restarts the worker after a pause."""
    app = build_app(extra_tasks)
    log.info("worker %s started with %d task(s)", worker_name(), len(app.tasks))
    while True:
        try:
            await _run_once(app, conninfo, settings)
        except (procrastinate.exceptions.ConnectorException, psycopg.OperationalError) as exc:
            log.warning("worker lost the database (%s); restarting", " ".join(str(exc).split()))
            await asyncio.sleep(RESTART_DELAY_SECONDS)
        else:
            return
