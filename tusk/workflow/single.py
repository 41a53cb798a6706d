"""Running one node of a draft on its own, with the values it reads given by the person testing
it (the console's "run this step"). The execution is recorded like a node of a run, with no run."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tusk.db.models import App, WorkflowNodeExecution
from tusk.errors import InvalidParam, NotFound
from tusk.workflow import store
from tusk.workflow.context import RunContext
from tusk.workflow.events import NodeRun
from tusk.workflow.executor import describe_error
from tusk.workflow.graph import CONTAINER_TYPES
from tusk.workflow.nodes.base import NodeContext
from tusk.workflow.runner import WorkflowRunner
from tusk.workflow.variables import SYSTEM, VariablePool


def selector_of(key: str) -> list[str]:
    """`#node.var#`, `node.var` or `sys.query` as a selector."""
    parts = key.strip().strip("#").split(".")
    if len(parts) < 2 or not all(parts):
        raise InvalidParam(f"input {key!r} should name a node and a value, like node_id.name.")
    return parts


def given_pool(given: Mapping[str, Any], environment: Mapping[str, Any]) -> VariablePool:
    system = {}
    values: dict[str, dict[str, Any]] = {}
    for key, value in given.items():
        node_id, name = selector_of(key)[:2]
        if node_id == SYSTEM:
            system[name] = value
        else:
            values.setdefault(node_id, {})[name] = value
    pool = VariablePool.for_run(system, environment)
    for node_id, outputs in values.items():
        pool.set_outputs(node_id, outputs)
    return pool


async def _no_inner(*_: Any, **__: Any) -> Any:
    raise InvalidParam("an iteration or loop is tested by running the whole draft.")


async def run_single_node(
    sessions: async_sessionmaker[AsyncSession],
    runner: WorkflowRunner,
    app: App,
    node_id: str,
    given: Mapping[str, Any],
    account_id: uuid.UUID,
) -> WorkflowNodeExecution:
    async with sessions.begin() as db:
        draft = await store.get_draft(db, app.workspace_id, app.id)
    node = runner.plan(app, draft).nodes.get(node_id)
    if node is None:
        raise NotFound(f"The draft has no node {node_id!r}.")
    if node.spec.type in CONTAINER_TYPES:
        await _no_inner()
    pool = given_pool(given, store.environment_values(draft, runner.env_key))
    context = RunContext(
        workspace_id=app.workspace_id,
        app_id=app.id,
        workflow_id=draft.id,
        run_id=uuid.uuid4(),
        resources=runner.resources,
        inputs=dict(given),
        limits=runner.limits,
        user_id=str(account_id),
    )
    record = NodeRun(str(uuid.uuid4()), node.id, node.spec.type, node.title, 1, None)
    ctx = NodeContext(context, pool, record, lambda *_: None, lambda _: None, _no_inner)
    started = time.perf_counter()
    try:
        result = await node.run(ctx)
        record.status, record.inputs, record.outputs = "succeeded", result.inputs, result.outputs
        record.process_data, record.metadata = result.process_data, result.metadata
    except Exception as exc:
        record.status, record.error = "failed", describe_error(exc)[0]
    row = WorkflowNodeExecution(
        workspace_id=app.workspace_id,
        app_id=app.id,
        workflow_id=draft.id,
        workflow_run_id=None,
        triggered_from="single-step",
        index=1,
        node_execution_id=record.id,
        node_id=node.id,
        node_type=node.spec.type,
        title=node.title[:255],
        inputs=record.inputs or dict(given),
        process_data=record.process_data,
        outputs=record.outputs,
        status=record.status,
        error=record.error,
        elapsed_time=time.perf_counter() - started,
        execution_metadata=record.metadata,
        created_by_role="account",
        created_by=account_id,
        finished_at=datetime.now(UTC),
    )
    async with sessions.begin() as db:
        db.add(row)
        await db.flush()
        await db.refresh(row)
    return row
