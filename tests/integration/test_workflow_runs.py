"""Run records: a run whose process died is swept to `failed`, and values too large for a row are
kept whole in storage with a preview in the row."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.api import api_client, bearer, setup_and_login
from tests.support.workflow import chain, node
from tusk.db.engine import session_factory
from tusk.storage.postgres import PostgresStorage
from tusk.workflow.events import NodeFinished, NodeRun, RunState
from tusk.workflow.jobs import ABANDONED, sweep_abandoned_runs
from tusk.workflow.recorder import BATCH, MAX_STORED_JSON, ROWS_PER_STATEMENT, RunMeta, RunRecorder


async def make_app(engine: AsyncEngine) -> RunMeta:
    async with engine.begin() as conn:
        workspace = (
            await conn.execute(text("INSERT INTO workspaces (name) VALUES ('w') RETURNING id"))
        ).scalar_one()
        app = (
            await conn.execute(
                text(
                    "INSERT INTO apps (workspace_id, name, mode) VALUES (:w, 'a', 'workflow') "
                    "RETURNING id"
                ),
                {"w": workspace},
            )
        ).scalar_one()
        workflow = (
            await conn.execute(
                text(
                    "INSERT INTO workflows (workspace_id, app_id, type, version, graph, features)"
                    " VALUES (:w, :a, 'workflow', 'draft', '{}', '{}') RETURNING id"
                ),
                {"w": workspace, "a": app},
            )
        ).scalar_one()
    return RunMeta(workspace, app, workflow, "workflow", "draft", "{}", "app-run", "account", None)


async def test_a_run_whose_process_died_is_swept_to_failed(engine: AsyncEngine) -> None:
    meta = await make_app(engine)
    storage = PostgresStorage(engine)
    dead = RunRecorder(session_factory(engine), storage, meta, uuid.uuid4())
    alive = RunRecorder(session_factory(engine), storage, meta, uuid.uuid4())
    await dead.start({})
    await alive.start({})
    await dead._stop_writer()  # the process is gone: no more heartbeats, no finish
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE workflow_runs SET heartbeat_at = now() - interval '10 minutes' "
                 "WHERE id = :id"), {"id": dead.run_id})  # fmt: skip
        assert await sweep_abandoned_runs(conn) == 1
        rows = dict((await conn.execute(text("SELECT id, status FROM workflow_runs"))).all())
        error = (
            await conn.execute(
                text("SELECT error FROM workflow_runs WHERE id = :id"), {"id": dead.run_id}
            )
        ).scalar_one()
    assert rows == {dead.run_id: "failed", alive.run_id: "running"}
    assert error == ABANDONED
    await alive._stop_writer()


async def test_large_values_go_to_storage_with_a_preview_in_the_row(engine: AsyncEngine) -> None:
    meta = await make_app(engine)
    storage = PostgresStorage(engine)
    recorder = RunRecorder(session_factory(engine), storage, meta, uuid.uuid4())
    await recorder.start({"small": 1})
    big = {"text": "x" * (MAX_STORED_JSON + 10)}
    record = NodeRun(str(uuid.uuid4()), "n1", "code", "Code", 1, None, outputs=big,
                     status="succeeded")  # fmt: skip
    recorder(NodeFinished(record))
    await recorder.finish(RunState(str(recorder.run_id), str(meta.workflow_id), {},
                                   status="succeeded"))  # fmt: skip
    async with engine.connect() as conn:
        stored = (
            await conn.execute(text("SELECT outputs FROM workflow_node_executions"))
        ).scalar_one()
    assert stored["__truncated__"] is True
    assert stored["preview"].startswith('{"text": "xxx')
    chunks = [c async for c in await storage.open(stored["storage_key"])]
    assert json.loads(b"".join(chunks)) == big


async def test_console_lists_runs_and_a_nodes_last_run(fresh_database: str) -> None:
    graph = {
        "nodes": [
            node("start", "start", variables=[{"variable": "q", "type": "text-input"}]),
            node("agg", "variable-aggregator", variables=[["start", "q"]]),
            node("end", "end", outputs=[{"variable": "o", "value_selector": ["agg", "output"]}]),
        ],
        "edges": chain("start", "agg", "end"),
    }
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        app = await client.post("/console/api/apps", json={"name": "F", "mode": "workflow"},
                                headers=bearer(token))  # fmt: skip
        base = f"/console/api/apps/{app.json()['id']}"
        await client.post(f"{base}/workflows/draft", json={"graph": graph}, headers=bearer(token))
        debug = await client.post(
            f"{base}/workflows/draft/run", json={"inputs": {"q": "hi"}}, headers=bearer(token)
        )
        assert '"event": "workflow_finished"' in debug.text
        runs = (await client.get(f"{base}/workflow-runs", headers=bearer(token))).json()
        assert runs["total"] == 1
        assert runs["data"][0]["outputs"] == {"o": "hi"}
        last = await client.get(f"{base}/workflows/draft/nodes/agg/last-run", headers=bearer(token))
        assert last.json()["outputs"] == {"output": "hi"}

        single = await client.post(
            f"{base}/workflows/draft/nodes/agg/run",
            json={"inputs": {"#start.q#": "alone"}},
            headers=bearer(token),
        )
        assert single.json()["status"] == "succeeded"
        assert single.json()["outputs"] == {"output": "alone"}
        last = await client.get(f"{base}/workflows/draft/nodes/agg/last-run", headers=bearer(token))
        assert last.json()["outputs"] == {"output": "alone"}
        missing = await client.get(
            f"{base}/workflows/draft/nodes/nope/last-run", headers=bearer(token)
        )
        assert missing.status_code == 404


async def test_finishing_right_as_a_full_batch_wakes_the_writer(engine: AsyncEngine) -> None:
    """A run of more nodes than a batch ends and records every node (it once hung when the
    batch's wake-up raced the end of the run)."""
    meta = await make_app(engine)
    recorder = RunRecorder(session_factory(engine), PostgresStorage(engine), meta, uuid.uuid4())
    await recorder.start({})
    for index in range(1, BATCH * 2 + 2):
        record = NodeRun(str(uuid.uuid4()), f"n{index}", "answer", "A", index, None,
                         outputs={"answer": index}, status="succeeded")  # fmt: skip
        recorder(NodeFinished(record))
    state = RunState(str(recorder.run_id), str(meta.workflow_id), {}, status="succeeded")
    await asyncio.wait_for(recorder.finish(state), 10)
    async with engine.connect() as conn:
        run = {"id": recorder.run_id}
        count = (
            await conn.execute(
                text("SELECT count(*) FROM workflow_node_executions WHERE workflow_run_id = :id"),
                run,
            )
        ).scalar_one()
        status = (
            await conn.execute(text("SELECT status FROM workflow_runs WHERE id = :id"), run)
        ).scalar_one()
    assert count == BATCH * 2 + 1
    assert status == "succeeded"


async def test_a_run_of_more_nodes_than_a_batch_ends(fresh_database: str) -> None:
    chain_ids = ["start", *(f"n{i}" for i in range(BATCH + 5)), "end"]
    nodes = [
        node("start", "start", variables=[{"variable": "q", "type": "text-input"}]),
        *(node(f"n{i}", "variable-aggregator", variables=[["start", "q"]])
          for i in range(BATCH + 5)),
        node("end", "end", outputs=[{"variable": "o", "value_selector": ["n0", "output"]}]),
    ]  # fmt: skip
    graph = {"nodes": nodes, "edges": chain(*chain_ids)}
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        app = await client.post("/console/api/apps", json={"name": "Long", "mode": "workflow"},
                                headers=bearer(token))  # fmt: skip
        base = f"/console/api/apps/{app.json()['id']}"
        await client.post(f"{base}/workflows/draft", json={"graph": graph}, headers=bearer(token))
        debug = await asyncio.wait_for(
            client.post(
                f"{base}/workflows/draft/run", json={"inputs": {"q": "x"}}, headers=bearer(token)
            ),
            30,
        )
        assert '"status": "succeeded"' in debug.text
        runs = (await client.get(f"{base}/workflow-runs", headers=bearer(token))).json()
        run_id = runs["data"][0]["id"]
        rows = await client.get(
            f"{base}/workflow-runs/{run_id}/node-executions", headers=bearer(token)
        )
        assert len(rows.json()["data"]) == len(chain_ids)


async def run_rows(engine: AsyncEngine, run_id: uuid.UUID) -> tuple[list[str], int]:
    async with engine.connect() as conn:
        status = (
            await conn.execute(
                text("SELECT status FROM workflow_runs WHERE id = :id"), {"id": run_id}
            )
        ).scalars()
        count = "SELECT count(*) FROM workflow_node_executions WHERE workflow_run_id = :id"
        nodes = (await conn.execute(text(count), {"id": run_id})).scalar_one()
    return list(status), nodes


async def test_a_blocking_run_that_ends_in_time_is_written_once_whole(engine: AsyncEngine) -> None:
    meta = await make_app(engine)
    recorder = RunRecorder(session_factory(engine), PostgresStorage(engine), meta, uuid.uuid4())
    recorder.begin({"q": 1}, mark_after=60)
    recorder(NodeFinished(NodeRun(str(uuid.uuid4()), "n1", "answer", "A", 1, None,
                                  status="succeeded")))  # fmt: skip
    await asyncio.sleep(0.1)
    assert await run_rows(engine, recorder.run_id) == ([], 0)  # no marker yet
    state = RunState(str(recorder.run_id), str(meta.workflow_id), {}, status="succeeded",
                     finished_at=time.time())  # fmt: skip
    await asyncio.wait_for(recorder.finish(state), 10)
    assert await run_rows(engine, recorder.run_id) == (["succeeded"], 1)
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT inputs, created_at, finished_at FROM workflow_runs WHERE id = :id"),
                {"id": recorder.run_id},
            )
        ).one()
    assert row.inputs == {"q": 1}
    assert row.created_at <= row.finished_at


