"""`POST /v1/chat/completions` through the official `openai` SDK: every app mode answers in
OpenAI's shapes, streaming and not; the messages sent back continue the stored conversation,
and a history Tusk has not seen is seeded as one."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import text

from tests.support.api import api_client, bearer, setup_and_login
from tests.support.workflow import chain, node
from tusk.db.engine import engine_scope
from tusk.testing.llm_server import ToolCall
from tusk.testing.openai_server import FakeOpenAI

KEY = "sk-openai-compat"
GPT = {"provider": "langgenius/openai/openai", "name": "gpt-4o-mini", "mode": "chat"}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as server:
        yield server


@asynccontextmanager
async def tusk(conninfo: str, fake: FakeOpenAI) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    async with api_client(conninfo, openai_api_key=KEY, openai_api_base=fake.base_url) as client:
        yield client, await setup_and_login(client)


def sdk(client: httpx.AsyncClient, key: str) -> openai.AsyncOpenAI:
    """The SDK as a user sets it up, on the in-process API's transport."""
    return openai.AsyncOpenAI(
        api_key=key, base_url="http://tusk/v1", http_client=client, max_retries=0
    )


async def new_app(
    client: httpx.AsyncClient,
    token: str,
    mode: str,
    graph: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> str:
    made = await client.post(
        "/console/api/apps", json={"name": mode, "mode": mode}, headers=bearer(token)
    )
    base = f"/console/api/apps/{made.json()['id']}"
    if graph is not None:
        saved = await client.post(f"{base}/workflows/draft", json=graph, headers=bearer(token))
        assert saved.status_code == 200, saved.text
        await client.post(f"{base}/workflows/publish", json={}, headers=bearer(token))
    else:
        config = config or {"model": GPT, "prompt_type": "simple", "pre_prompt": "Be brief."}
        saved = await client.post(f"{base}/model-config", json=config, headers=bearer(token))
        assert saved.status_code == 200, saved.text
    key = await client.post(f"{base}/api-keys", headers=bearer(token))
    value: str = key.json()["token"]
    return value


def sent(fake: FakeOpenAI) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in fake.requests[-1].json["messages"]]


async def rows(conninfo: str, sql: str) -> list[tuple[Any, ...]]:
    async with engine_scope(conninfo) as engine, engine.connect() as conn:
        return [tuple(row) for row in (await conn.execute(text(sql))).all()]


async def test_chat_app_blocking_and_conversation_continuity(
    fresh_database: str, fake: FakeOpenAI
) -> None:
    fake.clear()
    async with tusk(fresh_database, fake) as (client, token):
        key = await new_app(client, token, "chat")
        api = sdk(client, key)
        fake.reply("Hello Ann", usage=(7, 2))
        first = await api.chat.completions.create(
            model="anything",
            messages=[{"role": "system", "content": "ignored"}, {"role": "user", "content": "hi"}],
            user="ann",
        )
        assert first.object == "chat.completion"
        assert first.id.startswith("chatcmpl-")
        assert first.model == "anything"
        assert first.choices[0].message.role == "assistant"
        assert first.choices[0].message.content == "Hello Ann"
        assert first.choices[0].finish_reason == "stop"
        assert first.usage is not None
        assert (first.usage.prompt_tokens, first.usage.completion_tokens) == (7, 2)
        assert first.usage.total_tokens == 9
        assert sent(fake) == [("system", "Be brief."), ("user", "hi")]

        fake.reply("Fine")
        history: Any = [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello Ann"},
            {"role": "user", "content": [{"type": "text", "text": "how are you?"}]},
        ]
        second = await api.chat.completions.create(model="x", messages=history, user="ann")
        assert second.choices[0].message.content == "Fine"
        assert sent(fake) == [
            ("system", "Be brief."),
            ("user", "hi"),
            ("assistant", "Hello Ann"),
            ("user", "how are you?"),
        ]
        # The same exchange from another user is not theirs: a new conversation, seeded.
        fake.reply("Hi Bob")
        await api.chat.completions.create(model="x", messages=history, user="bob")
    found = await rows(
        fresh_database,
        "SELECT e.session_id, count(DISTINCT c.id), string_agg(m.query, '|' ORDER BY m.created_at)"
        " FROM messages m JOIN conversations c ON c.id = m.conversation_id"
        " JOIN end_users e ON e.id = c.from_end_user_id GROUP BY e.session_id ORDER BY 1",
    )
    assert found == [("ann", 1, "hi|how are you?"), ("bob", 1, "hi|how are you?")]


