"""Jobs used by the queue tests; workers load them with `--tasks tests.support.jobs:blueprint`."""

from __future__ import annotations

import asyncio
import os

import procrastinate
from procrastinate.job_context import JobContext

from tusk.db import kv
from tusk.queue import worker_engine

blueprint = procrastinate.Blueprint()


@blueprint.task(name="record", pass_context=True)
async def record(context: JobContext, key: str) -> None:
    """Mark `key` as done by this process."""
    async with worker_engine(context).begin() as conn:
        await kv.put(conn, f"done:{key}", {"pid": os.getpid()})


@blueprint.task(name="slow_record", pass_context=True)
async def slow_record(context: JobContext, key: str, seconds: float) -> None:
    """Say which process started, work for a while, then mark `key` as done."""
    engine = worker_engine(context)
    async with engine.begin() as conn:
        await kv.put(conn, f"started:{key}", {"pid": os.getpid()})
    await asyncio.sleep(seconds)
    async with engine.begin() as conn:
        await kv.put(conn, f"done:{key}", {"pid": os.getpid()})


# Three retries, one second after each failure.
@blueprint.task(
    name="flaky", pass_context=True, retry=procrastinate.RetryStrategy(max_attempts=3, wait=1)
)
async def flaky(context: JobContext, key: str, failures: int) -> None:
    """Fail `failures` times, then succeed: counts its attempts in the kv store."""
    async with worker_engine(context).begin() as conn:
        attempt = await kv.incr(conn, f"attempts:{key}")
    if attempt <= failures:
        raise RuntimeError(f"attempt {attempt} fails on purpose")
    async with worker_engine(context).begin() as conn:
        await kv.put(conn, f"done:{key}", attempt)


@blueprint.periodic(cron="* * * * * *")
@blueprint.task(name="tick", queueing_lock="tick", pass_context=True)
async def tick(context: JobContext, timestamp: int) -> None:
    """A periodic job that runs every second."""
    async with worker_engine(context).begin() as conn:
        await kv.incr(conn, "ticks")
