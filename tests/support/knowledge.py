"""Helpers for knowledge-engine tests: services on a test database, and running queued jobs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import procrastinate
from sqlalchemy import text

from tests.support.api import SECRET, make_settings
from tusk.db.models import Workspace
from tusk.queue import build_app
from tusk.runtime import Runtime
from tusk.services import Services, open_services, worker_context


@asynccontextmanager
async def services_on(conninfo: str, **settings: Any) -> AsyncIterator[Services]:
    runtime = Runtime(make_settings(**settings), conninfo, SECRET, embedded=False)
    async with open_services(runtime) as services:
        yield services


async def run_queued_jobs(services: Services) -> None:
    """Run every job in the queue, as a worker would, then return."""
    app = build_app()
    connector = procrastinate.PsycopgConnector(conninfo=services.runtime.conninfo)
    with app.replace_connector(connector):
        async with app.open_async():
            await app.run_worker_async(
                wait=False,
                install_signal_handlers=False,
                additional_context={**worker_context(services), "engine": services.engine},
                listen_notify=False,
            )


async def new_workspace(services: Services) -> uuid.UUID:
    async with services.transaction() as db:
        workspace = Workspace(name="knowledge tests")
        db.add(workspace)
        await db.flush()
        return workspace.id


async def job_statuses(services: Services, task: str) -> list[str]:
    async with services.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT status FROM procrastinate_jobs WHERE task_name = :t ORDER BY id"),
            {"t": task},
        )
        return [str(row.status) for row in rows]
