"""Apps served as MCP tools (Dify's app MCP servers): each app may have one server, reached at
`/mcp/server/{server_code}/mcp` with a random code that the console creates, shows and renews.
Its one tool is the app: a workflow's Start variables (a chat app's form variables, plus
`query`) are the tool's parameters, each described by the server's `parameters`; a call runs the
app as the Service API would, for an end user of its own, and answers with the app's answer (a
workflow: its outputs as JSON)."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tusk.apps import agent_app, chatflow_app, easy_app
from tusk.apps.conversations import Speaker
from tusk.apps.easy_config import form_variables, read_config
from tusk.apps.end_users import end_user
from tusk.apps.tasks import TaskRegistry
from tusk.apps.workflow_app import Caller, blocking_reply, start_run
from tusk.db.models import App, AppModelConfig
from tusk.db.models.agent import MCP_SERVER_STATUSES, AppMcpServer
from tusk.errors import InvalidParam, NotFound, TuskError
from tusk.models.runtime import ModelRuntime
from tusk.tools.base import object_schema
from tusk.tools.openapi import tool_name
from tusk.tools.workflow_tool import parameter_schema, start_variables
from tusk.workflow import store
from tusk.workflow.runner import WorkflowRunner

CODE_BYTES = 12  # 16 URL-safe characters, as long as Dify's codes
QUERY = {"type": "string", "description": "User Input/Question content"}
CHAT_MODES = ("chat", "agent-chat", "advanced-chat")


@dataclass(frozen=True)
class McpDeps:
    sessions: async_sessionmaker[AsyncSession]
    models: ModelRuntime
    tasks: TaskRegistry
    runner: WorkflowRunner


# --- the server rows ---------------------------------------------------------------------------


def new_code() -> str:
    return secrets.token_urlsafe(CODE_BYTES)


def _descriptions(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidParam("parameters must be an object of descriptions", params="parameters")
    return {str(k): str(v or "") for k, v in raw.items()}


async def server_of(db: AsyncSession, app: App) -> AppMcpServer | None:
    query = select(AppMcpServer).where(
        AppMcpServer.app_id == app.id, AppMcpServer.workspace_id == app.workspace_id
    )
    return (await db.execute(query)).scalar_one_or_none()


async def create_server(
    db: AsyncSession, app: App, description: str | None, parameters: Any
) -> AppMcpServer:
    if await server_of(db, app) is not None:
        raise InvalidParam("This app already has an MCP server.", params="app_id")
    server = AppMcpServer(
        workspace_id=app.workspace_id,
        app_id=app.id,
        name=app.name,
        description=description or app.description or "",
        server_code=new_code(),
        status="active",
        parameters=_descriptions(parameters),
    )
    db.add(server)
    await db.flush()
    await db.refresh(server)
    return server


async def update_server(
    db: AsyncSession,
    app: App,
    server_id: Any,
    description: str | None,
    parameters: Any,
    status: str | None,
) -> AppMcpServer:
    server = await server_of(db, app)
    if server is None or str(server.id) != str(server_id):
        raise NotFound("Server not found.")
    if status and status not in MCP_SERVER_STATUSES:
        shown = ", ".join(MCP_SERVER_STATUSES)
        raise InvalidParam(f"status must be one of {shown}", params="status")
    server.name = app.name
    server.description = description or app.description or ""
    server.parameters = _descriptions(parameters)
    if status:
        server.status = status
    await db.flush()
    await db.refresh(server)
    return server


async def renew_code(db: AsyncSession, workspace_id: uuid.UUID, server_id: Any) -> AppMcpServer:
    try:
        key = uuid.UUID(str(server_id))
    except ValueError:
        raise NotFound("Server not found.") from None
    server = await db.get(AppMcpServer, key)
    if server is None or server.workspace_id != workspace_id:
        raise NotFound("Server not found.")
    server.server_code = new_code()
    await db.flush()
    await db.refresh(server)
    return server


async def served_app(db: AsyncSession, code: str) -> tuple[AppMcpServer, App]:
    """The active server with this code and its app; anything else is "not found"."""
    server = (
        await db.execute(select(AppMcpServer).where(AppMcpServer.server_code == code))
    ).scalar_one_or_none()
    if server is None or server.status != "active":
        raise NotFound("The MCP server does not exist or is not active.")
    app = await db.get(App, server.app_id)
    if app is None:
        raise NotFound("The MCP server does not exist or is not active.")
    return server, app


# --- the tool ----------------------------------------------------------------------------------


async def _form(db: AsyncSession, app: App) -> list[Mapping[str, Any]]:
    """The app's input variables, as Start variables."""
    if app.mode in ("workflow", "advanced-chat"):
        workflow = await store.get_published(db, app)
        return start_variables(workflow.graph)
    row = await db.get(AppModelConfig, app.app_model_config_id) if app.app_model_config_id else None
    config = read_config(row.config if row is not None else {})
    return [v.model_dump() for v in form_variables(config)]