async def test_streaming_chunks_in_openai_order(fresh_database: str, fake: FakeOpenAI) -> None:
    fake.clear()
    async with tusk(fresh_database, fake) as (client, token):
        key = await new_app(client, token, "chat")
        fake.reply("one two three", chunks=["one", " two", " three"], usage=(5, 3))
        stream = await sdk(client, key).chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "count"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        assert all(c.object == "chat.completion.chunk" for c in chunks)
        assert len({c.id for c in chunks}) == 1
        assert chunks[0].choices[0].delta.role == "assistant"
        texts = [c.choices[0].delta.content for c in chunks[1:] if c.choices]
        assert "".join(t or "" for t in texts) == "one two three"
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert chunks[-1].choices == []
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.total_tokens == 8

        fake.reply("plain")
        raw = await client.post(
            "/v1/chat/completions",
            json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]},
            headers=bearer(key),
        )
        frames = [line for line in raw.text.split("\n\n") if line]
        assert frames[-1] == "data: [DONE]"
        payloads = [json.loads(f[6:]) for f in frames[:-1]]
        assert "usage" not in payloads[0]  # only with stream_options.include_usage
        assert payloads[-1]["choices"][0] == {
            "index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"
        }  # fmt: skip


async def test_a_history_never_seen_is_seeded(fresh_database: str, fake: FakeOpenAI) -> None:
    fake.clear()
    async with tusk(fresh_database, fake) as (client, token):
        key = await new_app(client, token, "chat")
        fake.reply("Paris, still")
        answer = await sdk(client, key).chat.completions.create(
            model="m",
            messages=[
                {"role": "user", "content": "capital of France?"},
                {"role": "assistant", "content": "Paris"},
                {"role": "user", "content": "sure?"},
            ],
        )
        assert answer.choices[0].message.content == "Paris, still"
        assert sent(fake)[1:] == [
            ("user", "capital of France?"),
            ("assistant", "Paris"),
            ("user", "sure?"),
        ]
    stored = await rows(
        fresh_database,
        "SELECT query, answer, status, parent_message_id IS NULL FROM messages ORDER BY created_at",
    )
    assert stored == [
        ("capital of France?", "Paris", "normal", True),
        ("sure?", "Paris, still", "normal", False),
    ]


def chatflow() -> dict[str, Any]:
    nodes = [
        node("start", "start", variables=[]),
        node("llm", "llm", model=GPT, memory={"window": {"enabled": True, "size": 10}},
             prompt_template=[{"role": "system", "text": "Chatflow."}]),
        node("answer", "answer", answer="{{#llm.text#}}!"),
    ]  # fmt: skip
    return {"graph": {"nodes": nodes, "edges": chain("start", "llm", "answer")}, "features": {}}


def echo_workflow(*fields: str) -> dict[str, Any]:
    form = [{"variable": f, "label": f, "type": "text-input", "required": True} for f in fields]
    nodes = [
        node("start", "start", variables=form),
        node("end", "end", outputs=[{"variable": "echo", "value_selector": ["start", fields[0]]}]),
    ]
    return {"graph": {"nodes": nodes, "edges": chain("start", "end")}, "features": {}}


