"""Readiness: is the database reachable, its schema current, and a worker alive?"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tusk.db.migrate import SchemaStatus, head_revision

OK = "ok"
WORKER_HEARTBEAT_WINDOW_SECONDS = 60


async def _schema(conn: AsyncConnection) -> str:
    if (await conn.execute(text("SELECT to_regclass('alembic_version')"))).scalar() is None:
        current = None
    else:
        current = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    return SchemaStatus(current, head_revision()).problem() or OK


async def _worker(conn: AsyncConnection) -> str:
    if (await conn.execute(text("SELECT to_regclass('procrastinate_workers')"))).scalar() is None:
        return "the job queue's tables are missing (run `tusk migrate`)"
    age = (
        await conn.execute(
            text(
                "SELECT extract(epoch FROM now() - max(last_heartbeat)) FROM procrastinate_workers"
            )
        )
    ).scalar()
    if age is None or age > WORKER_HEARTBEAT_WINDOW_SECONDS:
        return (
            f"no worker heartbeat in the last {WORKER_HEARTBEAT_WINDOW_SECONDS} s "
            "(is `tusk worker` running?)"
        )
    return OK


async def readiness(engine: AsyncEngine) -> dict[str, str]:
    """Each check's name -> "ok" or what is wrong."""
    try:
        async with engine.connect() as conn:
            return {"database": OK, "schema": await _schema(conn), "worker": await _worker(conn)}
    except Exception as exc:  # any failure to talk to the database is the finding itself
        reason = " ".join(str(exc).split())[:300]
        return {"database": f"unreachable: {reason}", "schema": "unknown", "worker": "unknown"}
