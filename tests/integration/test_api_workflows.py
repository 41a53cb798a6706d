"""Workflow apps over HTTP: draft, publish, runs through the Service API (blocking and streaming),
records of every node, input checks, stop across the broker, debug and single-node runs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from tests.support.api import SECRET, api_client, assert_error, bearer, setup_and_login
from tests.support.workflow import chain, edge, node
from tusk.db.engine import engine_scope, session_factory
from tusk.db.models import Workflow
from tusk.workflow import store
from tusk.workflow.nodes import node_types
from tusk.workflow.nodes.base import Node, NodeContext, NodeResult

START = node(
    "start",
    "start",
    variables=[
        {"variable": "name", "type": "text-input", "required": True, "max_length": 10},
        {"variable": "n", "type": "number", "required": False, "default": 3},
    ],
)


def graph(*extra: dict[str, Any], edges: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    nodes = [
        START,
        node("big", "if-else", cases=[{"case_id": "yes", "logical_operator": "and", "conditions": [
            {"variable_selector": ["start", "n"], "comparison_operator": ">", "value": "5"}]}]),
        node("agg", "variable-aggregator", variables=[["start", "name"]]),
        node("end", "end", outputs=[{"variable": "greeting", "value_selector": ["agg", "output"]},
                                     {"variable": "n", "value_selector": ["start", "n"]}]),
        *extra,
    ]  # fmt: skip
    links = edges or [*chain("start", "big"), edge("big", "agg", "yes"),
                      edge("big", "agg", "false"), *chain("agg", "end")]  # fmt: skip
    return {"nodes": nodes, "edges": links}


async def workflow_app(client: httpx.AsyncClient, token: str, body: dict[str, Any]) -> str:
    created = await client.post(
        "/console/api/apps", json={"name": "Flow", "mode": "workflow"}, headers=bearer(token)
    )
    app_id: str = created.json()["id"]
    saved = await client.post(
        f"/console/api/apps/{app_id}/workflows/draft", json=body, headers=bearer(token)
    )
    assert saved.status_code == 200, saved.text
    return app_id


async def publish_with_key(client: httpx.AsyncClient, token: str, app_id: str) -> str:
    published = await client.post(
        f"/console/api/apps/{app_id}/workflows/publish", json={}, headers=bearer(token)
    )
    assert published.status_code == 200, published.text
    key = await client.post(f"/console/api/apps/{app_id}/api-keys", headers=bearer(token))
    token_value: str = key.json()["token"]
    return token_value


def sse_events(body: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]


async def test_publish_and_run_blocking_with_every_node_recorded(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        app_id = await workflow_app(client, token, {"graph": graph(), "features": {}})
        key = await publish_with_key(client, token, app_id)
        reply = await client.post(
            "/v1/workflows/run",
            json={"inputs": {"name": "Ada", "n": "7"}, "user": "u1", "response_mode": "blocking"},
            headers=bearer(key),
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["task_id"] == body["workflow_run_id"]
        data = body["data"]
        assert data["status"] == "succeeded"
        assert data["outputs"] == {"greeting": "Ada", "n": 7}
        assert data["total_steps"] == 4

        run = await client.get(f"/v1/workflows/run/{data['id']}", headers=bearer(key))
        assert run.json()["status"] == "succeeded"
        assert run.json()["inputs"] == {"name": "Ada", "n": 7}
        nodes = await client.get(
            f"/console/api/apps/{app_id}/workflow-runs/{data['id']}/node-executions",
            headers=bearer(token),
        )
        rows = nodes.json()["data"]
        assert [r["node_id"] for r in rows] == ["start", "big", "agg", "end"]
        assert [r["index"] for r in rows] == [1, 2, 3, 4]
        assert rows[1]["outputs"]["selected_case_id"] == "yes"
        assert rows[2]["predecessor_node_id"] == "big"


async def test_a_run_whose_end_cannot_be_recorded_does_not_succeed(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        app_id = await workflow_app(client, token, {"graph": graph(), "features": {}})
        key = await publish_with_key(client, token, app_id)
        async with engine_scope(fresh_database) as engine, engine.begin() as conn:
            await conn.execute(text(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'the disk is full'; END $$"
            ))  # fmt: skip
            await conn.execute(text(
                "CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON workflow_runs FOR EACH ROW "
                "WHEN (NEW.status = 'succeeded') EXECUTE FUNCTION refuse()"
            ))  # fmt: skip
        body = {"inputs": {"name": "Ada"}, "user": "u1"}
        blocking = await client.post("/v1/workflows/run", json=body, headers=bearer(key))
        data = blocking.json()["data"]
        assert (data["status"], data["error"]) == (
            "failed",
            "the run ended unexpectedly: RaiseException",
        )
        streamed = await client.post(
            "/v1/workflows/run", json={**body, "response_mode": "streaming"}, headers=bearer(key)
        )
        events = sse_events(streamed.text)
        finished = [e["data"]["status"] for e in events if e["event"] == "workflow_finished"]
        assert finished == ["failed"]
        assert events[-1]["event"] == "error"
    async with engine_scope(fresh_database) as engine, engine.connect() as conn:
        stored = (await conn.execute(text("SELECT status FROM workflow_runs"))).scalars().all()
    assert stored == ["failed", "failed"]


async def test_streaming_run_sends_dify_events_in_order(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        app_id = await workflow_app(client, token, {"graph": graph(), "features": {}})
        key = await publish_with_key(client, token, app_id)
        reply = await client.post(
            "/v1/workflows/run",
            json={"inputs": {"name": "Bo"}, "user": "u1", "response_mode": "streaming"},
            headers=bearer(key),
        )
        assert reply.headers["content-type"].startswith("text/event-stream")
        assert reply.text.startswith("event: ping")
        events = sse_events(reply.text)
        names = [e["event"] for e in events]
        assert names[0] == "workflow_started"
        assert names[-1] == "workflow_finished"
        assert names.count("node_started") == names.count("node_finished") == 4
        finished = events[-1]["data"]
        assert finished["outputs"] == {"greeting": "Bo", "n": 3}  # the default of n
        assert all(e["workflow_run_id"] == finished["id"] for e in events)
        chunks = [e["data"]["text"] for e in events if e["event"] == "text_chunk"]
        assert "".join(chunks) == "Bo3"


async def test_bad_inputs_are_400_naming_the_field(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        app_id = await workflow_app(client, token, {"graph": graph(), "features": {}})
        key = await publish_with_key(client, token, app_id)
        cases = [
            ({}, "name is required in input form"),
            ({"name": "x" * 11}, "name in input form must be less than 10 characters"),
            ({"name": "a", "n": "many"}, "n in input form must be a valid number"),
        ]
        for inputs, message in cases:
            reply = await client.post(
                "/v1/workflows/run", json={"inputs": inputs, "user": "u"}, headers=bearer(key)
            )
            assert assert_error(reply, 400, "invalid_param")["message"] == message
        no_user = await client.post("/v1/workflows/run", json={"inputs": {}}, headers=bearer(key))
        assert assert_error(no_user, 400, "invalid_param")["message"] == (
            "Arg user must be provided."
        )
    async with engine_scope(fresh_database) as engine, engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM workflow_runs"))).scalar() == 0


async def test_unpublished_and_invalid_workflows(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        broken = graph(edges=[*chain("start", "big"), edge("big", "agg", "yes")])
        broken["nodes"].append(node("lost", "end", outputs=[
            {"variable": "x", "value_selector": ["nowhere", "text"]}]))  # fmt: skip
        broken["edges"].append(edge("agg", "lost"))
        app_id = await workflow_app(client, token, {"graph": broken, "features": {}})
        key = await client.post(f"/console/api/apps/{app_id}/api-keys", headers=bearer(token))
        unpublished = await client.post(
            "/v1/workflows/run",
            json={"inputs": {}, "user": "u"},
            headers=bearer(key.json()["token"]),
        )
        assert unpublished.status_code == 404
        refused = await client.post(
            f"/console/api/apps/{app_id}/workflows/publish", json={}, headers=bearer(token)
        )
        message = assert_error(refused, 400, "invalid_param")["message"]
        assert "reads nowhere.text, but there is no node 'nowhere'" in message


async def test_secret_environment_variables_are_masked_and_encrypted(fresh_database: str) -> None:
    env = [{"id": "1", "name": "token", "value": "s3cret-value", "value_type": "secret"},
           {"id": "2", "name": "plain", "value": "p", "value_type": "string"}]  # fmt: skip
    the_graph = graph()
    the_graph["nodes"][3]["data"]["outputs"].append(
        {"variable": "t", "value_selector": ["env", "token"]}
    )
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        app_id = await workflow_app(
            client, token, {"graph": the_graph, "features": {}, "environment_variables": env}
        )
        draft = (
            await client.get(f"/console/api/apps/{app_id}/workflows/draft", headers=bearer(token))
        ).json()
        shown = {v["name"]: v["value"] for v in draft["environment_variables"]}
        assert shown == {"token": "[__HIDDEN__]", "plain": "p"}
        # saving the masked value back keeps the secret
        resave = {"graph": the_graph, "features": {}, "environment_variables": draft[
            "environment_variables"], "hash": draft["hash"]}  # fmt: skip
        saved = await client.post(
            f"/console/api/apps/{app_id}/workflows/draft", json=resave, headers=bearer(token)
        )
        assert saved.status_code == 200, saved.text
        key = await publish_with_key(client, token, app_id)
        reply = await client.post(
            "/v1/workflows/run", json={"inputs": {"name": "a"}, "user": "u"}, headers=bearer(key)
        )
        assert reply.json()["data"]["outputs"]["t"] == "s3cret-value"
    async with engine_scope(fresh_database) as engine, engine.connect() as conn:
        stored = await conn.execute(text("SELECT environment_variables::text FROM workflows"))
        assert all("s3cret-value" not in row[0] for row in stored)
    new_secret = "rotated-" * 6
    async with engine_scope(fresh_database) as engine, session_factory(engine).begin() as db:
        assert await store.rotate_secrets(db, SECRET, new_secret) == 2  # the draft and version
    async with engine_scope(fresh_database) as engine, session_factory(engine)() as db:
        for workflow in (await db.execute(select(Workflow))).scalars():
            values = store.environment_values(workflow, store.env_key(new_secret))
            assert values["token"] == "s3cret-value"


async def test_stale_draft_hash_is_refused(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        app_id = await workflow_app(client, token, {"graph": graph(), "features": {}})
        stale = await client.post(
            f"/console/api/apps/{app_id}/workflows/draft",
            json={"graph": graph(), "features": {"x": 1}, "hash": "0" * 64},
            headers=bearer(token),
        )
        assert_error(stale, 400, "draft_workflow_not_sync")


class Sleep(Node):
    """Sleeps for `seconds` (a test node type)."""

    type = "test-sleep"

    async def run(self, ctx: NodeContext) -> NodeResult:
        await asyncio.sleep(float(self.spec.data.get("seconds", 1)))
        return NodeResult(outputs={})


@pytest.fixture
def sleep_node() -> Iterator[None]:
    node_types()["test-sleep"] = Sleep
    yield
    node_types().pop("test-sleep")


async def first_run_id(conninfo: str) -> Any:
    async with engine_scope(conninfo) as engine:
        for _ in range(200):
            async with engine.connect() as conn:
                run_id = (await conn.execute(text("SELECT id FROM workflow_runs"))).scalar()
            if run_id:
                return run_id
            await asyncio.sleep(0.02)
    raise AssertionError("the run was not recorded")


@pytest.mark.usefixtures("sleep_node")
async def test_stop_from_another_api_process(fresh_database: str) -> None:
    slow = {"nodes": [START, node("wait", "test-sleep", seconds=30), node("end", "end")],
            "edges": chain("start", "wait", "end")}  # fmt: skip
    async with api_client(fresh_database) as one, api_client(fresh_database) as other:
        token = await setup_and_login(one)
        app_id = await workflow_app(one, token, {"graph": slow, "features": {}})
        key = await publish_with_key(one, token, app_id)
        body = {"inputs": {"name": "a"}, "user": "u", "response_mode": "streaming"}
        run = asyncio.create_task(one.post("/v1/workflows/run", json=body, headers=bearer(key)))
        run_id = await first_run_id(fresh_database)
        await asyncio.sleep(0.2)  # let the run reach the sleeping node
        stopped = await other.post(
            f"/v1/workflows/tasks/{run_id}/stop", json={"user": "u"}, headers=bearer(key)
        )
        assert stopped.json() == {"result": "success"}
        reply = await asyncio.wait_for(run, 10)
        assert sse_events(reply.text)[-1]["data"]["status"] == "stopped"
        record = await one.get(f"/v1/workflows/run/{run_id}", headers=bearer(key))
        assert record.json()["status"] == "stopped"


async def test_update_and_copy_an_app(fresh_database: str) -> None:
    env = [{"id": "1", "name": "token", "value": "s3cret-value", "value_type": "secret"}]
    the_graph = graph()
    the_graph["nodes"][3]["data"]["outputs"].append(
        {"variable": "t", "value_selector": ["env", "token"]}
    )
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        app_id = await workflow_app(
            client, token, {"graph": the_graph, "features": {}, "environment_variables": env}
        )
        changed = await client.put(
            f"/console/api/apps/{app_id}",
            json={"name": "Renamed", "max_active_requests": 3},
            headers=bearer(token),
        )
        assert (changed.json()["name"], changed.json()["max_active_requests"]) == ("Renamed", 3)
        refused = await client.put(
            f"/console/api/apps/{app_id}", json={"name": "  "}, headers=bearer(token)
        )
        assert_error(refused, 400, "invalid_param")
        copied = await client.post(
            f"/console/api/apps/{app_id}/copy", json={"name": "Twin"}, headers=bearer(token)
        )
        assert copied.status_code == 201, copied.text
        twin = copied.json()
        assert (twin["name"], twin["mode"]) == ("Twin", "workflow")
        assert twin["id"] != app_id
        key = await publish_with_key(client, token, twin["id"])
        reply = await client.post(
            "/v1/workflows/run", json={"inputs": {"name": "a"}, "user": "u"}, headers=bearer(key)
        )
        assert reply.json()["data"]["outputs"]["t"] == "s3cret-value"  # the secret came along
