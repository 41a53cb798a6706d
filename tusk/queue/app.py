"""The procrastinate App of a process, assembled from the blueprints registered as entry points.

Each layer defines its jobs on a `procrastinate.Blueprint` and registers it in the entry-point
group `tusk.tasks` (the name becomes the namespace of its task names), so the queue layer never
imports the layers above it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from functools import cache
from importlib.metadata import entry_points
from typing import Any

import procrastinate
from procrastinate.job_context import JobContext
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tusk.db.kv import Db

ENTRY_POINT_GROUP = "tusk.tasks"
# Up to five retries, 2, 4, 8, 16 and 32 s after each failure.
DEFAULT_RETRY = procrastinate.RetryStrategy(max_attempts=5, exponential_wait=2)


class BlueprintError(Exception):
    pass


def load_blueprint(path: str) -> procrastinate.Blueprint:
    """`package.module:attribute` -> the Blueprint it names."""
    module_name, _, attribute = path.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attribute or "blueprint")
    except (ImportError, AttributeError) as exc:
        raise BlueprintError(f"cannot load task blueprint {path!r}: {exc}") from None
    if not isinstance(found, procrastinate.Blueprint):
        raise BlueprintError(f"{path!r} is not a procrastinate.Blueprint")
    return found


@cache
def _app() -> procrastinate.App:
    # Deferring on a given connection needs no pool; a worker swaps in a connector of its own.
    app = procrastinate.App(connector=procrastinate.PsycopgConnector())
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        app.add_tasks_from(entry.load(), namespace=entry.name)
    return app


@cache
def _add_blueprint(path: str) -> None:
    # A blueprint is renamed in place when added, so each is added once per process.
    _app().add_tasks_from(load_blueprint(path), namespace=path.partition(":")[0])


def build_app(extra: Iterable[str] = ()) -> procrastinate.App:
    """The process's App: every registered blueprint, plus `module:attribute` ones in `extra`."""
    for path in extra:
        _add_blueprint(path)
    return _app()


async def enqueue(
    db: Db,
    app: procrastinate.App,
    task: str,
    *,
    options: dict[str, Any] | None = None,
    **kwargs: Any,
) -> int:
    """Defer a job on `db`'s own connection: it exists if and only if `db` commits.

    `options` are procrastinate's (queue, lock, queueing_lock, schedule_in, priority).
    """
    conn = db if isinstance(db, AsyncConnection) else await db.connection()
    raw = await conn.get_raw_connection()
    deferrer = app.configure_task(task, connection=raw.driver_connection, **(options or {}))
    job_id: int = await deferrer.defer_async(**kwargs)
    return job_id


def worker_engine(context: JobContext) -> AsyncEngine:
    """The database engine the worker hands to every job."""
    engine = context.additional_context["engine"]
    assert isinstance(engine, AsyncEngine)
    return engine
