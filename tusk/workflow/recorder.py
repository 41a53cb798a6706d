"""Writes a run and its node executions to PostgreSQL without slowing the run down.

The run's row is inserted as it starts, while the run goes on (its events reach callers once the
row is there: see tusk.workflow.runner); finished node executions are buffered and written in
batches (one pipelined executemany) by a background task, and the run's row is updated once at the
end together with the last batch. While the run lasts its heartbeat is refreshed, so that a run
whose process died is found by the sweeper (tusk.workflow.jobs) and marked failed.

Values too large to keep in a row (inputs, outputs, process data) are written to storage in
full, and the row keeps a preview and the storage key."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tusk.db.models import WorkflowNodeExecution, WorkflowRun
from tusk.storage import Storage
from tusk.workflow.events import (
    ContainerCompleted,
    Event,
    NodeFinished,
    NodeRun,
    RunState,
)

log = logging.getLogger(__name__)

FLUSH_EVERY = 0.2  # seconds between batches while a run goes on
BATCH = 200  # node executions that trigger a write before the interval ends
HEARTBEAT_EVERY = 10.0  # seconds; the sweeper ends runs silent for much longer
MAX_STORED_JSON = 64 * 1024  # characters of one value kept in its row
PREVIEW_CHARS = 2000


@dataclass(frozen=True)
class RunMeta:
    """Who and what a run belongs to, as Dify records it."""

    workspace_id: uuid.UUID
    app_id: uuid.UUID
    workflow_id: uuid.UUID
    type: str  # "workflow" or "chat"
    version: str
    graph: Mapping[str, Any]
    triggered_from: str  # app-run, debugging, single-step
    created_by_role: str  # account or end_user
    created_by: uuid.UUID | None


_NOT_WAITING_FOR_DISK = text("SET LOCAL synchronous_commit = off")


def _timestamp(seconds: float | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds is not None else None


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


class RunRecorder:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        storage: Storage,
        meta: RunMeta,
        run_id: uuid.UUID,
    ) -> None:
        self.sessions = sessions
        self.storage = storage
        self.meta = meta
        self.run_id = run_id
        self._pending: list[NodeRun] = []
        self._wake = asyncio.Event()
        self._inserted: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._last_beat = 0.0

    # --- the run's life ------------------------------------------------------------------

    def begin(self, inputs: Mapping[str, Any]) -> asyncio.Task[None]:
        """Start inserting the run's row, and the writer (whose batches wait for that row), so
        that the run need not wait for it; the insert is returned (it raises if it failed, and
        `finish` raises it again)."""
        self._inserted = asyncio.create_task(self._insert(inputs))
        self._writer = asyncio.create_task(self._write_loop())
        return self._inserted

    async def start(self, inputs: Mapping[str, Any]) -> None:
        """`begin`, and wait for the run's row."""
        await self.begin(inputs)

    async def _insert(self, inputs: Mapping[str, Any]) -> None:
        """Insert the run's row, status `running`. It is only a marker until `finish` writes
        the outcome, so its commit does not wait for the disk: a crash in the next fraction of
        a second may lose it, along with the run it marks; `finish`'s durable commit flushes it
        (WAL is written in order), and a run that outlives the WAL writer's delay is on disk
        for the sweeper to find."""
        meta = self.meta
        async with self.sessions.begin() as db:
            await db.execute(_NOT_WAITING_FOR_DISK)
            await db.execute(
                insert(WorkflowRun).values(
                    id=self.run_id,
                    workspace_id=meta.workspace_id,
                    app_id=meta.app_id,
                    workflow_id=meta.workflow_id,
                    type=meta.type,
                    triggered_from=meta.triggered_from,
                    version=meta.version,
                    graph=dict(meta.graph),
                    inputs=await self._keep("run", "inputs", dict(inputs)),
                    created_by_role=meta.created_by_role,
                    created_by=meta.created_by,
                )
            )
        self._last_beat = asyncio.get_running_loop().time()

    def __call__(self, event: Event) -> None:
        """The executor's event sink: buffers what is to be written; never waits."""
        if isinstance(event, NodeFinished | ContainerCompleted):
            self._pending.append(event.node)
            if len(self._pending) >= BATCH:
                self._wake.set()

    async def finish(self, state: RunState) -> None:
        """Write what is left and the run's result in one transaction."""
        await self._stop_writer()
        if self._inserted is not None:
            await self._inserted  # a run whose row could not be written fails here
        async with self.sessions.begin() as db:
            await self._write_nodes(db)
            await db.execute(
                update(WorkflowRun)
                .where(WorkflowRun.id == self.run_id)
                .values(
                    status=state.status,
                    outputs=await self._keep("run", "outputs", state.outputs),
                    error=state.error,
                    elapsed_time=state.elapsed_time,
                    total_tokens=state.total_tokens,
                    total_steps=state.total_steps,
                    exceptions_count=state.exceptions_count,
                    finished_at=_timestamp(state.finished_at),
                )
            )

    async def abandon(self, error: str) -> None:
        """The run ended without `finish` (the process is shutting down): mark it failed."""
        await self._stop_writer()
        with contextlib.suppress(Exception):
            async with self.sessions.begin() as db:
                await self._write_nodes(db)
                await db.execute(
                    update(WorkflowRun)
                    .where(WorkflowRun.id == self.run_id, WorkflowRun.status == "running")
                    .values(status="failed", error=error, finished_at=datetime.now(UTC))
                )

    # --- batches -------------------------------------------------------------------------

    async def _stop_writer(self) -> None:
        """Let the writer finish the batch it may be writing, then end. (Cancelling it could be
        lost in a wake-up racing the cancellation, leaving this waiting for ever.)"""
        if self._writer is not None:
            self._closing = True
            self._wake.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._inserted is not None:
            try:
                await asyncio.shield(self._inserted)
            except Exception:  # reported by `finish`
                return
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_EVERY):
                    await self._wake.wait()
            self._wake.clear()
            if self._closing:
                return
            beat = loop.time() - self._last_beat >= HEARTBEAT_EVERY
            if not self._pending and not beat:
                continue
            try:
                async with self.sessions.begin() as db:
                    await self._write_nodes(db)
                    if beat:
                        await self._beat(db)
                        self._last_beat = loop.time()
            except Exception:  # the database is away: keep the batch and try again
                log.warning("could not record workflow run %s yet", self.run_id, exc_info=True)

    async def _beat(self, db: AsyncSession) -> None:
        await db.execute(
            update(WorkflowRun)
            .where(WorkflowRun.id == self.run_id)
            .values(heartbeat_at=datetime.now(UTC))
        )

    async def _write_nodes(self, db: AsyncSession) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            rows = [await self._row(node) for node in batch]
            await db.execute(insert(WorkflowNodeExecution), rows)
        except BaseException:
            self._pending[:0] = batch
            raise

    async def _row(self, node: NodeRun) -> dict[str, Any]:
        meta, where = self.meta, f"nodes/{node.id}"
        return {
            "id": uuid.UUID(node.id),
            "workspace_id": meta.workspace_id,
            "app_id": meta.app_id,
            "workflow_id": meta.workflow_id,
            "workflow_run_id": self.run_id,
            "triggered_from": "workflow-run",
            "index": node.index,
            "predecessor_node_id": node.predecessor_node_id,
            "node_execution_id": node.id,
            "node_id": node.node_id,
            "node_type": node.node_type,
            "title": node.title[:255],
            "inputs": await self._keep(where, "inputs", node.inputs),
            "process_data": await self._keep(where, "process_data", node.process_data),
            "outputs": await self._keep(where, "outputs", node.outputs),
            "status": node.status,
            "error": node.error,
            "elapsed_time": node.elapsed_time,
            "execution_metadata": node.metadata,
            "created_by_role": meta.created_by_role,
            "created_by": meta.created_by,
            "created_at": _timestamp(node.created_at),
            "finished_at": _timestamp(node.finished_at),
        }

    async def _keep(self, where: str, name: str, value: Any) -> Any:
        """The value as stored in its row: itself, or a preview with the full value in storage."""
        if value is None:
            return None
        try:  # plain JSON is stored as it is: the driver writes it the same way
            encoded, plain = json.dumps(value, ensure_ascii=False), True
        except TypeError:  # dates, UUIDs, ... are kept as their text
            encoded, plain = json.dumps(value, ensure_ascii=False, default=str), False
        if len(encoded) <= MAX_STORED_JSON:
            return value if plain else json.loads(encoded)
        key = f"workflow_runs/{self.meta.workspace_id}/{self.run_id}/{where}/{name}.json"
        await self.storage.put(key, _one(encoded.encode()))
        return {"__truncated__": True, "storage_key": key, "size": len(encoded),
                "preview": encoded[:PREVIEW_CHARS]}  # fmt: skip
