"""Writes through the driver: one statement each, in autocommit mode, on the pool's connections."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from sqlalchemy import text

from tests.integration.test_workflow_runs import make_app
from tusk.db.driver import _numbered, execute_alone, not_waiting_for_disk
from tusk.db.engine import create_engine, session_factory
from tusk.storage.postgres import PostgresStorage
from tusk.workflow.events import NodeFinished, NodeRun, RunState
from tusk.workflow.recorder import RunRecorder


def test_placeholders_are_numbered_in_order() -> None:
    assert _numbered("INSERT INTO t (a, b) VALUES (%s, %s::jsonb)") == (
        "INSERT INTO t (a, b) VALUES ($1, $2::jsonb)"
    )
    assert _numbered("SELECT 1") == "SELECT 1"


async def test_a_statement_is_written_whole_or_not_at_all(database: str) -> None:
    engine = create_engine(database, pool_size=1, max_overflow=0)
    sessions = session_factory(engine)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE pairs (id int PRIMARY KEY)"))
        both = "WITH first AS (INSERT INTO pairs VALUES (%s)) INSERT INTO pairs VALUES (%s)"
        with pytest.raises(psycopg.errors.UniqueViolation):
            await execute_alone(sessions, both, (1, 1))  # the second half fails
        await execute_alone(sessions, both, (2, 3))
        async with engine.connect() as conn:
            stored = (await conn.execute(text("SELECT id FROM pairs ORDER BY id"))).scalars()
            assert list(stored) == [2, 3]
    finally:
        await engine.dispose()


async def test_connections_go_back_to_the_pool_as_they_were_taken(database: str) -> None:
    """In a transaction of their own again, with the session's own settings."""
    engine = create_engine(database, pool_size=1, max_overflow=0)  # one connection for all
    sessions = session_factory(engine)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE marks (id int PRIMARY KEY)"))
            await conn.execute(text("SET synchronous_commit = local"))  # for the session
        await execute_alone(sessions, not_waiting_for_disk("INSERT INTO marks VALUES (%s)"), (1,))
        async with sessions() as db:
            setting = (await db.execute(text("SHOW synchronous_commit"))).scalar_one()
            await db.execute(text("INSERT INTO marks VALUES (2)"))
            await db.rollback()
        async with engine.connect() as conn:
            stored = (await conn.execute(text("SELECT id FROM marks"))).scalars()
            assert list(stored) == [1]
        assert setting == "local"  # the marker's own setting ended with its transaction
    finally:
        await engine.dispose()


async def test_node_executions_written_twice_are_kept_once(database: str) -> None:
    """A batch is sent again when its statement failed, perhaps after the server committed
    it: the copies are ignored."""
    engine = create_engine(database)
    try:
        meta = await make_app(engine)
        recorder = RunRecorder(session_factory(engine), PostgresStorage(engine), meta, uuid.uuid4())
        await recorder.start({})
        node = NodeRun(str(uuid.uuid4()), "n1", "answer", "A", 1, None, status="succeeded")
        recorder(NodeFinished(node))
        recorder(NodeFinished(node))
        await recorder.finish(RunState(str(recorder.run_id), str(meta.workflow_id), {},
                                       status="succeeded"))  # fmt: skip
        async with engine.connect() as conn:
            count = "SELECT count(*) FROM workflow_node_executions WHERE workflow_run_id = :id"
            assert (await conn.execute(text(count), {"id": recorder.run_id})).scalar_one() == 1
    finally:
        await engine.dispose()