async def test_a_blocking_run_that_lasts_gets_its_marker(engine: AsyncEngine) -> None:
    meta = await make_app(engine)
    recorder = RunRecorder(session_factory(engine), PostgresStorage(engine), meta, uuid.uuid4())
    inserted = recorder.begin({}, mark_after=0.05)
    await asyncio.wait_for(inserted, 10)
    assert await run_rows(engine, recorder.run_id) == (["running"], 0)
    state = RunState(str(recorder.run_id), str(meta.workflow_id), {}, status="succeeded")
    await asyncio.wait_for(recorder.finish(state), 10)
    assert await run_rows(engine, recorder.run_id) == (["succeeded"], 0)


async def test_a_run_abandoned_before_its_marker_is_written_failed(engine: AsyncEngine) -> None:
    meta = await make_app(engine)
    recorder = RunRecorder(session_factory(engine), PostgresStorage(engine), meta, uuid.uuid4())
    recorder.begin({}, mark_after=60)
    await recorder.abandon("the server is shutting down")
    assert await run_rows(engine, recorder.run_id) == (["failed"], 0)


async def test_a_run_that_ends_before_its_marker_with_many_nodes_is_written(
    engine: AsyncEngine,
) -> None:
    """More node executions than one statement holds: the row goes first (they refer to it)."""
    meta = await make_app(engine)
    recorder = RunRecorder(session_factory(engine), PostgresStorage(engine), meta, uuid.uuid4())
    recorder.begin({}, mark_after=60)
    count = ROWS_PER_STATEMENT + 5
    for index in range(1, count + 1):
        recorder(NodeFinished(NodeRun(str(uuid.uuid4()), f"n{index}", "answer", "A", index, None,
                                      status="succeeded")))  # fmt: skip
    state = RunState(str(recorder.run_id), str(meta.workflow_id), {}, status="succeeded")
    await asyncio.wait_for(recorder.finish(state), 20)
    assert await run_rows(engine, recorder.run_id) == (["succeeded"], count)
