"""Agent-chat apps over HTTP with FakeOpenAI calling a real built-in tool: Dify's agent_thought
and agent_message events, the message marked agent_based with its rounds kept, blocking turns
that remember the conversation, and a tool the workspace does not have."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from tests.integration.test_api_chat_apps import api_app, eventually_rows, stream_events
from tests.support.api import api_client, bearer
from tests.support.api import setup_and_login as login_admin
from tusk.agent.records import agent_thoughts
from tusk.db.engine import engine_scope, session_factory
from tusk.testing.llm_server import ToolCall
from tusk.testing.openai_server import FakeOpenAI

KEY = "sk-agent-chat"
GPT = {"provider": "langgenius/openai/openai", "name": "gpt-4o-mini", "mode": "chat",
       "completion_params": {"temperature": 0.3}}  # fmt: skip
TIME_TOOL = {
    "enabled": True,
    "provider_id": "time",
    "provider_name": "time",
    "provider_type": "builtin",
    "tool_label": "Current Time",
    "tool_name": "current_time",
    "tool_parameters": {"format": "%Y", "timezone": ""},
}
THOUGHT_KEYS = {"event", "task_id", "id", "message_id", "conversation_id", "created_at",
                "position", "thought", "observation", "tool", "tool_labels", "tool_input",
                "message_files"}  # fmt: skip


@pytest.fixture(scope="module")
def openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as fake:
        yield fake


def config(*tools: dict[str, Any], strategy: str = "function_call") -> dict[str, Any]:
    return {
        "model": GPT,
        "prompt_type": "simple",
        "pre_prompt": "You tell the time.",
        "agent_mode": {"enabled": True, "strategy": strategy, "tools": list(tools),
                       "max_iteration": 3},
    }  # fmt: skip


async def agent_app(client: Any, token: str, document: dict[str, Any]) -> str:
    made = await client.post(
        "/console/api/apps", json={"name": "agent", "mode": "agent-chat"}, headers=bearer(token)
    )
    app_id = made.json()["id"]
    saved = await client.post(
        f"/console/api/apps/{app_id}/model-config", json=document, headers=bearer(token)
    )
    assert saved.json() == {"result": "success"}, saved.text
    key = await client.post(f"/console/api/apps/{app_id}/api-keys", headers=bearer(token))
    return str(key.json()["token"])


def events(body: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]


async def rows(conninfo: str, sql: str) -> list[tuple[Any, ...]]:
    async with engine_scope(conninfo) as engine, engine.connect() as conn:
        return [tuple(row) for row in (await conn.execute(text(sql))).all()]


async def test_an_agent_turn_streams_thoughts_and_answer(
    fresh_database: str, openai: FakeOpenAI
) -> None:
    openai.clear()
    year = str(datetime.now(UTC).year)
    env = {"openai_api_key": KEY, "openai_api_base": openai.base_url}
    async with api_client(fresh_database, **env) as client:
        key = await agent_app(client, await login_admin(client), config(TIME_TOOL))
        openai.reply_tool_calls([ToolCall("current_time", {"timezone": "UTC"})])
        openai.reply("It is the year on the clock.", chunks=["It is the year", " on the clock."])
        streamed = await client.post(
            "/v1/chat-messages",
            json={"query": "Which year?", "user": "ann", "response_mode": "streaming",
                  "auto_generate_name": False},
            headers=bearer(key),
        )  # fmt: skip
        assert streamed.status_code == 200, streamed.text
        chunks = events(streamed.text)
        names = [c["event"] for c in chunks]
        assert names == ["agent_thought"] * 4 + ["agent_message"] * 2 + ["agent_thought",
                                                                         "message_end"]  # fmt: skip
        thoughts = [c for c in chunks if c["event"] == "agent_thought"]
        assert set(thoughts[0]) == THOUGHT_KEYS
        called = thoughts[2]
        assert (called["position"], called["tool"]) == (1, "current_time")
        assert json.loads(called["tool_input"]) == {"current_time": {"timezone": "UTC"}}
        assert called["tool_labels"]["current_time"]["en_US"] == "Current Time"
        assert json.loads(called["observation"]) == {"current_time": year}
        assert thoughts[-1]["position"] == 2
        assert thoughts[-1]["thought"] == "It is the year on the clock."
        answer = "".join(c["answer"] for c in chunks if c["event"] == "agent_message")
        assert answer == "It is the year on the clock."
        assert chunks[-1]["metadata"]["usage"]["total_tokens"] > 0
        # the tool's fixed format is not the model's to set
        declared = openai.requests[0].json["tools"][0]["function"]["parameters"]
        assert "format" not in declared["properties"]
        assert openai.requests[0].json["messages"][0]["content"] == "You tell the time."

        openai.reply("You asked which year.")
        blocking = await client.post(
            "/v1/chat-messages",
            json={"query": "What did I ask?", "user": "ann",
                  "conversation_id": chunks[0]["conversation_id"]},
            headers=bearer(key),
        )  # fmt: skip
        body = blocking.json()
        assert (body["event"], body["mode"], body["answer"]) == (
            "message", "agent-chat", "You asked which year.",
        )  # fmt: skip
        remembered = [m["content"] for m in openai.requests[-1].json["messages"]]
        assert remembered[1:] == ["Which year?", "It is the year on the clock.", "What did I ask?"]
        history = await client.get(
            "/v1/messages",
            params={"conversation_id": chunks[0]["conversation_id"], "user": "ann"},
            headers=bearer(key),
        )
        shown = history.json()["data"][0]["agent_thoughts"]
        assert [(t["position"], t["tool"]) for t in shown] == [(1, "current_time"), (2, "")]

    stored = await rows(
        fresh_database,
        "SELECT m.answer, m.agent_based, count(t.id) FROM messages m "
        "LEFT JOIN message_agent_thoughts t ON t.message_id = m.id "
        "GROUP BY m.id ORDER BY m.created_at",
    )
    assert stored == [("It is the year on the clock.", True, 2), ("You asked which year.", True, 1)]
    async with engine_scope(fresh_database) as engine, session_factory(engine)() as db:
        first = (await db.execute(text("SELECT id, workspace_id FROM messages "
                                       "ORDER BY created_at LIMIT 1"))).one()  # fmt: skip
        listed = (await agent_thoughts(db, first.workspace_id, [first.id]))[first.id]
    assert [(t["position"], t["tool"]) for t in listed] == [(1, "current_time"), (2, "")]
    assert listed[0]["id"] == called["id"]
    prices = await rows(
        fresh_database,
        "SELECT message_token > 0, answer_token > 0, currency, created_by_role "
        "FROM message_agent_thoughts ORDER BY created_at, position LIMIT 1",
    )
    assert prices == [(True, True, "USD", "end_user")]


async def test_a_tool_the_workspace_lacks_is_a_clear_error(
    fresh_database: str, openai: FakeOpenAI
) -> None:
    openai.clear()
    missing = {**TIME_TOOL, "provider_id": "wikipedia", "provider_name": "wikipedia",
               "tool_name": "wikipedia_search"}  # fmt: skip
    env = {"openai_api_key": KEY, "openai_api_base": openai.base_url}
    async with api_client(fresh_database, **env) as client:
        key = await agent_app(client, await login_admin(client), config(missing, strategy="cot"))
        answer = await client.post(
            "/v1/chat-messages", json={"query": "hi", "user": "ann"}, headers=bearer(key)
        )
    assert answer.status_code == 400
    assert answer.json()["code"] == "app_unavailable"
    assert "wikipedia" in answer.json()["message"]


async def test_a_stopped_agent_turn_keeps_what_it_said(
    fresh_database: str, openai: FakeOpenAI
) -> None:
    openai.clear()
    words = [f"word{i} " for i in range(20)]
    env = {"openai_api_key": KEY, "openai_api_base": openai.base_url}
    async with api_app(fresh_database, **env) as one, api_client(fresh_database, **env) as client:
        key = await agent_app(client, await login_admin(client), config(TIME_TOOL))
        openai.reply("".join(words), chunks=words, delay=0.2)
        body = {"query": "talk", "user": "ann", "response_mode": "streaming",
                "auto_generate_name": False}  # fmt: skip
        received: list[dict[str, Any]] = []
        async for chunk in stream_events(one, "/v1/chat-messages", body, key):
            received.append(chunk)
            if [c["event"] for c in received].count("agent_message") == 1:
                stopped = await client.post(
                    f"/v1/chat-messages/{chunk['task_id']}/stop", json={"user": "ann"},
                    headers=bearer(key),
                )  # fmt: skip
                assert stopped.json() == {"result": "success"}
        assert received[-1]["event"] == "message_end"  # the stream ends as stopped, not cut
        await eventually_rows(
            fresh_database, "SELECT status FROM messages", [("stopped",)], timeout=5
        )
    [(answer,)] = await rows(fresh_database, "SELECT answer FROM messages")
    assert answer.startswith("word0")
    assert "word19" not in answer