async def tool_schema(db: AsyncSession, app: App, server: AppMcpServer) -> dict[str, Any]:
    properties: dict[str, Any] = {"query": dict(QUERY)} if app.mode in CHAT_MODES else {}
    required = ["query"] if app.mode in CHAT_MODES else []
    for variable in await _form(db, app):
        described = parameter_schema(variable)
        if described is None:
            continue
        name = str(variable["variable"])
        if server.parameters.get(name):
            described["description"] = server.parameters[name]
        properties[name] = described
        if variable.get("required"):
            required.append(name)
    return object_schema(properties, required)


def app_tool_name(app: App) -> str:
    return tool_name(app.name)


# --- a call ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallOutcome:
    text: str
    is_error: bool = False


def _inputs(arguments: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    rest = dict(arguments)
    query = rest.pop("query", "")
    return (query if isinstance(query, str) else json.dumps(query)), rest


async def _run(deps: McpDeps, app: App, user: str, speaker: Speaker, arguments: Any) -> str:
    query, inputs = _inputs(arguments)
    if app.mode == "workflow":
        caller = Caller("end_user", speaker.end_user_id, user)
        handle = await start_run(deps.sessions, deps.runner, app, caller, inputs=dict(arguments))
        data = (await blocking_reply(handle))["data"]
        if data.get("status") != "succeeded":
            raise TuskError(f"the workflow run {data.get('status')}: {data.get('error')}")
        return json.dumps(data.get("outputs") or {}, ensure_ascii=False)
    if app.mode == "agent-chat":
        agent_deps = agent_app.AgentDeps(deps.sessions, deps.models, deps.tasks, deps.runner)
        ask = agent_app.AgentRequest(query, inputs, speaker, auto_generate_name=False)
        return str((await (await agent_app.start_turn(agent_deps, app, ask)).blocking())["answer"])
    if app.mode == "advanced-chat":
        turn = chatflow_app.ChatRequest(
            query, inputs, user, speaker, created_by=speaker.end_user_id
        )
        started = await chatflow_app.start_turn(deps.sessions, deps.runner, deps.tasks, app, turn)
        return str((await started.blocking())["answer"])
    easy = easy_app.EasyRequest(query, inputs, speaker, auto_generate_name=False)
    easy_deps = easy_app.EasyDeps(deps.sessions, deps.models, deps.tasks)
    generation = await easy_app.start_generation(easy_deps, app, easy)
    return str((await generation.blocking())["answer"])


async def call_app(deps: McpDeps, server: AppMcpServer, app: App, arguments: Any) -> CallOutcome:
    """Run the app once with the tool's arguments; a failure is an error result."""
    user = f"mcp-{server.id}"
    async with deps.sessions.begin() as db:
        who = await end_user(db, app, user)
    try:
        return CallOutcome(await _run(deps, app, user, Speaker(end_user_id=who.id), arguments))
    except TuskError as exc:
        return CallOutcome(exc.message, is_error=True)


def server_json(server: AppMcpServer) -> dict[str, Any]:
    return {
        "id": str(server.id),
        "name": server.name,
        "server_code": server.server_code,
        "description": server.description,
        "status": server.status,
        "parameters": server.parameters,
        "created_at": int(server.created_at.timestamp()),
        "updated_at": int(server.updated_at.timestamp()),
    }
