"""Apps in and out as Dify DSL files: an import makes the app with its draft workflow (or its
model config); a file of a newer minor DSL version waits for confirmation, as in Dify; an export
writes the draft back out, secrets blanked unless asked for."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tusk.apps import store as app_store
from tusk.db import kv
from tusk.db.models import App, AppModelConfig
from tusk.errors import NotFound
from tusk.workflow import store
from tusk.workflow.dsl import (
    CURRENT_DSL_VERSION,
    WORKFLOW_MODES,
    AppFields,
    DslError,
    ImportedApp,
    WorkflowFields,
    read_dsl,
)
from tusk.workflow.dsl_export import write_dsl
from tusk.workflow.graph import GraphError
from tusk.workflow.plan import Mode, build_plan
from tusk.workflow.store import describe
from tusk.workflow.validate import validate

PENDING_TTL = 600.0  # seconds a pending import waits for its confirmation


@dataclass
class ImportResult:
    """Dify's import body, plus the warnings Tusk has about the file."""

    id: str
    status: str  # completed, completed-with-warnings, pending, failed
    app_id: str | None = None
    app_mode: str | None = None
    imported_dsl_version: str = ""
    error: str = ""
    warnings: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "current_dsl_version": CURRENT_DSL_VERSION}


@dataclass(frozen=True)
class Importer:
    workspace_id: uuid.UUID
    account_id: uuid.UUID
    env_key: bytes


def _pending_key(workspace_id: uuid.UUID, import_id: str) -> str:
    return f"dsl-import:{workspace_id}:{import_id}"


def warnings_of(imported: ImportedApp) -> list[str]:
    """The reader's warnings, and what would keep the workflow from being published."""
    found = list(imported.warnings)
    if imported.workflow is not None:
        with contextlib.suppress(GraphError):
            mode: Mode = "workflow" if imported.mode == "workflow" else "chat"
            plan = build_plan(imported.workflow.graph, mode)
            reported = {issue.node_id for issue in imported.unsupported}
            found += [
                f"cannot be published as it is: {describe([problem])}"
                for problem in validate(plan)
                if problem.node_id not in reported
            ]
    return found


async def import_dsl(
    db: AsyncSession,
    who: Importer,
    text: str,
    *,
    name: str | None = None,
    description: str | None = None,
) -> ImportResult:
    import_id = str(uuid.uuid4())
    try:
        imported = read_dsl(text)
    except DslError as exc:
        return ImportResult(import_id, "failed", error=exc.message)
    if imported.status == "pending":
        pending = {"text": text, "name": name, "description": description}
        await kv.put(db, _pending_key(who.workspace_id, import_id), pending, ttl=PENDING_TTL)
        return ImportResult(
            import_id,
            "pending",
            app_mode=imported.mode,
            imported_dsl_version=imported.imported_version,
            warnings=warnings_of(imported),
        )
    app = await create_from(db, who, imported, name=name, description=description)
    return ImportResult(
        import_id,
        imported.status,
        app_id=str(app.id),
        app_mode=app.mode,
        imported_dsl_version=imported.imported_version,
        warnings=warnings_of(imported),
    )


async def confirm_import(db: AsyncSession, who: Importer, import_id: str) -> ImportResult:
    pending = await kv.pop(db, _pending_key(who.workspace_id, import_id))
    if not isinstance(pending, dict):
        raise NotFound("Import not found, or its confirmation came too late.")
    imported = read_dsl(pending["text"])
    app = await create_from(
        db, who, imported, name=pending.get("name"), description=pending.get("description")
    )
    return ImportResult(
        import_id,
        "completed-with-warnings" if imported.warnings else "completed",
        app_id=str(app.id),
        app_mode=app.mode,
        imported_dsl_version=imported.imported_version,
        warnings=warnings_of(imported),
    )


async def create_from(
    db: AsyncSession,
    who: Importer,
    imported: ImportedApp,
    *,
    name: str | None = None,
    description: str | None = None,
) -> App:
    fields = imported.app
    new = app_store.NewApp(
        name=name or fields.name,
        mode=fields.mode,
        description=fields.description if description is None else description,
        icon_type=fields.icon_type,
        icon=fields.icon,
        icon_background=fields.icon_background,
    )
    app = await app_store.create_app(db, who.workspace_id, new, who.account_id)
    app.use_icon_as_answer_icon = fields.use_icon_as_answer_icon
    app.finish_in_background = fields.finish_in_background
    if imported.workflow is not None:
        workflow = imported.workflow
        content = store.DraftContent(
            workflow.graph,
            workflow.features,
            workflow.environment_variables,
            workflow.conversation_variables,
        )
        await store.save_draft(db, app, content, account_id=who.account_id, key=who.env_key)
    elif imported.model_config is not None:
        config = AppModelConfig(
            workspace_id=app.workspace_id,
            app_id=app.id,
            config=imported.model_config,
            created_by=who.account_id,
        )
        db.add(config)
        await db.flush()
        app.app_model_config_id = config.id
    await db.flush()
    return app


async def export_dsl(db: AsyncSession, app: App, env_key: bytes, *, include_secret: bool) -> str:
    fields = AppFields(
        name=app.name,
        mode=app.mode,
        icon=app.icon or "🤖",
        icon_type=app.icon_type or "emoji",
        icon_background=app.icon_background or "#FFEAD5",
        description=app.description,
        use_icon_as_answer_icon=app.use_icon_as_answer_icon,
        finish_in_background=app.finish_in_background,
    )
    if app.mode in WORKFLOW_MODES:
        draft = await store.get_draft(db, app.workspace_id, app.id)
        workflow = WorkflowFields(
            graph=draft.graph,
            features=draft.features,
            environment_variables=store.plain_environment(draft, env_key, secrets=include_secret),
            conversation_variables=list(draft.conversation_variables or []),
        )
        return write_dsl(fields, workflow, include_secret=include_secret)
    return write_dsl(fields, model_config=await _model_config(db, app))


async def _model_config(db: AsyncSession, app: App) -> dict[str, Any]:
    query = select(AppModelConfig).where(
        AppModelConfig.app_id == app.id, AppModelConfig.workspace_id == app.workspace_id
    )
    if app.app_model_config_id is not None:
        query = query.where(AppModelConfig.id == app.app_model_config_id)
    found = (await db.execute(query.order_by(AppModelConfig.created_at.desc()))).scalars().first()
    return dict(found.config) if found is not None else {}


async def copy_app(
    db: AsyncSession, who: Importer, app: App, *, name: str | None, description: str | None
) -> App:
    """A new app of the same mode with the same draft (or model config), secrets included, made
    the way Dify copies: through the app's DSL."""
    text = await export_dsl(db, app, who.env_key, include_secret=True)
    imported = read_dsl(text)
    return await create_from(
        db, who, imported, name=name or f"{app.name} (copy)", description=description
    )
