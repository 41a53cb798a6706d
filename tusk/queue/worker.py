"""`tusk worker`: runs the queue, recovers the jobs of dead workers, outlives database restarts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Iterable, Mapping
from typing import Any

import procrastinate
import psycopg

from tusk.config import Settings
from tusk.db.engine import engine_scope
from tusk.queue.app import build_app

log = logging.getLogger(__name__)

RESTART_DELAY_SECONDS = 2.0
POOL_TIMEOUT_SECONDS = 5.0
DATABASE_ERRORS = (procrastinate.exceptions.ConnectorException, psycopg.OperationalError)


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
            log.warning("stalled-job check failed: %s", describe(exc))


def describe(error: BaseException) -> str:
    """One line; procrastinate's own errors say only "Database error.", so show their cause."""
    cause = error.__cause__ or error
    return " ".join(str(cause).split()) or type(cause).__name__


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def _run_once(
    app: procrastinate.App, conninfo: str, settings: Settings, context: Mapping[str, Any]
) -> None:
    connector = procrastinate.PsycopgConnector(
        conninfo=conninfo,
        min_size=1,
        max_size=settings.worker_concurrency + 2,
        timeout=POOL_TIMEOUT_SECONDS,  # fail fast, and restart, when the database is gone
    )
    with app.replace_connector(connector):
        async with engine_scope(conninfo) as engine, app.open_async():
            await _work(app, settings, {**context, "engine": engine})


async def _work(app: procrastinate.App, settings: Settings, context: dict[str, Any]) -> None:
    recovery = asyncio.create_task(_recovery_loop(app, settings))
    try:
        await app.run_worker_async(
            install_signal_handlers=False,
            concurrency=settings.worker_concurrency,
            name=worker_name(),
            update_heartbeat_interval=settings.worker_heartbeat_seconds,
            stalled_worker_timeout=settings.worker_stalled_seconds,
            additional_context=context,
            delete_jobs="successful",
        )
    finally:
        recovery.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await recovery


async def _until_stopped(run: asyncio.Task[None], stop: asyncio.Event) -> bool:
    """Wait for the run to end or for a stop request; True if a stop was requested."""
    waiter = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({run, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    return stop.is_set()


async def _cancel(run: asyncio.Task[None]) -> None:
    # Cancelling procrastinate's worker stops it gracefully: running jobs finish first.
    if run.done():
        return
    run.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await run


def _install_signals(stop: asyncio.Event) -> None:
    def request_stop() -> None:
        if stop.is_set():
            log.warning("second stop request: exiting now")
            os._exit(130)
        log.info("stopping the worker once its running jobs finish")
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, request_stop)


def _remove_signals() -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)


async def run_worker(
    conninfo: str,
    settings: Settings,
    extra_tasks: Iterable[str] = (),
    context: Mapping[str, Any] | None = None,
) -> None:
    """Run until SIGINT/SIGTERM. procrastinate stops its worker when it loses the database;
    this loop starts it again after a pause, as only a stop request should end it.

    Jobs find `context` (plus the worker's own database `engine`) in their job context."""
    app = build_app(extra_tasks)
    log.info("worker %s started with %d task(s)", worker_name(), len(app.tasks))
    stop = asyncio.Event()
    _install_signals(stop)
    try:
        while not stop.is_set():
            run = asyncio.create_task(_run_once(app, conninfo, settings, context or {}))
            try:
                if await _until_stopped(run, stop):
                    return
            finally:
                await _cancel(run)
            _log_end(run)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RESTART_DELAY_SECONDS)
    finally:
        _remove_signals()


def _log_end(run: asyncio.Task[None]) -> None:
    error = run.exception() if not run.cancelled() else None
    if error is not None and not isinstance(error, DATABASE_ERRORS):
        raise error
    reason = describe(error) if error else "it stopped by itself"
    log.warning("worker lost the database (%s); restarting", reason)
