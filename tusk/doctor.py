"""`tusk doctor`: what Tusk finds in its database and storage, and what to fix."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tusk.db.conninfo import describe
from tusk.db.extensions import REQUIRED
from tusk.db.health import OK, readiness
from tusk.runtime import Runtime
from tusk.storage import Storage, StorageError


@dataclass(frozen=True)
class Finding:
    name: str
    ok: bool
    detail: str
    fix: str | None = None


def connection_finding(runtime: Runtime) -> Finding:
    if runtime.embedded:
        where = f"embedded PostgreSQL in {runtime.settings.embedded_pg_dir}"
    else:
        where = f"external PostgreSQL at {describe(runtime.conninfo).where}"
    return Finding("connection", True, where)


async def _server(conn: AsyncConnection) -> Finding:
    version = (await conn.execute(text("SHOW server_version"))).scalar_one()
    return Finding("database", True, f"PostgreSQL {version}")


async def _extensions(conn: AsyncConnection) -> list[Finding]:
    rows = await conn.execute(
        text(
            "SELECT a.name, a.default_version, e.extversion FROM pg_available_extensions a "
            "LEFT JOIN pg_extension e ON e.extname = a.name WHERE a.name = ANY(:names)"
        ),
        {"names": list(REQUIRED)},
    )
    found = {name: (available, installed) for name, available, installed in rows}
    return [_extension_finding(name, found.get(name)) for name in REQUIRED]


def _extension_finding(name: str, versions: tuple[str, str | None] | None) -> Finding:
    if versions is None:
        return Finding(
            f"extension {name}",
            False,
            "not available on this server",
            f"install the {name} extension's package on the PostgreSQL server",
        )
    available, installed = versions
    if installed is None:
        return Finding(
            f"extension {name}",
            False,
            f"available ({available}), not created",
            f"run `tusk migrate`, or as a superuser: CREATE EXTENSION {name};",
        )
    return Finding(f"extension {name}", True, f"version {installed}")


async def _privileges(conn: AsyncConnection) -> Finding:
    row = (
        await conn.execute(
            text(
                "SELECT current_user, r.rolsuper, "
                "has_database_privilege(current_database(), 'CREATE'), "
                "has_schema_privilege(current_schema(), 'CREATE') "
                "FROM pg_roles r WHERE r.rolname = current_user"
            )
        )
    ).one()
    role, superuser, create_db_objects, create_in_schema = row
    detail = f"role {role}" + (" (superuser)" if superuser else "")
    if create_in_schema:
        return Finding("privileges", True, f"{detail} may create tables")
    return Finding(
        "privileges",
        False,
        f"{detail} may not create tables in its schema",
        f"as the database owner: GRANT CREATE ON SCHEMA public TO {role};"
        + ("" if create_db_objects else f" GRANT CREATE ON DATABASE ... TO {role};"),
    )


async def database_findings(engine: AsyncEngine) -> list[Finding]:
    try:
        async with engine.connect() as conn:
            findings = [await _server(conn), *await _extensions(conn), await _privileges(conn)]
    except Exception as exc:  # the failure to connect is the finding
        reason = " ".join(str(exc).split())[:300]
        return [
            Finding(
                "database",
                False,
                f"unreachable: {reason}",
                "check PG_HOST/PG_PORT/PG_USERNAME/PG_PASSWORD or DATABASE_URL",
            )
        ]
    checks = await readiness(engine)
    findings.append(_readiness("schema", checks["schema"], "current", "run `tusk migrate`"))
    findings.append(
        _readiness("worker", checks["worker"], "heartbeat seen", "start `tusk worker` or `tusk up`")
    )
    return findings


def _readiness(name: str, problem: str, good: str, fix: str) -> Finding:
    if problem == OK:
        return Finding(name, True, good)
    return Finding(name, False, problem, fix)


async def storage_finding(storage: Storage) -> Finding:
    try:
        await storage.check()
    except StorageError as exc:
        return Finding(
            f"storage ({storage.name})",
            False,
            str(exc),
            "check STORAGE_TYPE and its settings (S3_*, STORAGE_LOCAL_PATH)",
        )
    return Finding(f"storage ({storage.name})", True, "write, read and delete work")
