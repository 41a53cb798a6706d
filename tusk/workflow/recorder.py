"""Writes a run and its node executions to PostgreSQL without slowing the run down.

The run's row is inserted as it starts, while the run goes on (its events reach callers once the
row is there: see tusk.workflow.runner); finished node executions are buffered and written in
batches (one multi-row INSERT) by a background task, and the run's row is updated at the end in
the same statement as the last batch. A blocking run's row waits a moment, and a run that ends
first is inserted whole at its end, in one statement with its node executions. While the run
lasts its heartbeat is refreshed, so that a run whose process died is found by the sweeper
(tusk.workflow.jobs) and marked failed.

Values too large to keep in a row (inputs, outputs, process data) are written to storage in
full, and the row keeps a preview and the storage key."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tusk.db.driver import (
    Connection,
    driver_connection,
    execute,
    execute_alone,
    insert_statement,
    not_waiting_for_disk,
)
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
    graph: str  # JSON
    triggered_from: str  # app-run, debugging, single-step
    created_by_role: str  # account or end_user
    created_by: uuid.UUID | None


Row = tuple[Any, ...]

# The rows are written through the driver (tusk.db.driver): these are every run's statements.
_JSON_COLUMNS = frozenset({"graph", "inputs", "process_data", "outputs", "execution_metadata"})
_RUN_COLUMNS = ("id", "workspace_id", "app_id", "workflow_id", "type", "triggered_from",
                "version", "graph", "inputs", "created_by_role", "created_by",
                "created_at")  # fmt: skip
_OUTCOME_COLUMNS = ("status", "outputs", "error", "elapsed_time", "total_tokens", "total_steps",
                    "exceptions_count", "finished_at")  # fmt: skip
_NODE_COLUMNS = ("id", "workspace_id", "app_id", "workflow_id", "workflow_run_id",
                 "triggered_from", "index", "predecessor_node_id", "node_execution_id", "node_id",
                 "node_type", "title", "inputs", "process_data", "outputs", "status", "error",
                 "elapsed_time", "execution_metadata", "created_by_role", "created_by",
                 "created_at", "finished_at")  # fmt: skip


_INSERT_RUN = insert_statement("workflow_runs", _RUN_COLUMNS, _JSON_COLUMNS)
_INSERT_ENDED_RUN = insert_statement(
    "workflow_runs", _RUN_COLUMNS + _OUTCOME_COLUMNS, _JSON_COLUMNS
)
ROWS_PER_STATEMENT = 500  # node executions (23 values each; a statement takes 65,535)


def _insert_nodes(rows: int) -> str:
    """Node executions in a batch that failed after its commit are sent again: the copies are
    ignored."""
    statement = insert_statement("workflow_node_executions", _NODE_COLUMNS, _JSON_COLUMNS, rows)
    return f"{statement} ON CONFLICT (id) DO NOTHING"


_FINISH_RUN = """
    UPDATE workflow_runs SET status = %s, outputs = %s::jsonb, error = %s, elapsed_time = %s,
        total_tokens = %s, total_steps = %s, exceptions_count = %s, finished_at = %s
    WHERE id = %s"""
_ABANDON_RUN = """
    UPDATE workflow_runs SET status = 'failed', error = %s, finished_at = now()
    WHERE id = %s AND status = 'running'"""
_BEAT = "UPDATE workflow_runs SET heartbeat_at = now() WHERE id = %s"


def _chunks(rows: list[Row], size: int) -> list[list[Row]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


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
        self._marking = False  # the run's row is being (or has been) inserted
        self._ours = False  # the run's end is to insert its row (see _row_is_ours)
        self._inputs: dict[str, Any] = {}
        self._started_at = datetime.now(UTC)
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._last_beat = 0.0

    # --- the run's life ------------------------------------------------------------------

    def begin(self, inputs: Mapping[str, Any], *, mark_after: float = 0.0) -> asyncio.Task[None]:
        """Start inserting the run's row, then the writer of batches, so that the run need not
        wait for it; the insert is returned (it raises if it failed, and `finish` raises it
        again). With `mark_after`, the row waits that many seconds first, and a run that ends
        before is written once, whole, at its end: for a caller who sees nothing of the run
        before its end (a blocking request). A crash in that time loses the run's record, as it
        could lose a marker committed without waiting for the disk (below) anyway."""
        self._inputs = dict(inputs)
        self._started_at = datetime.now(UTC)
        self._inserted = asyncio.create_task(self._insert(mark_after))
        return self._inserted

    async def start(self, inputs: Mapping[str, Any]) -> None:
        """`begin`, and wait for the run's row."""
        await self.begin(inputs)

    async def _insert(self, delay: float) -> None:
        """Insert the run's row, status `running`. It is only a marker until `finish` writes
        the outcome, so its commit does not wait for the disk: a crash in the next fraction of
        a second may lose it, along with the run it marks; `finish`'s durable commit flushes it
        (WAL is written in order), and a run that outlives the WAL writer's delay is on disk
        for the sweeper to find."""
        if delay > 0:
            await asyncio.sleep(delay)
        self._marking = True
        await self._mark()
        if not self._closing:
            self._writer = asyncio.create_task(self._write_loop())

    async def _mark(self) -> None:
        row = await self._run_row()
        await execute_alone(self.sessions, not_waiting_for_disk(_INSERT_RUN), row)
        self._last_beat = asyncio.get_running_loop().time()

    async def _run_row(self) -> Row:
        meta = self.meta
        return (self.run_id, meta.workspace_id, meta.app_id, meta.workflow_id, meta.type,
                meta.triggered_from, meta.version, meta.graph,
                await self._keep("run", "inputs", self._inputs), meta.created_by_role,
                meta.created_by, self._started_at)  # fmt: skip

    def _row_is_ours(self) -> bool:
        """Whether the run's end is to insert its row: its marker was still waiting out its
        delay (or had not begun) and is called off, now or at an earlier try."""
        self._closing = True  # no writer starts now
        if self._inserted is not None and not self._marking:
            self._inserted.cancel()
            self._inserted = None
            self._ours = True
        return self._ours

    async def _end(self, outcome: Row, then: str, values: Row) -> None:
        """Write the pending node executions with the run's end: its row whole, with
        `outcome`, if the row is the end's to insert and one statement holds it all; else
        `then` (an update of the row, with `values`), the row being inserted first if need be
        (node executions in several statements would refer to a row not yet there)."""
        if self._row_is_ours():
            if len(self._pending) <= ROWS_PER_STATEMENT:
                row = (*await self._run_row(), *outcome)
                async with driver_connection(self.sessions) as db:
                    await self._write_nodes(db, _INSERT_ENDED_RUN, row)
                self._ours = False
                return
            await self._mark()
            self._ours = False
        await self._stop_writer()
        if self._inserted is not None:
            await self._inserted  # a run whose row could not be written fails here
        async with driver_connection(self.sessions) as db:
            await self._write_nodes(db, then, values)

    def __call__(self, event: Event) -> None:
        """The executor's event sink: buffers what is to be written; never waits."""
        if isinstance(event, NodeFinished | ContainerCompleted):
            self._pending.append(event.node)
            if len(self._pending) >= BATCH:
                self._wake.set()

    async def finish(self, state: RunState) -> None:
        """Write what is left and the run's result in one statement."""
        outcome = (state.status, await self._keep("run", "outputs", state.outputs), state.error,
                   state.elapsed_time, state.total_tokens, state.total_steps,
                   state.exceptions_count, _timestamp(state.finished_at))  # fmt: skip
        await self._end(outcome, _FINISH_RUN, (*outcome, self.run_id))

    async def abandon(self, error: str) -> None:
        """The run ended without `finish` (the process is shutting down): mark it failed."""
        now = datetime.now(UTC)
        elapsed = (now - self._started_at).total_seconds()
        failed = ("failed", "{}", error, elapsed, 0, 0, 0, now)
        with contextlib.suppress(Exception):
            await self._end(failed, _ABANDON_RUN, (error, self.run_id))

    # --- batches -------------------------------------------------------------------------

    async def _stop_writer(self) -> None:
        """Let the writer finish the batch it may be writing, then end. (Cancelling it could be
        lost in a wake-up racing the cancellation, leaving this waiting for ever.) A writer
        not started yet will not start."""
        self._closing = True
        if self._writer is not None:
            self._wake.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None

    async def _write_loop(self) -> None:
        """Started once the run's row is there."""
        loop = asyncio.get_running_loop()
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
                async with driver_connection(self.sessions) as db:
                    if beat:
                        await self._write_nodes(db, _BEAT, (self.run_id,))
                        self._last_beat = loop.time()
                    else:
                        await self._write_nodes(db)
            except Exception:  # the database is away: keep the batch and try again
                log.warning("could not record workflow run %s yet", self.run_id, exc_info=True)

    async def _write_nodes(
        self, db: Connection, then: str | None = None, values: Sequence[Any] = ()
    ) -> None:
        """Insert the pending node executions, with `then` (an update of the run) in the same
        statement as the last of them. If it fails they are pending again."""
        batch, self._pending = self._pending, []
        try:
            rows = [await self._row(node) for node in batch]
            statements = [
                (_insert_nodes(len(chunk)), [value for row in chunk for value in row])
                for chunk in _chunks(rows, ROWS_PER_STATEMENT)
            ]
            if then is not None:
                inserted, inserted_values = statements.pop() if statements else (None, [])
                if inserted is not None:
                    then = f"WITH nodes AS ({inserted}) {then}"
                statements.append((then, [*inserted_values, *values]))
            for statement, statement_values in statements:
                await execute(db, statement, statement_values)
        except BaseException:
            self._pending[:0] = batch
            raise

    async def _row(self, node: NodeRun) -> Row:
        meta, where = self.meta, f"nodes/{node.id}"
        return (
            uuid.UUID(node.id), meta.workspace_id, meta.app_id, meta.workflow_id, self.run_id,
            "workflow-run", node.index, node.predecessor_node_id, node.id, node.node_id,
            node.node_type, node.title[:255],
            await self._keep(where, "inputs", node.inputs),
            await self._keep(where, "process_data", node.process_data),
            await self._keep(where, "outputs", node.outputs),
            node.status, node.error, node.elapsed_time,
            json.dumps(node.metadata, ensure_ascii=False, default=str),
            meta.created_by_role, meta.created_by,
            _timestamp(node.created_at), _timestamp(node.finished_at),
        )  # fmt: skip

    async def _keep(self, where: str, name: str, value: Any) -> str:
        """The value's JSON as stored in its row: the value itself (dates, UUIDs, ... as their
        text), or a preview with the whole value in storage."""
        encoded = json.dumps(value, ensure_ascii=False, default=str)
        if len(encoded) <= MAX_STORED_JSON:
            return encoded
        key = f"workflow_runs/{self.meta.workspace_id}/{self.run_id}/{where}/{name}.json"
        await self.storage.put(key, _one(encoded.encode()))
        return json.dumps({"__truncated__": True, "storage_key": key, "size": len(encoded),
                           "preview": encoded[:PREVIEW_CHARS]})  # fmt: skip
