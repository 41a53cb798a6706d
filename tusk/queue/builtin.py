"""Jobs of the core: housekeeping that Redis's expiry did elsewhere."""

from __future__ import annotations

import procrastinate
from procrastinate.job_context import JobContext

from tusk.db import kv
from tusk.queue.app import worker_engine

blueprint = procrastinate.Blueprint()


@blueprint.periodic(cron="*/5 * * * *")
@blueprint.task(name="purge_expired_keys", queueing_lock="purge_expired_keys", pass_context=True)
async def purge_expired_keys(context: JobContext, timestamp: int) -> int:
    async with worker_engine(context).begin() as conn:
        return await kv.purge_expired(conn)
