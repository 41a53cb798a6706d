"""Chatflow (advanced-chat) apps through `POST /v1/chat-messages`: Dify's event order, messages
and conversations recorded, conversation variables and memory across turns, users kept apart."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import aclosing
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.integration.test_api_chat_apps import api_app, eventually_rows, rows, stream_events
from tests.support.api import api_client, assert_error, bearer, setup_and_login
from tests.support.workflow import chain, node
from tusk.db.engine import engine_scope
from tusk.testing.openai_server import FakeOpenAI

KEY = "sk-chatflow"
GPT = {"provider": "langgenius/openai/openai", "name": "gpt-4o-mini", "mode": "chat"}


@pytest.fixture(scope="module")
def openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as fake:
        yield fake


def chatflow() -> dict[str, Any]:
    nodes = [
        node("start", "start", variables=[]),
        node("llm", "llm", model=GPT, memory={"window": {"enabled": True, "size": 10}},
             prompt_template=[{"role": "system", "text": "Be brief."}]),
        node("count", "assigner", version="2", items=[
            {"variable_selector": ["conversation", "turns"], "input_type": "constant",
             "operation": "+=", "value": 1}]),
        node("answer", "answer", answer="{{#llm.text#}} (turn {{#conversation.turns#}})"),
    ]  # fmt: skip
    variables = [{"id": "v1", "name": "turns", "value_type": "number", "value": 0}]
    return {
        "graph": {"nodes": nodes, "edges": chain("start", "llm", "count", "answer")},
        "features": {},
        "conversation_variables": variables,
    }


async def published_chatflow(
    client: httpx.AsyncClient, token: str, *, finish_in_background: bool = False
) -> str:
    app = await client.post(
        "/console/api/apps", json={"name": "Chat", "mode": "advanced-chat"}, headers=bearer(token)
    )
    base = f"/console/api/apps/{app.json()['id']}"
    if finish_in_background:
        changed = await client.put(base, json={"finish_in_background": True}, headers=bearer(token))
        assert changed.json()["finish_in_background"] is True
    saved = await client.post(f"{base}/workflows/draft", json=chatflow(), headers=bearer(token))
    assert saved.status_code == 200, saved.text
    published = await client.post(f"{base}/workflows/publish", json={}, headers=bearer(token))
    assert published.status_code == 200, published.text
    key = await client.post(f"{base}/api-keys", headers=bearer(token))
    value: str = key.json()["token"]
    return value


def events(body: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]


async def test_turns_of_a_conversation(fresh_database: str, openai: FakeOpenAI) -> None:
    openai.clear()
    env = {"openai_api_key": KEY, "openai_api_base": openai.base_url}
    async with api_client(fresh_database, **env) as client:
        token = await setup_and_login(client)
        key = await published_chatflow(client, token)
        openai.reply("Hello there", chunks=["Hello", " there"])
        first = await client.post(
            "/v1/chat-messages",
            json={"query": "hi", "user": "ann", "response_mode": "streaming", "inputs": {}},
            headers=bearer(key),
        )
        chunks = events(first.text)
        names = [c["event"] for c in chunks]
        assert names[0] == "workflow_started"
        assert names[-2:] == ["message_end", "workflow_finished"]
        answer = "".join(c["answer"] for c in chunks if c["event"] == "message")
        assert answer == "Hello there (turn 1)"
        conversation_id = chunks[0]["conversation_id"]
        assert all(c["conversation_id"] == conversation_id for c in chunks)
        assert all(c["message_id"] == chunks[0]["message_id"] for c in chunks)
        usage = chunks[-2]["metadata"]["usage"]
        assert usage["total_tokens"] > 0

        openai.reply("Again")
        second = await client.post(
            "/v1/chat-messages",
            json={"query": "and now?", "user": "ann", "conversation_id": conversation_id},
            headers=bearer(key),
        )
        assert second.status_code == 200, second.text
        body = second.json()
        assert body["event"] == "message"
        assert body["mode"] == "advanced-chat"
        assert body["answer"] == "Again (turn 2)"
        assert body["conversation_id"] == conversation_id
        sent = openai.requests[-1].json["messages"]
        assert [m["content"] for m in sent] == [
            "Be brief.",
            "hi",
            "Hello there (turn 1)",
            "and now?",
        ]

        other = await client.post(
            "/v1/chat-messages",
            json={"query": "x", "user": "bob", "conversation_id": conversation_id},
            headers=bearer(key),
        )
        assert_error(other, 404, "not_found")
        no_query = await client.post("/v1/chat-messages", json={"user": "ann"}, headers=bearer(key))
        assert assert_error(no_query, 400, "invalid_param")["message"] == "query is required"

    async with engine_scope(fresh_database) as engine, engine.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT query, answer, status, workflow_run_id IS NOT NULL, "
                     "message_tokens > 0 FROM messages ORDER BY created_at")
            )
        ).all()  # fmt: skip
        conversation = (
            await conn.execute(text("SELECT dialogue_count, variables FROM conversations"))
        ).one()
    assert [tuple(r) for r in rows] == [
        ("hi", "Hello there (turn 1)", "normal", True, True),
        ("and now?", "Again (turn 2)", "normal", True, True),
    ]
    assert conversation[0] == 2
    assert conversation[1] == {"turns": 2}


async def test_a_failed_turn_is_recorded_as_an_error(
    fresh_database: str, openai: FakeOpenAI
) -> None:
    openai.clear()
    env = {"openai_api_key": KEY, "openai_api_base": openai.base_url, "model_max_retries": 0}
    async with api_client(fresh_database, **env) as client:
        token = await setup_and_login(client)
        key = await published_chatflow(client, token)
        openai.fail(400, "bad request from the provider")
        reply = await client.post(
            "/v1/chat-messages",
            json={"query": "hi", "user": "ann", "response_mode": "streaming"},
            headers=bearer(key),
        )
        names = [c["event"] for c in events(reply.text)]
        assert names[-2:] == ["workflow_finished", "error"]
        assert "message_end" not in names
    async with engine_scope(fresh_database) as engine, engine.connect() as conn:
        status, error = (await conn.execute(text("SELECT status, error FROM messages"))).one()
    assert status == "error"
    assert "bad request from the provider" in error


async def test_a_client_that_disconnects_stops_the_run(
    fresh_database: str, openai: FakeOpenAI
) -> None:
    openai.clear()
    env = {"openai_api_key": KEY, "openai_api_base": openai.base_url}
    words = [f"word{i} " for i in range(20)]
    async with api_app(fresh_database, **env) as one, api_client(fresh_database, **env) as client:
        key = await published_chatflow(client, await setup_and_login(client))
        openai.reply("".join(words), chunks=words, delay=0.2)
        body = {"query": "hi", "user": "ann", "response_mode": "streaming"}
        async with aclosing(stream_events(one, "/v1/chat-messages", body, key)) as stream:
            async for chunk in stream:
                if chunk["event"] == "message":
                    break  # the client goes away at the first piece of the answer
        await eventually_rows(
            fresh_database,
            "SELECT m.status, r.status FROM messages m "
            "JOIN workflow_runs r ON r.id = m.workflow_run_id",
            [("stopped", "stopped")],
            timeout=5,
        )
    [(answer,)] = await rows(fresh_database, "SELECT answer FROM messages")
    assert answer.startswith("word0")
    assert "word19" not in answer


async def test_a_chatflow_that_finishes_in_the_background_outlives_its_client(
    fresh_database: str, openai: FakeOpenAI
) -> None:
    openai.clear()
    env = {"openai_api_key": KEY, "openai_api_base": openai.base_url}
    words = [f"word{i} " for i in range(20)]
    async with api_app(fresh_database, **env) as one, api_client(fresh_database, **env) as client:
        token = await setup_and_login(client)
        key = await published_chatflow(client, token, finish_in_background=True)
        openai.reply("".join(words), chunks=words, delay=0.05)
        body = {"query": "hi", "user": "ann", "response_mode": "streaming"}
        async with aclosing(stream_events(one, "/v1/chat-messages", body, key)) as stream:
            async for chunk in stream:
                if chunk["event"] == "message":
                    break  # the client goes away at the first piece of the answer
        await eventually_rows(
            fresh_database,
            "SELECT m.status, r.status FROM messages m "
            "JOIN workflow_runs r ON r.id = m.workflow_run_id",
            [("normal", "succeeded")],
            timeout=5,
        )
    [(answer,)] = await rows(fresh_database, "SELECT answer FROM messages")
    assert "word19" in answer


async def test_the_run_does_not_wait_for_the_turns_rows(
    fresh_database: str, openai: FakeOpenAI
) -> None:
    """The turn's conversation and message are written while the run starts; its chunks (which
    carry their ids) reach the client once they are there."""
    openai.clear()
    env = {"openai_api_key": KEY, "openai_api_base": openai.base_url}
    async with (
        api_app(fresh_database, **env) as one,
        api_client(fresh_database, **env) as client,
        engine_scope(fresh_database) as engine,
        engine.connect() as blocker,
    ):
        key = await published_chatflow(client, await setup_and_login(client))
        openai.reply("Hello there", chunks=["Hello", " there"])
        await blocker.execute(text("LOCK TABLE messages IN EXCLUSIVE MODE"))  # no insert passes
        body = {"query": "hi", "user": "ann", "response_mode": "streaming"}
        async with aclosing(stream_events(one, "/v1/chat-messages", body, key)) as stream:
            first = asyncio.create_task(anext(stream))
            deadline = time.monotonic() + 10
            while not openai.requests:  # the LLM node runs while the rows wait for the lock
                assert time.monotonic() < deadline, "the model was not called"
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)
            assert not first.done()
            await blocker.rollback()
            assert (await asyncio.wait_for(first, 10))["event"] == "workflow_started"
            events_ = [chunk["event"] async for chunk in stream]
            assert events_[-2:] == ["message_end", "workflow_finished"]
    assert await rows(fresh_database, "SELECT answer, status FROM messages") == [
        ("Hello there (turn 1)", "normal")
    ]


async def test_a_turn_whose_rows_cannot_be_written_fails_and_leaves_none(
    fresh_database: str, openai: FakeOpenAI
) -> None:
    openai.clear()
    env = {"openai_api_key": KEY, "openai_api_base": openai.base_url}
    async with api_client(fresh_database, **env) as client:
        key = await published_chatflow(client, await setup_and_login(client))
        async with engine_scope(fresh_database) as engine, engine.begin() as conn:
            await conn.execute(text(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'the disk is full'; END $$"
            ))  # fmt: skip
            await conn.execute(text(
                "CREATE TRIGGER refuse BEFORE INSERT ON messages "
                "FOR EACH ROW EXECUTE FUNCTION refuse()"
            ))  # fmt: skip
        openai.reply("Hello there")
        body = {"query": "hi", "user": "ann", "response_mode": "streaming"}
        reply = await client.post("/v1/chat-messages", json=body, headers=bearer(key))
        assert [(c["event"], c.get("status")) for c in events(reply.text)] == [("error", 500)]
    assert await rows(fresh_database, "SELECT count(*) FROM messages") == [(0,)]
    assert await rows(fresh_database, "SELECT count(*) FROM conversations") == [(0,)]
