"""Running a stored workflow: build (or reuse) its plan, fill the variable pool, execute, record
every node, and hand the events to whoever asked (an SSE stream or a blocking reply).

A run goes on if its caller goes away, as Dify's do. Stop requests travel through PostgreSQL's
LISTEN/NOTIFY, so any API process can stop a run that another one executes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tusk.db import pubsub
from tusk.db.models import App, Workflow
from tusk.db.pubsub import Broker
from tusk.workflow.context import History, Limits, Resources, RunContext
from tusk.workflow.events import Event, RunFailed, WorkflowFinished
from tusk.workflow.executor import Executor
from tusk.workflow.plan import Plan
from tusk.workflow.recorder import RunMeta, RunRecorder
from tusk.workflow.store import (
    DRAFT,
    WorkflowNotPublished,
    engine_mode,
    environment_values,
    get_version,
    plan_of,
)
from tusk.workflow.variables import VariablePool

log = logging.getLogger(__name__)

STOP_TOPIC = "workflow-stop"
PLANS_KEPT = 256
# A blocking run's row is inserted this late, so that most are written once, at their end (see
# RunRecorder.begin): PostgreSQL's default `wal_writer_delay`, in which a crash can lose a row
# committed without waiting for the disk anyway.
MARK_BLOCKING_RUNS_AFTER = 0.2


@dataclass
class RunRequest:
    app: App
    workflow: Workflow
    inputs: dict[str, Any]  # already checked against the Start node (tusk.workflow.inputs)
    user_id: str
    created_by_role: str  # "account" or "end_user"
    created_by: uuid.UUID | None
    triggered_from: str = "app-run"  # or "debugging"
    system: dict[str, Any] = field(default_factory=dict)  # query, files, conversation_id, ...
    conversation: dict[str, Any] = field(default_factory=dict)
    conversation_id: uuid.UUID | None = None
    history: History | None = None
    creator: dict[str, Any] = field(default_factory=dict)  # Dify's `created_by` of the run
    blocking: bool = False  # the caller sees nothing of the run before its end


_END = object()


class RunHandle:
    """A started run: its id, and its events in order until the end."""

    def __init__(self, run_id: uuid.UUID) -> None:
        self.run_id = run_id
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.pool: VariablePool | None = None  # the run's values (conversation.* at the end)
        # Set once the run's row is written: its events are told after, so that a caller that
        # reads the run by its id on `workflow_started` finds it. The run does not wait for it.
        self.recorded = asyncio.Event()

    async def events(self) -> AsyncIterator[Event]:
        await self.recorded.wait()
        while (event := await self.queue.get()) is not _END:
            yield event


class WorkflowRunner:
    def __init__(self, resources: Resources, broker: Broker, env_key: bytes) -> None:
        self.resources = resources
        self.broker = broker
        self.env_key = env_key
        self.limits = Limits.from_settings(resources.settings)
        self._plans: OrderedDict[tuple[uuid.UUID, float], tuple[Plan, str]] = OrderedDict()
        self._versions: OrderedDict[uuid.UUID, Workflow] = OrderedDict()
        self._running: dict[uuid.UUID, Executor] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # --- plans ---------------------------------------------------------------------------

    def plan(self, app: App, workflow: Workflow) -> Plan:
        return self._compiled(app, workflow)[0]

    def _compiled(self, app: App, workflow: Workflow) -> tuple[Plan, str]:
        """The plan, and the graph as every run's row keeps it (JSON: a graph of tens of
        kilobytes took a fraction of a millisecond to encode). Published versions never
        change; a draft is keyed by when it was last saved."""
        stamp = workflow.updated_at.timestamp() if workflow.version == DRAFT else 0.0
        key = (workflow.id, stamp)
        compiled = self._plans.get(key)
        if compiled is None:
            graph = json.dumps(workflow.graph, ensure_ascii=False)
            compiled = self._plans[key] = (plan_of(workflow, engine_mode(app)), graph)
            if len(self._plans) > PLANS_KEPT:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(key)
        return compiled

    async def version(self, db: AsyncSession, app: App, workflow_id: uuid.UUID) -> Workflow:
        """A published version of the app's workflow. Versions are never changed once
        published, so each is read from the database once (the app's current version is named
        by the app row, which callers read fresh or from a cache that follows changes)."""
        found = self._versions.get(workflow_id)
        if found is None or found.app_id != app.id or found.workspace_id != app.workspace_id:
            found = await get_version(db, app.workspace_id, app.id, workflow_id)
            db.expunge(found)  # kept as loaded, whatever becomes of this transaction
            self._versions[workflow_id] = found
            if len(self._versions) > PLANS_KEPT:
                self._versions.popitem(last=False)
        else:
            self._versions.move_to_end(workflow_id)
        return found

    async def published(self, db: AsyncSession, app: App) -> Workflow:
        if app.workflow_id is None:
            raise WorkflowNotPublished("Workflow not published.")
        return await self.version(db, app, app.workflow_id)

    # --- runs ----------------------------------------------------------------------------

    def start(self, request: RunRequest) -> RunHandle:
        """Start the run in the background; its events arrive through the handle."""
        handle = RunHandle(uuid.uuid4())
        plan, graph = self._compiled(request.app, request.workflow)
        handle.task = asyncio.create_task(self._run(request, plan, _meta(request, graph), handle))
        self._tasks.add(handle.task)
        handle.task.add_done_callback(self._tasks.discard)
        return handle

    async def _run(self, request: RunRequest, plan: Plan, meta: RunMeta, handle: RunHandle) -> None:
        workflow, app = request.workflow, request.app
        recorder = RunRecorder(self.resources.sessions, self.resources.storage, meta, handle.run_id)
        context = RunContext(
            workspace_id=app.workspace_id,
            app_id=app.id,
            workflow_id=workflow.id,
            run_id=handle.run_id,
            resources=self.resources,
            inputs=request.inputs,
            limits=self.limits,
            user_id=request.user_id,
            conversation_id=request.conversation_id,
            history=request.history,
        )
        pool = VariablePool.for_run(
            self._system(request, handle.run_id),
            environment_values(workflow, self.env_key),
            request.conversation,
        )
        handle.pool = pool
        held: list[Event] = []  # the end is told once it is recorded

        def emit(event: Event) -> None:
            recorder(event)
            if isinstance(event, WorkflowFinished | RunFailed):
                held.append(event)
            else:
                handle.queue.put_nowait(event)

        executor = Executor(plan, context, pool, emit, inputs=request.inputs)
        executor.state.created_by = request.creator
        self._running[handle.run_id] = executor
        try:
            mark_after = MARK_BLOCKING_RUNS_AFTER if request.blocking else 0.0
            inserted = recorder.begin(request.inputs, mark_after=mark_after)
            inserted.add_done_callback(lambda _: handle.recorded.set())
            state = await executor.run()
            await recorder.finish(state)
        except BaseException as exc:
            error = f"the run ended unexpectedly: {type(exc).__name__}"
            await recorder.abandon(error)
            for event in held:  # a run whose end could not be recorded did not succeed
                if isinstance(event, WorkflowFinished):
                    event.run.status, event.run.error = "failed", error
            if not isinstance(exc, Exception):
                raise
            log.exception("workflow run %s ended unexpectedly", handle.run_id)
            held.append(RunFailed("the run ended unexpectedly; see the server log"))
        finally:
            handle.recorded.set()  # whatever became of the row, the end is told
            self._running.pop(handle.run_id, None)
            for event in held:
                handle.queue.put_nowait(event)
            handle.queue.put_nowait(_END)

    def _system(self, request: RunRequest, run_id: uuid.UUID) -> dict[str, Any]:
        return {
            "user_id": request.user_id,
            "app_id": str(request.app.id),
            "workflow_id": str(request.workflow.id),
            "workflow_run_id": str(run_id),
            "timestamp": int(time.time()),
            "files": [],
            **request.system,
        }

    # --- stop ----------------------------------------------------------------------------

    async def stop(self, run_id: uuid.UUID) -> None:
        """Stop the run wherever it executes (this process or another)."""
        self.stop_here(run_id)
        async with self.resources.sessions.begin() as db:
            await pubsub.publish(db, STOP_TOPIC, {"run_id": str(run_id)})

    def stop_here(self, run_id: uuid.UUID) -> bool:
        executor = self._running.get(run_id)
        if executor is not None:
            executor.stop()
        return executor is not None

    async def follow_stops(self) -> None:
        """Listen for stop requests from every process; runs until cancelled."""
        async with self.broker.subscribe(STOP_TOPIC) as subscription:
            async for message in subscription:
                with contextlib.suppress(KeyError, ValueError, TypeError):
                    self.stop_here(uuid.UUID(message["run_id"]))

    async def close(self) -> None:
        """Stop this process's runs (shutdown); each ends `stopped` and is recorded."""
        for executor in list(self._running.values()):
            executor.stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _meta(request: RunRequest, graph: str) -> RunMeta:
    workflow = request.workflow
    return RunMeta(
        workspace_id=request.app.workspace_id,
        app_id=request.app.id,
        workflow_id=workflow.id,
        type=workflow.type,
        version=workflow.version,
        graph=graph,
        triggered_from=request.triggered_from,
        created_by_role=request.created_by_role,
        created_by=request.created_by,
    )
