"""The library calls behind `tusk setup` and `tusk doctor`."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tusk.accounts import service
from tusk.apps.dsl_transfer import (
    Importer,
    ImportResult,
    confirm_import,
    export_dsl,
    import_dsl,
)
from tusk.db.engine import engine_scope, session_factory
from tusk.db.models import App, Dataset, Membership, Workspace
from tusk.doctor import Finding, connection_finding, database_findings, storage_finding
from tusk.errors import InvalidParam, NotFound
from tusk.models import credentials
from tusk.rag import transfer
from tusk.runtime import Runtime, secret_key_file
from tusk.services import open_services
from tusk.storage import create_storage
from tusk.tools import store as tool_store
from tusk.workflow import store as workflow_store
from tusk.workflow.store import env_key


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


async def rotate_secret(runtime: Runtime, old: str, new: str) -> int:
    """Re-encrypt every stored secret from `old` to `new` in one transaction; the number of
    values re-encrypted. With the embedded database's generated key, the key file follows."""
    async with engine_scope(runtime.conninfo) as engine, session_factory(engine).begin() as db:
        count = await credentials.rotate(db, old, new)
        count += await workflow_store.rotate_secrets(db, old, new)
        count += await tool_store.rotate(db, old, new)
    key_file = secret_key_file(runtime.settings.data_dir)
    if runtime.settings.secret_key is None and key_file.exists():
        replace_secret_key_file(key_file, new)
    return count


def replace_secret_key_file(path: Path, key: str) -> None:
    temporary = path.with_name(path.name + ".new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key)
    temporary.replace(path)


async def export_knowledge_base(runtime: Runtime, dataset_id: uuid.UUID, out: TextIO) -> None:
    async with open_services(runtime) as services, services.transaction() as db:
        workspace_id = (
            await db.execute(select(Dataset.workspace_id).where(Dataset.id == dataset_id))
        ).scalar()
        if workspace_id is None:
            raise NotFound(f"no knowledge base {dataset_id}")
        async for line in transfer.export_lines(db, services.storage, workspace_id, dataset_id):
            out.write(line)


async def import_knowledge_base(
    runtime: Runtime, source: Iterable[str], workspace_id: uuid.UUID | None
) -> tuple[Dataset, dict[str, int]]:
    async with open_services(runtime) as services, services.transaction() as db:
        target = workspace_id or await _only_workspace(db)
        return await transfer.import_lines(
            db, services.storage, services.models, services.queue, target, source
        )


async def _only_workspace(db: AsyncSession) -> uuid.UUID:
    ids = list((await db.execute(select(Workspace.id))).scalars())
    if len(ids) != 1:
        raise InvalidParam(
            f"this instance has {len(ids)} workspaces; choose one with --workspace",
            params="workspace",
        )
    return ids[0]


async def import_app_file(
    runtime: Runtime, text: str, workspace_id: uuid.UUID | None
) -> ImportResult:
    async with engine_scope(runtime.conninfo) as engine, session_factory(engine).begin() as db:
        target = workspace_id or await _only_workspace(db)
        owner = (
            await db.execute(
                select(Membership.account_id)
                .where(Membership.workspace_id == target)
                .order_by(Membership.role != "owner")
                .limit(1)
            )
        ).scalar()
        if owner is None:
            raise NotFound(f"no workspace {target}")
        importer = Importer(target, owner, env_key(runtime.secret_key))
        result = await import_dsl(db, importer, text)
        if result.status == "pending":  # a terminal user has confirmed by running the command
            result = await confirm_import(db, importer, result.id)
        return result


async def export_app_file(runtime: Runtime, app_id: uuid.UUID, *, include_secret: bool) -> str:
    async with engine_scope(runtime.conninfo) as engine, session_factory(engine).begin() as db:
        app = await db.get(App, app_id)
        if app is None:
            raise NotFound(f"no app {app_id}")
        return await export_dsl(db, app, env_key(runtime.secret_key), include_secret=include_secret)
