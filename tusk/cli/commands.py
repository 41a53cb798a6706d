"""The library calls behind `tusk setup` and `tusk doctor`."""

from __future__ import annotations

from tusk.accounts import service
from tusk.db.engine import engine_scope, session_factory
from tusk.db.models import Workspace
from tusk.doctor import Finding, connection_finding, database_findings, storage_finding
from tusk.runtime import Runtime
from tusk.storage import create_storage


async def create_first_admin(runtime: Runtime, *, email: str, name: str, password: str) -> str:
    """The name of the workspace made for the first admin."""
    async with engine_scope(runtime.conninfo) as engine, session_factory(engine).begin() as db:
        user = await service.setup(db, email=email, name=name, password=password)
        workspace = await db.get(Workspace, user.workspace_id)
        assert workspace is not None
        return workspace.name


async def diagnose(runtime: Runtime) -> list[Finding]:
    findings = [connection_finding(runtime)]
    async with engine_scope(runtime.conninfo) as engine:
        findings += await database_findings(engine)
        findings.append(await storage_finding(create_storage(runtime.settings, engine)))
    return findings
