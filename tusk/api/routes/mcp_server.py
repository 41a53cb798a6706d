"""Apps as MCP servers: the console's `/console/api/apps/{app_id}/server` (Dify's paths: create,
read, change; `.../{server_id}/server/refresh` renews the code) and the MCP endpoint
`/mcp/server/{server_code}/mcp`, spoken with the official `mcp` SDK over streamable HTTP.

The endpoint is stateless (no session outlives a request), so any API process answers any call:
each request gets a fresh SDK server whose one tool is the app the code names."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tusk.api.deps import ConsoleUserDep, ServicesDep
from tusk.apps import mcp_app, store
from tusk.apps.tasks import TaskRegistry
from tusk.errors import NotFound
from tusk.services import Services
from tusk.workflow.runner import WorkflowRunner

router = APIRouter(tags=["mcp"])


class ServerBody(BaseModel):
    description: str | None = None
    parameters: dict[str, Any] = {}


class ServerUpdate(ServerBody):
    id: str
    status: str | None = None


@router.get("/console/api/apps/{app_id}/server")
async def get_server(app_id: uuid.UUID, user: ConsoleUserDep, services: ServicesDep) -> Any:
    async with services.transaction() as db:
        app = await store.get_app(db, user.workspace_id, app_id)
        server = await mcp_app.server_of(db, app)
    return mcp_app.server_json(server) if server is not None else {}


@router.post("/console/api/apps/{app_id}/server", status_code=201)
async def create_server(
    app_id: uuid.UUID, body: ServerBody, user: ConsoleUserDep, services: ServicesDep
) -> dict[str, Any]:
    user.require_editor()
    async with services.transaction() as db:
        app = await store.get_app(db, user.workspace_id, app_id)
        server = await mcp_app.create_server(db, app, body.description, body.parameters)
        return mcp_app.server_json(server)


@router.put("/console/api/apps/{app_id}/server")
async def update_server(
    app_id: uuid.UUID, body: ServerUpdate, user: ConsoleUserDep, services: ServicesDep
) -> dict[str, Any]:
    user.require_editor()
    async with services.transaction() as db:
        app = await store.get_app(db, user.workspace_id, app_id)
        server = await mcp_app.update_server(
            db, app, body.id, body.description, body.parameters, body.status
        )
        return mcp_app.server_json(server)


@router.get("/console/api/apps/{server_id}/server/refresh")
async def refresh_server(
    server_id: uuid.UUID, user: ConsoleUserDep, services: ServicesDep
) -> dict[str, Any]:
    user.require_editor()
    async with services.transaction() as db:
        server = await mcp_app.renew_code(db, user.workspace_id, server_id)
        return mcp_app.server_json(server)


# --- the MCP endpoint --------------------------------------------------------------------------


def _deps(state: Any) -> mcp_app.McpDeps:
    services, tasks, runner = state.services, state.tasks, state.workflows
    assert isinstance(services, Services)
    assert isinstance(tasks, TaskRegistry)
    assert isinstance(runner, WorkflowRunner)
    return mcp_app.McpDeps(services.sessions, services.models, tasks, runner)


class McpEndpoint:
    """The ASGI endpoint of `/mcp/server/{server_code}/mcp`."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        deps = _deps(request.app.state)
        code = str(scope.get("path_params", {}).get("server_code", ""))
        try:
            async with deps.sessions() as db:
                server, app = await mcp_app.served_app(db, code)
        except NotFound as exc:
            answer = JSONResponse({"code": exc.code, "message": exc.message, "status": 404}, 404)
            await answer(scope, receive, send)
            return
        from tusk.api.routes import mcp_sdk  # the SDK, at the first MCP request

        await mcp_sdk.answer(deps, server, app, scope, receive, send)


router.routes.append(
    Route("/mcp/server/{server_code}/mcp", McpEndpoint(), methods=["GET", "POST", "DELETE"])
)
