"""Workflow as a tool: a published workflow app of the workspace, called with its Start
variables as parameters; the run's outputs are the result.

This is the one place where the tools layer reaches up: a workflow tool runs a workflow. It
does so through the apps layer's own entry point (`start_run` and `blocking_reply`), imported
when a call is made. Calls nest (a workflow calling a workflow as a tool) at most
`ToolContext.max_depth` deep; the depth travels with the asyncio context into the runs."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tusk.db.models import App, Workflow
from tusk.errors import NotFound, TuskError
from tusk.tools.base import Tool, ToolContext, ToolError, ToolProvider, ToolResult, object_schema
from tusk.tools.openapi import tool_name
from tusk.workflow.values import is_file

_depth: ContextVar[int] = ContextVar("workflow_tool_depth", default=0)

TEXT_TYPES = ("text-input", "paragraph", "select")


def parameter_schema(variable: Mapping[str, Any]) -> dict[str, Any] | None:
    """A Start variable as a JSON Schema property (None for files, which a tool cannot pass)."""
    kind = variable.get("type", "text-input")
    described: dict[str, Any] = {}
    if kind in TEXT_TYPES:
        described = {"type": "string"}
        if kind == "select" and variable.get("options"):
            described["enum"] = [str(o) for o in variable["options"]]
        if variable.get("max_length"):
            described["maxLength"] = int(variable["max_length"])
    elif kind == "number":
        described = {"type": "number"}
    elif kind == "checkbox":
        described = {"type": "boolean"}
    elif kind == "json_object":
        described = {"type": "object"}
    else:
        return None
    label = variable.get("description") or variable.get("label")
    if label:
        described["description"] = str(label)
    return described


def start_variables(graph: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    for raw in graph.get("nodes") or []:
        data = raw.get("data") or {}
        if data.get("type") == "start" and not raw.get("parentId"):
            return [v for v in data.get("variables") or [] if isinstance(v, Mapping)]
    return []


def parameters_of(graph: Mapping[str, Any]) -> dict[str, Any]:
    properties, required = {}, []
    for variable in start_variables(graph):
        described = parameter_schema(variable)
        if described is None:
            continue
        properties[str(variable["variable"])] = described
        if variable.get("required"):
            required.append(str(variable["variable"]))
    return object_schema(properties, required)


def _files_in(value: Any) -> list[dict[str, Any]]:
    if is_file(value):
        return [value]
    if isinstance(value, list):
        return [item for item in value if is_file(item)]
    return []


def run_result(data: Mapping[str, Any]) -> ToolResult:
    if data.get("status") != "succeeded":
        raise ToolError(f"the workflow run {data.get('status') or 'failed'}: {data.get('error')}")
    outputs: dict[str, Any] = dict(data.get("outputs") or {})
    files = [f for value in outputs.values() for f in _files_in(value)]
    plain = {k: v for k, v in outputs.items() if not _files_in(v)}
    text = json.dumps(plain, ensure_ascii=False, default=str)
    return ToolResult(text=text, json=[plain], files=files)


class WorkflowTool(Tool):
    def __init__(self, app: App, workflow: Workflow) -> None:
        self.app_id = app.id
        self.name = tool_name(app.name)
        self.label = app.name
        self.description = app.description or f"Run the workflow {app.name}"
        self.parameters = parameters_of(workflow.graph)

    async def invoke(self, params: dict[str, Any], context: ToolContext) -> ToolResult:
        from tusk.apps.store import get_app
        from tusk.apps.workflow_app import Caller, blocking_reply, start_run

        depth = _depth.get()
        if depth >= context.max_depth:
            raise ToolError(f"workflows call each other as tools over {context.max_depth} deep")
        runner = context.runner or _runner(context)
        sessions = context.resources.sessions
        async with sessions.begin() as db:
            app = await get_app(db, context.workspace_id, self.app_id)
        caller = Caller("end_user", None, context.user_id or "tool")
        token = _depth.set(depth + 1)  # the run's task copies the context as it is now
        try:
            handle = await start_run(sessions, runner, app, caller, inputs=params)
        except TuskError as exc:
            raise ToolError(exc.message) from None
        finally:
            _depth.reset(token)
        try:
            reply = await blocking_reply(handle)
        except asyncio.CancelledError:
            await runner.stop(handle.run_id)
            raise
        return run_result(reply["data"])


def _runner(context: ToolContext) -> Any:
    from tusk.db.pubsub import Broker
    from tusk.workflow.runner import WorkflowRunner
    from tusk.workflow.store import env_key

    resources = context.resources
    # Stops reach this runner's runs directly; it never listens, so its broker never connects.
    return WorkflowRunner(resources, Broker(""), env_key(resources.models.secret_key))


class WorkflowProvider(ToolProvider):
    def __init__(self, app: App, workflow: Workflow) -> None:
        self.name = str(app.id)
        self.label = app.name
        self.description = app.description or ""
        self._tools = (WorkflowTool(app, workflow),)

    def tools(self) -> Sequence[Tool]:
        return self._tools


async def published_workflow(db: AsyncSession, app: App) -> Workflow:
    from tusk.workflow.store import WorkflowNotPublished, get_published

    try:
        return await get_published(db, app)
    except WorkflowNotPublished:
        raise ToolError(f"the workflow app {app.name!r} is not published") from None


async def workflow_provider(db: AsyncSession, workspace_id: uuid.UUID, app_id: str) -> ToolProvider:
    try:
        key = uuid.UUID(app_id)
    except ValueError:
        raise NotFound(f"{app_id!r} is not a workflow app id") from None
    query = select(App).where(App.id == key, App.workspace_id == workspace_id)
    app = (await db.execute(query)).scalar_one_or_none()
    if app is None or app.mode != "workflow":
        raise NotFound(f"no workflow app {app_id} in this workspace")
    return WorkflowProvider(app, await published_workflow(db, app))


async def workflow_providers(db: AsyncSession, workspace_id: uuid.UUID) -> list[ToolProvider]:
    """Every published workflow app of the workspace."""
    query = select(App).where(App.workspace_id == workspace_id, App.mode == "workflow")
    found: list[ToolProvider] = []
    for app in (await db.execute(query.order_by(App.name))).scalars():
        if app.workflow_id is not None:
            found.append(WorkflowProvider(app, await published_workflow(db, app)))
    return found
