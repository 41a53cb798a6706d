"""Housekeeping of workflow runs: a run whose process died (crash, SIGKILL, lost host) stops
beating; the sweeper marks it failed, with its unfinished node executions, so no run stays
`running` forever."""

from __future__ import annotations

import procrastinate
from procrastinate.job_context import JobContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from tusk.queue.app import worker_engine

blueprint = procrastinate.Blueprint()

SILENT_AFTER = 120  # seconds without a heartbeat (runs beat every 10 s)
ABANDONED = (
    "The process running this workflow stopped before it finished (crash or shutdown); "
    "run it again."
)


async def sweep_abandoned_runs(conn: AsyncConnection, silent_after: float = SILENT_AFTER) -> int:
    """Mark failed the runs that have been silent for `silent_after` seconds; how many."""
    result = await conn.execute(
        text(
            """
            UPDATE workflow_runs
               SET status = 'failed', error = :error, finished_at = now(),
                   elapsed_time = extract(epoch FROM now() - created_at)
             WHERE status = 'running'
               AND heartbeat_at < now() - make_interval(secs => :silent)
            RETURNING id
            """
        ),
        {"error": ABANDONED, "silent": silent_after},
    )
    return len(result.all())


@blueprint.periodic(cron="* * * * *")
@blueprint.task(
    name="sweep_abandoned_runs", queueing_lock="sweep_abandoned_runs", pass_context=True
)
async def sweep(context: JobContext, timestamp: int) -> int:
    async with worker_engine(context).begin() as conn:
        return await sweep_abandoned_runs(conn)
