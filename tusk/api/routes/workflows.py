"""Workflow apps over HTTP: the Service API's runs (`/v1/workflows/...`) and the console's draft,
publish, debug runs, run history and single-node runs, at Dify's paths."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from tusk.api import serialize
from tusk.api.deps import AppCallerDep, ConsoleUserDep, ServicesDep, get_app_cache
from tusk.api.sse import sse_response
from tusk.apps import store as app_store
from tusk.apps import workflow_app
from tusk.apps.end_users import user_param
from tusk.apps.limits import concurrency_limited
from tusk.apps.workflow_app import Caller
from tusk.db.models import App
from tusk.workflow import store
from tusk.workflow.runner import RunHandle, WorkflowRunner
from tusk.workflow.single import run_single_node
from tusk.workflow.wire import sse_payload

service_router = APIRouter(prefix="/v1/workflows", tags=["service"])
console_router = APIRouter(prefix="/console/api/apps/{app_id}", tags=["console"])


def get_runner(request: Request) -> WorkflowRunner:
    runner = request.app.state.workflows
    assert isinstance(runner, WorkflowRunner)
    return runner


class RunBody(BaseModel):
    inputs: dict[str, Any] = {}
    files: list[dict[str, Any]] | None = None
    response_mode: str | None = None
    user: str | None = None


async def _stream(handle: RunHandle) -> AsyncGenerator[dict[str, Any]]:
    run_id = str(handle.run_id)
    async for event in handle.events():
        yield sse_payload(event, run_id, run_id)


async def _reply(handle: RunHandle, mode: str | None) -> Any:
    if mode == "streaming":
        return sse_response(_stream(handle))
    return await workflow_app.blocking_reply(handle)


# --- Service API -----------------------------------------------------------------------------


@concurrency_limited
async def _service_run(
    body: RunBody, caller: AppCallerDep, services: ServicesDep, request: Request,
    version: uuid.UUID | None = None,
) -> Any:  # fmt: skip
    user = user_param(body.user)
    who = await get_app_cache(request).end_user_id(services.sessions, caller.app, user)
    handle = await workflow_app.start_run(
        services.sessions,
        get_runner(request),
        caller.app,
        Caller("end_user", who, user),
        inputs=body.inputs,
        files=body.files,
        version=version,
        blocking=body.response_mode != "streaming",
    )
    return await _reply(handle, body.response_mode)


@service_router.post("/run")
async def run_workflow(
    body: RunBody, caller: AppCallerDep, services: ServicesDep, request: Request
) -> Any:
    return await _service_run(body, caller, services, request)


@service_router.post("/{workflow_id}/run")
async def run_workflow_version(
    workflow_id: uuid.UUID,
    body: RunBody,
    caller: AppCallerDep,
    services: ServicesDep,
    request: Request,
) -> Any:
    return await _service_run(body, caller, services, request, workflow_id)


@service_router.get("/run/{run_id}")
async def get_workflow_run(
    run_id: uuid.UUID, caller: AppCallerDep, services: ServicesDep
) -> dict[str, Any]:
    async with services.transaction() as db:
        run = await workflow_app.get_run(db, caller.app, run_id)
    shown = serialize.workflow_run(run)
    keys = ("id", "workflow_id", "status", "inputs", "outputs", "error", "total_steps",
            "total_tokens", "created_at", "finished_at", "elapsed_time")  # fmt: skip
    return {key: shown[key] for key in keys}


class StopBody(BaseModel):
    user: str | None = None


@service_router.post("/tasks/{task_id}/stop")
async def stop_workflow_task(
    task_id: str, body: StopBody, caller: AppCallerDep, services: ServicesDep, request: Request
) -> dict[str, str]:
    user_param(body.user)
    await workflow_app.stop_run(services.sessions, get_runner(request), caller.app, task_id)
    return {"result": "success"}


# --- console ---------------------------------------------------------------------------------


async def _app(services: ServicesDep, workspace_id: uuid.UUID, app_id: uuid.UUID) -> App:
    async with services.transaction() as db:
        app = await app_store.get_app(db, workspace_id, app_id)
    store.engine_mode(app)  # refuses apps that have no workflow
    return app


class DraftBody(BaseModel):
    graph: dict[str, Any]
    features: dict[str, Any] = {}
    hash: str | None = None
    environment_variables: list[dict[str, Any]] = []
    conversation_variables: list[dict[str, Any]] = []


@console_router.get("/workflows/draft")
async def get_draft(
    app_id: uuid.UUID, user: ConsoleUserDep, services: ServicesDep
) -> dict[str, Any]:
    async with services.transaction() as db:
        draft = await store.get_draft(db, user.workspace_id, app_id)
    return serialize.workflow(draft, store.masked_environment(draft))


@console_router.post("/workflows/draft")
async def save_draft(
    app_id: uuid.UUID, body: DraftBody, user: ConsoleUserDep, services: ServicesDep
) -> dict[str, Any]:
    user.require_editor()
    content = store.DraftContent(
        body.graph, body.features, body.environment_variables, body.conversation_variables
    )
    key = store.env_key(services.runtime.secret_key)
    async with services.transaction() as db:
        app = await app_store.get_app(db, user.workspace_id, app_id)
        draft = await store.save_draft(
            db, app, content, account_id=user.account.id, key=key, expected_hash=body.hash
        )
        saved = serialize.workflow(draft, [])
    return {"result": "success", "hash": saved["hash"], "updated_at": saved["updated_at"]}


class PublishBody(BaseModel):
    marked_name: str = Field("", max_length=255)
    marked_comment: str = Field("", max_length=1000)


@console_router.post("/workflows/publish")
async def publish(
    app_id: uuid.UUID,
    user: ConsoleUserDep,
    services: ServicesDep,
    body: Annotated[PublishBody | None, Body()] = None,
) -> dict[str, Any]:
    user.require_editor()
    given = body or PublishBody()
    async with services.transaction() as db:
        app = await app_store.get_app(db, user.workspace_id, app_id)
        version = await store.publish(
            db,
            app,
            account_id=user.account.id,
            marked_name=given.marked_name,
            marked_comment=given.marked_comment,
        )
        return {"result": "success", "created_at": serialize.ts(version.created_at)}


@console_router.get("/workflows/publish")
async def get_published(
    app_id: uuid.UUID, user: ConsoleUserDep, services: ServicesDep
) -> dict[str, Any]:
    async with services.transaction() as db:
        app = await app_store.get_app(db, user.workspace_id, app_id)
        version = await store.get_published(db, app)
    return serialize.workflow(version, store.masked_environment(version))


@console_router.get("/workflows")
async def list_versions(
    app_id: uuid.UUID,
    user: ConsoleUserDep,
    services: ServicesDep,
    page: Annotated[int, Query(ge=1, le=99999)] = 1,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    async with services.transaction() as db:
        found = await store.list_versions(db, user.workspace_id, app_id, page=page, limit=limit)
        items = [serialize.workflow(w, store.masked_environment(w)) for w in found.items]
    return {"items": items, "page": page, "limit": limit, "has_more": found.has_more}


class DraftRunBody(BaseModel):
    inputs: dict[str, Any] = {}
    files: list[dict[str, Any]] | None = None


@console_router.post("/workflows/draft/run")
async def run_draft(
    app_id: uuid.UUID,
    body: DraftRunBody,
    user: ConsoleUserDep,
    services: ServicesDep,
    request: Request,
) -> StreamingResponse:
    app = await _app(services, user.workspace_id, app_id)
    account = user.account
    handle = await workflow_app.start_run(
        services.sessions,
        get_runner(request),
        app,
        Caller("account", account.id, str(account.id), account.name, account.email),
        inputs=body.inputs,
        files=body.files,
        draft=True,
    )
    return sse_response(_stream(handle))


class NodeRunBody(BaseModel):
    inputs: dict[str, Any] = {}


@console_router.post("/workflows/draft/nodes/{node_id}/run")
async def run_node(
    app_id: uuid.UUID,
    node_id: str,
    body: NodeRunBody,
    user: ConsoleUserDep,
    services: ServicesDep,
    request: Request,
) -> dict[str, Any]:
    app = await _app(services, user.workspace_id, app_id)
    row = await run_single_node(
        services.sessions, get_runner(request), app, node_id, body.inputs, user.account.id
    )
    return serialize.node_execution(row)


@console_router.get("/workflows/draft/nodes/{node_id}/last-run")
async def last_node_run(
    app_id: uuid.UUID, node_id: str, user: ConsoleUserDep, services: ServicesDep
) -> dict[str, Any]:
    async with services.transaction() as db:
        app = await app_store.get_app(db, user.workspace_id, app_id)
        return serialize.node_execution(await workflow_app.last_node_run(db, app, node_id))


@console_router.get("/workflow-runs")
async def list_runs(
    app_id: uuid.UUID,
    user: ConsoleUserDep,
    services: ServicesDep,
    page: Annotated[int, Query(ge=1, le=99999)] = 1,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    async with services.transaction() as db:
        app = await app_store.get_app(db, user.workspace_id, app_id)
        found = await workflow_app.list_runs(db, app, page=page, limit=limit)
        return found.as_json([serialize.workflow_run(run) for run in found.items])


@console_router.get("/workflow-runs/{run_id}")
async def get_run(
    app_id: uuid.UUID, run_id: uuid.UUID, user: ConsoleUserDep, services: ServicesDep
) -> dict[str, Any]:
    async with services.transaction() as db:
        app = await app_store.get_app(db, user.workspace_id, app_id)
        run = await workflow_app.get_run(db, app, run_id)
        return {**serialize.workflow_run(run), "graph": run.graph}


@console_router.get("/workflow-runs/{run_id}/node-executions")
async def get_run_nodes(
    app_id: uuid.UUID, run_id: uuid.UUID, user: ConsoleUserDep, services: ServicesDep
) -> dict[str, Any]:
    async with services.transaction() as db:
        app = await app_store.get_app(db, user.workspace_id, app_id)
        rows = await workflow_app.node_executions(db, app, run_id)
        return {"data": [serialize.node_execution(row) for row in rows]}


@console_router.post("/workflow-runs/tasks/{task_id}/stop")
async def stop_run(
    app_id: uuid.UUID, task_id: str, user: ConsoleUserDep, services: ServicesDep, request: Request
) -> dict[str, str]:
    app = await _app(services, user.workspace_id, app_id)
    await workflow_app.stop_run(services.sessions, get_runner(request), app, task_id)
    return {"result": "success"}
