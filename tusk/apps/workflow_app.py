"""Workflow apps: start a run of the published workflow (or a chosen version, or the draft when
debugging) with checked inputs, and read runs back."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tusk.db.engine import transaction_of
from tusk.db.models import App, Workflow, WorkflowNodeExecution, WorkflowRun
from tusk.db.paging import Page, paginate
from tusk.errors import InvalidParam, NotFound, TuskError
from tusk.workflow import store
from tusk.workflow.events import WorkflowFinished
from tusk.workflow.files import UploadResolver
from tusk.workflow.inputs import check_inputs
from tusk.workflow.nodes.flow import StartNode, StartVariable
from tusk.workflow.plan import Plan
from tusk.workflow.runner import RunHandle, RunRequest, WorkflowRunner
from tusk.workflow.wire import run_summary


class NotWorkflowApp(TuskError):
    code, status = "not_workflow_app", 400


@dataclass(frozen=True)
class Caller:
    role: str  # "end_user" (Service API) or "account" (console)
    id: uuid.UUID | None
    user_id: str  # what the run sees as sys.user_id
    name: str = ""  # an account's, for `created_by`
    email: str = ""

    @property
    def creator(self) -> dict[str, Any]:
        """Dify's `created_by` of a run: an end user by its `user`, an account by name."""
        if self.role == "account":
            return {"id": str(self.id), "name": self.name, "email": self.email}
        return {"id": str(self.id) if self.id else None, "user": self.user_id}


def start_form(plan: Plan) -> Sequence[StartVariable]:
    for node in plan.nodes.values():
        if isinstance(node, StartNode) and node.spec.parent_id is None:
            return node.config.variables
    return ()


async def pick_workflow(
    db: AsyncSession,
    app: App,
    *,
    version: uuid.UUID | None,
    draft: bool,
    runner: WorkflowRunner | None = None,
) -> Workflow:
    """The draft, a chosen version, or the published one; published versions through the
    runner's copies when one is given."""
    if draft:
        return await store.get_draft(db, app.workspace_id, app.id)
    if runner is not None:
        return await (runner.version(db, app, version) if version else runner.published(db, app))
    if version is not None:
        return await store.get_version(db, app.workspace_id, app.id, version)
    return await store.get_published(db, app)


async def start_run(
    sessions: async_sessionmaker[AsyncSession],
    runner: WorkflowRunner,
    app: App,
    caller: Caller,
    *,
    inputs: Any,
    files: Any = None,
    version: uuid.UUID | None = None,
    draft: bool = False,
    blocking: bool = False,
) -> RunHandle:
    if app.mode != "workflow":
        raise NotWorkflowApp("Please check if your app mode matches the right API route.")
    async with transaction_of(sessions) as db:
        workflow = await pick_workflow(db, app, version=version, draft=draft, runner=runner)
        plan = runner.plan(app, workflow)
        resolve = UploadResolver(db, app.workspace_id)
        checked = await check_inputs(start_form(plan), inputs or {}, resolve)
        given_files = await system_files(files, resolve)
    request = RunRequest(
        app=app,
        workflow=workflow,
        inputs=checked,
        user_id=caller.user_id,
        created_by_role=caller.role,
        created_by=caller.id,
        triggered_from="debugging" if draft else "app-run",
        system={"files": given_files},
        creator=caller.creator,
        blocking=blocking,
    )
    return runner.start(request)


async def system_files(files: Any, resolve: UploadResolver) -> list[dict[str, Any]]:
    if not files:
        return []
    if not isinstance(files, list) or not all(isinstance(f, Mapping) for f in files):
        raise InvalidParam("files must be a list of file objects.", params="files")
    field = StartVariable(variable="files", type="file-list")
    return [await resolve(f, field) for f in files]


BLOCKING_KEYS = ("id", "workflow_id", "status", "outputs", "error", "elapsed_time",
                 "total_tokens", "total_steps", "created_at", "finished_at")  # fmt: skip


async def blocking_reply(handle: RunHandle) -> dict[str, Any]:
    """Dify's blocking body: wait for the end of the run."""
    summary: dict[str, Any] = {}
    async for event in handle.events():
        if isinstance(event, WorkflowFinished):
            finished = run_summary(event.run)
            summary = {key: finished[key] for key in BLOCKING_KEYS}
    run_id = str(handle.run_id)
    return {"task_id": run_id, "workflow_run_id": run_id, "data": summary}


# --- reading runs back -----------------------------------------------------------------------


async def get_run(db: AsyncSession, app: App, run_id: uuid.UUID) -> WorkflowRun:
    query = select(WorkflowRun).where(
        WorkflowRun.id == run_id,
        WorkflowRun.app_id == app.id,
        WorkflowRun.workspace_id == app.workspace_id,
    )
    run = (await db.execute(query)).scalar_one_or_none()
    if run is None:
        raise NotFound("Workflow run not found.")
    return run


async def list_runs(db: AsyncSession, app: App, *, page: int, limit: int) -> Page[WorkflowRun]:
    query = select(WorkflowRun).where(
        WorkflowRun.app_id == app.id, WorkflowRun.workspace_id == app.workspace_id
    )
    return await paginate(db, query.order_by(WorkflowRun.created_at.desc()), page, limit)


async def node_executions(
    db: AsyncSession, app: App, run_id: uuid.UUID
) -> Sequence[WorkflowNodeExecution]:
    await get_run(db, app, run_id)
    query = (
        select(WorkflowNodeExecution)
        .where(
            WorkflowNodeExecution.workflow_run_id == run_id,
            WorkflowNodeExecution.workspace_id == app.workspace_id,
        )
        .order_by(WorkflowNodeExecution.index)
    )
    return (await db.execute(query)).scalars().all()


async def last_node_run(db: AsyncSession, app: App, node_id: str) -> WorkflowNodeExecution:
    """The node's latest execution in a run of the draft, or alone."""
    draft = await store.get_draft(db, app.workspace_id, app.id)
    query = (
        select(WorkflowNodeExecution)
        .where(
            WorkflowNodeExecution.workflow_id == draft.id,
            WorkflowNodeExecution.node_id == node_id,
            WorkflowNodeExecution.workspace_id == app.workspace_id,
        )
        .order_by(WorkflowNodeExecution.created_at.desc())
        .limit(1)
    )
    found = (await db.execute(query)).scalar_one_or_none()
    if found is None:
        raise NotFound("This node has not run yet.")
    return found


async def stop_run(
    sessions: async_sessionmaker[AsyncSession], runner: WorkflowRunner, app: App, task_id: str
) -> None:
    """Stop a run of this app (a task id is its run id); stopping an ended run does nothing."""
    try:
        run_id = uuid.UUID(task_id)
    except ValueError:
        raise NotFound("Workflow run not found.") from None
    async with sessions.begin() as db:
        run = await get_run(db, app, run_id)
    if run.status == "running":
        await runner.stop(run_id)