async def test_chatflow_workflow_and_completion_apps(fresh_database: str, fake: FakeOpenAI) -> None:
    fake.clear()
    async with tusk(fresh_database, fake) as (client, token):
        flow = sdk(client, await new_app(client, token, "advanced-chat", chatflow()))
        fake.reply("Bonjour")
        said = [{"role": "user", "content": "salut"}]
        first = await flow.chat.completions.create(model="m", messages=said)  # type: ignore[arg-type]
        assert first.choices[0].message.content == "Bonjour!"
        fake.reply("Encore")
        said += [{"role": "assistant", "content": "Bonjour!"}, {"role": "user", "content": "et?"}]
        stream = await flow.chat.completions.create(model="m", messages=said, stream=True)  # type: ignore[arg-type]
        text_ = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text_ == "Encore!"
        assert sent(fake) == [
            ("system", "Chatflow."), ("user", "salut"), ("assistant", "Bonjour!"), ("user", "et?")
        ]  # fmt: skip

        workflow = sdk(client, await new_app(client, token, "workflow", echo_workflow("q")))
        ran = await workflow.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "echo me"}]
        )
        assert ran.choices[0].message.content == "echo me"

        two = sdk(client, await new_app(client, token, "workflow", echo_workflow("a", "b")))
        with pytest.raises(openai.BadRequestError) as refused:
            await two.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}]
            )
        error = refused.value.body
        assert isinstance(error, dict)
        assert error["type"] == "invalid_request_error"
        assert "exactly one" in error["message"]

        completion = sdk(client, await new_app(client, token, "completion"))
        fake.reply("42")
        done = await completion.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "the answer"}],
            extra_body={"inputs": {}},
        )
        assert done.choices[0].message.content == "42"
        assert "the answer" in sent(fake)[-1][1]


TIME_TOOL = {
    "enabled": True,
    "provider_id": "time",
    "provider_type": "builtin",
    "tool_name": "current_time",
    "tool_parameters": {"format": "%Y", "timezone": ""},
}
AGENT = {
    "model": GPT,
    "prompt_type": "simple",
    "pre_prompt": "You tell the time.",
    "agent_mode": {"enabled": True, "strategy": "function_call", "tools": [TIME_TOOL]},
}


async def test_agent_chat_app_answers_with_the_agents_text(
    fresh_database: str, fake: FakeOpenAI
) -> None:
    fake.clear()
    async with tusk(fresh_database, fake) as (client, token):
        api = sdk(client, await new_app(client, token, "agent-chat", config=AGENT))
        fake.reply_tool_calls([ToolCall("current_time", {"timezone": "UTC"})])
        fake.reply("It is the year on the clock.", chunks=["It is the year", " on the clock."])
        said = [{"role": "user", "content": "Which year is it?"}]
        stream = await api.chat.completions.create(model="m", messages=said, stream=True)  # type: ignore[arg-type]
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert streamed == "It is the year on the clock."
        tool_result = [m for m in fake.requests[-1].json["messages"] if m["role"] == "tool"]
        assert tool_result[0]["content"] == str(datetime.now(UTC).year)

        fake.reply("Still the same year.")
        said += [{"role": "assistant", "content": streamed}, {"role": "user", "content": "Sure?"}]
        again = await api.chat.completions.create(model="m", messages=said)  # type: ignore[arg-type]
        assert again.choices[0].message.content == "Still the same year."
    recorded = await rows(
        fresh_database,
        "SELECT m.answer, count(t.id) FROM messages m "
        "LEFT JOIN message_agent_thoughts t ON t.message_id = m.id "
        "GROUP BY m.id, m.answer, m.created_at ORDER BY m.created_at",
    )
    assert [answer for answer, _ in recorded] == [streamed, "Still the same year."]
    assert recorded[0][1] >= 2  # the tool round and the answer
    assert (
        len({c for (c,) in await rows(fresh_database, "SELECT conversation_id FROM messages")}) == 1
    )


async def test_errors_in_openai_shape(fresh_database: str, fake: FakeOpenAI) -> None:
    async with tusk(fresh_database, fake) as (client, token):
        key = await new_app(client, token, "chat")
        with pytest.raises(openai.AuthenticationError):
            await sdk(client, "app-wrong").chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}]
            )
        with pytest.raises(openai.BadRequestError) as refused:
            await sdk(client, key).chat.completions.create(
                model="m", messages=[{"role": "assistant", "content": "x"}]
            )
        assert refused.value.body == {
            "message": "The last message must come from the user.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "invalid_param",
        }
        fake.fail(500, "upstream broke", times=3)
        failed = await client.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
            headers=bearer(key),
        )
        assert failed.status_code == 400
        assert failed.json()["error"]["code"] == "completion_request_error"
