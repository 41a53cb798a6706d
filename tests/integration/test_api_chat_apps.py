"""Chat and completion apps configured by a `model_config` document, over the Service API with
FakeOpenAI as the provider: Dify's bodies and events, conversation memory, knowledge with
citations, moderation, auto-naming, stop from another API process, errors."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator, MutableMapping
from contextlib import aclosing, asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text

from tests.support.api import SECRET, api_client, assert_error, bearer, make_settings
from tests.support.api import setup_and_login as login_admin
from tests.support.knowledge import run_queued_jobs, services_on
from tusk.api.app import create_app
from tusk.apps.easy_config import EasyConfig
from tusk.apps.prompting import PromptInput, build_prompt
from tusk.apps.suggestions import SuggestionsDisabled, suggested_questions
from tusk.db.engine import engine_scope
from tusk.db.models import App
from tusk.db.models import Message as DbMessage
from tusk.models.types import Message
from tusk.rag import datasets, documents
from tusk.runtime import Runtime
from tusk.testing.openai_server import FakeOpenAI

KEY = "sk-chat-apps"
GPT = {
    "provider": "langgenius/openai/openai",
    "name": "gpt-4o-mini",
    "mode": "chat",
    "completion_params": {"temperature": 0.2},
}
USAGE_KEYS = {
    "prompt_tokens", "prompt_unit_price", "prompt_price_unit", "prompt_price",
    "completion_tokens", "completion_unit_price", "completion_price_unit", "completion_price",
    "total_tokens", "total_price", "currency", "latency", "time_to_first_token",
    "time_to_generate",
}  # fmt: skip
NAME_FIELD = {"text-input": {"label": "Name", "variable": "name", "required": True}}


@pytest.fixture(scope="module")
def openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as fake:
        yield fake


def env(openai: FakeOpenAI, **extra: Any) -> dict[str, Any]:
    return {"openai_api_key": KEY, "openai_api_base": openai.base_url, **extra}


def document(**fields: Any) -> dict[str, Any]:
    return {"model": GPT, "prompt_type": "simple", "pre_prompt": "", **fields}


async def configured_app(
    client: httpx.AsyncClient, token: str, mode: str, config: dict[str, Any]
) -> tuple[str, str]:
    """A new app with this model config, and an `app-` key for it."""
    made = await client.post(
        "/console/api/apps", json={"name": mode, "mode": mode}, headers=bearer(token)
    )
    app_id = made.json()["id"]
    saved = await client.post(
        f"/console/api/apps/{app_id}/model-config", json=config, headers=bearer(token)
    )
    assert saved.json() == {"result": "success"}, saved.text
    key = await client.post(f"/console/api/apps/{app_id}/api-keys", headers=bearer(token))
    return app_id, key.json()["token"]


def events(body: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]


def sent_messages(openai: FakeOpenAI) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in openai.requests[-1].json["messages"]]


async def rows(conninfo: str, sql: str) -> list[tuple[Any, ...]]:
    async with engine_scope(conninfo) as engine, engine.connect() as conn:
        return [tuple(row) for row in (await conn.execute(text(sql))).all()]


async def eventually_rows(conninfo: str, sql: str, expected: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (found := await rows(conninfo, sql)) != expected:
        assert time.monotonic() < deadline, f"{sql} gave {found}, not {expected}"
        await asyncio.sleep(0.05)


# --- chat ----------------------------------------------------------------------------------


async def test_chat_turns_blocking_then_streaming(fresh_database: str, openai: FakeOpenAI) -> None:
    openai.clear()
    config = document(pre_prompt="You help {{name}}.", user_input_form=[NAME_FIELD])
    async with api_client(fresh_database, **env(openai)) as client:
        token = await login_admin(client)
        app_id, key = await configured_app(client, token, "chat", config)
        openai.reply("Hello Ann")
        first = await client.post(
            "/v1/chat-messages",
            json={"query": "hi", "user": "ann", "inputs": {"name": "Ann"},
                  "auto_generate_name": False},
            headers=bearer(key),
        )  # fmt: skip
        assert first.status_code == 200, first.text
        body = first.json()
        assert set(body) == {"event", "task_id", "id", "message_id", "conversation_id", "mode",
                             "answer", "metadata", "created_at"}  # fmt: skip
        assert (body["event"], body["mode"], body["answer"]) == ("message", "chat", "Hello Ann")
        assert body["id"] == body["message_id"] != body["task_id"]
        assert set(body["metadata"]["usage"]) == USAGE_KEYS
        assert body["metadata"]["usage"]["total_tokens"] > 0
        assert body["metadata"]["retriever_resources"] == []
        assert sent_messages(openai) == [("system", "You help Ann."), ("user", "hi")]
        assert openai.requests[-1].json["temperature"] == 0.2

        # A new config applies to new conversations; this one keeps the config it started with.
        newer = {**config, "pre_prompt": "You serve {{name}}."}
        await client.post(
            f"/console/api/apps/{app_id}/model-config", json=newer, headers=bearer(token)
        )
        openai.reply("Still here", chunks=["Still", " here"])
        second = await client.post(
            "/v1/chat-messages",
            json={"query": "and now?", "user": "ann", "response_mode": "streaming",
                  "conversation_id": body["conversation_id"], "inputs": {"name": "Bob"}},
            headers=bearer(key),
        )  # fmt: skip
        chunks = events(second.text)
        assert [c["event"] for c in chunks] == ["message", "message", "message_end"]
        assert "".join(c["answer"] for c in chunks[:-1]) == "Still here"
        assert {c["conversation_id"] for c in chunks} == {body["conversation_id"]}
        assert {c["message_id"] for c in chunks} == {chunks[0]["id"]}
        assert set(chunks[-1]["metadata"]["usage"]) == USAGE_KEYS
        # The conversation keeps its first inputs, and its history reaches the model.
        assert sent_messages(openai) == [
            ("system", "You help Ann."),
            ("user", "hi"),
            ("assistant", "Hello Ann"),
            ("user", "and now?"),
        ]
        other = await client.post(
            "/v1/chat-messages",
            json={"query": "x", "user": "bob", "conversation_id": body["conversation_id"]},
            headers=bearer(key),
        )
        assert_error(other, 404, "not_found")
    stored = await rows(
        fresh_database,
        "SELECT query, answer, status, message_tokens > 0, parent_message_id IS NOT NULL "
        "FROM messages ORDER BY created_at",
    )
    assert stored == [("hi", "Hello Ann", "normal", True, False),
                      ("and now?", "Still here", "normal", True, True)]  # fmt: skip
    conversations = await rows(
        fresh_database, "SELECT mode, dialogue_count, name FROM conversations"
    )
    assert conversations == [("chat", 2, "New conversation")]
    versions = await rows(fresh_database, "SELECT count(*) FROM app_model_configs")
    assert versions == [(2,)]


async def test_completion_app_and_wrong_routes(fresh_database: str, openai: FakeOpenAI) -> None:
    openai.clear()
    topic = {"select": {"label": "Topic", "variable": "topic", "required": True,
                        "options": ["snow", "rain"]}}  # fmt: skip
    config = document(pre_prompt="Write a haiku about {{topic}}.", user_input_form=[topic])
    async with api_client(fresh_database, **env(openai)) as client:
        token = await login_admin(client)
        _, key = await configured_app(client, token, "completion", config)
        _, chat_key = await configured_app(client, token, "chat", document())
        openai.reply("White and quiet")
        blocking = await client.post(
            "/v1/completion-messages",
            json={"inputs": {"topic": "snow"}, "user": "u"},
            headers=bearer(key),
        )
        body = blocking.json()
        assert set(body) == {"event", "task_id", "id", "message_id", "mode", "answer",
                             "metadata", "created_at"}  # fmt: skip
        assert (body["mode"], body["answer"]) == ("completion", "White and quiet")
        assert sent_messages(openai) == [("user", "Write a haiku about snow.")]

        streamed = await client.post(
            "/v1/completion-messages",
            json={"inputs": {"topic": "rain"}, "user": "u", "response_mode": "streaming"},
            headers=bearer(key),
        )
        chunks = events(streamed.text)
        assert chunks[-1]["event"] == "message_end"
        assert all("conversation_id" not in c for c in chunks)
        assert "".join(c["answer"] for c in chunks[:-1]) == "Echo: Write a haiku about rain."

        bad_option = await client.post(
            "/v1/completion-messages",
            json={"inputs": {"topic": "fog"}, "user": "u"},
            headers=bearer(key),
        )
        assert assert_error(bad_option, 400, "invalid_param")["params"] == "topic"
        wrong = await client.post(
            "/v1/chat-messages", json={"query": "x", "user": "u"}, headers=bearer(key)
        )
        assert_error(wrong, 400, "not_chat_app")
        wrong = await client.post(
            "/v1/completion-messages", json={"inputs": {}, "user": "u"}, headers=bearer(chat_key)
        )
        assert_error(wrong, 400, "not_completion_app")
    conversations = await rows(fresh_database, "SELECT mode FROM conversations")
    assert conversations == [("completion",), ("completion",)]


# --- knowledge -----------------------------------------------------------------------------

TOPICS = {
    "bees": "Honey bees live in colonies with one queen. Worker bees tell each other where "
    "flowers are with a waggle dance.",
    "volcano": "A volcano erupts when magma rises through the crust; lava and ash follow.",
}


async def admin_workspace(conninfo: str) -> Any:
    return (await rows(conninfo, "SELECT workspace_id FROM memberships"))[0][0]


async def indexed_dataset(conninfo: str) -> str:
    """A dataset of the admin's workspace with two documents, indexed through the queue."""
    async with services_on(conninfo) as services:
        async with services.transaction() as db:
            made = await datasets.create_dataset(
                db, services.models, services.queue, await admin_workspace(conninfo),
                datasets.DatasetInput(name="facts"), None,
            )  # fmt: skip
        for name, body in TOPICS.items():
            async with services.transaction() as db:
                await documents.add_document(
                    db, services.storage, services.queue, made,
                    documents.DocumentInput(name=name), documents.text_source(name, body),
                    max_bytes=1_000_000, created_by=None,
                )  # fmt: skip
        await run_queued_jobs(services)
    return str(made.id)


async def test_dataset_context_and_citations(fresh_database: str, openai: FakeOpenAI) -> None:
    openai.clear()
    async with api_client(fresh_database, **env(openai)) as client:
        token = await login_admin(client)
        dataset_id = await indexed_dataset(fresh_database)
        knowledge = {
            "retrieval_model": "multiple",
            "top_k": 1,
            "reranking_enabled": False,
            "datasets": {"datasets": [{"dataset": {"enabled": True, "id": dataset_id}}]},
        }
        config = document(
            pre_prompt="Answer briefly.",
            dataset_configs=knowledge,
            retriever_resource={"enabled": True},
        )
        _, key = await configured_app(client, token, "chat", config)
        openai.reply("They dance.")
        reply = await client.post(
            "/v1/chat-messages",
            json={"query": "How do bees show where flowers are?", "user": "u",
                  "response_mode": "streaming", "auto_generate_name": False},
            headers=bearer(key),
        )  # fmt: skip
        end = events(reply.text)[-1]
        system = sent_messages(openai)[0]
        assert system[0] == "system"
        assert TOPICS["bees"] in system[1]
        assert TOPICS["volcano"] not in system[1]
        assert system[1].endswith("Answer briefly.")
    assert end["event"] == "message_end"
    [cited] = end["metadata"]["retriever_resources"]
    assert set(cited) >= CITATION_KEYS
    assert (cited["position"], cited["dataset_id"], cited["dataset_name"]) == (
        1,
        dataset_id,
        "facts",
    )
    assert (cited["document_name"], cited["retriever_from"]) == ("bees", "api")
    assert cited["content"] == TOPICS["bees"]
    assert 0 < cited["score"] <= 1
    stored = await rows(fresh_database, "SELECT message_metadata FROM messages")
    assert stored[0][0]["retriever_resources"][0]["segment_id"] == cited["segment_id"]


CITATION_KEYS = {
    "position", "dataset_id", "dataset_name", "document_id", "document_name",
    "data_source_type", "segment_id", "retriever_from", "score", "hit_count",
    "word_count", "segment_position", "index_node_hash", "content",
}  # fmt: skip

# --- features ------------------------------------------------------------------------------

MODERATION: dict[str, Any] = {
    "enabled": True,
    "type": "keywords",
    "config": {
        "keywords": "secret\nforbidden",
        "inputs_config": {"enabled": True, "preset_response": "I cannot talk about that."},
        "outputs_config": {"enabled": True, "preset_response": "[redacted]"},
    },
}


async def test_keyword_moderation_of_query_and_answer(
    fresh_database: str, openai: FakeOpenAI
) -> None:
    openai.clear()
    async with api_client(fresh_database, **env(openai)) as client:
        token = await login_admin(client)
        _, key = await configured_app(
            client, token, "chat", document(sensitive_word_avoidance=MODERATION)
        )
        held = await client.post(
            "/v1/chat-messages",
            json={"query": "Tell me the SECRET", "user": "u", "auto_generate_name": False},
            headers=bearer(key),
        )
        assert held.json()["answer"] == "I cannot talk about that."
        assert openai.requests == []  # the model was not called

        openai.reply("here is the forbidden word", chunks=["here ", "is ", "the ", "forbidden ",
                                                          "word"])  # fmt: skip
        replaced = await client.post(
            "/v1/chat-messages",
            json={"query": "go on", "user": "u", "response_mode": "streaming",
                  "auto_generate_name": False},
            headers=bearer(key),
        )  # fmt: skip
        chunks = events(replaced.text)
    assert [c["event"] for c in chunks] == ["message"] * 3 + ["message_replace", "message_end"]
    assert chunks[3]["answer"] == "[redacted]"
    assert chunks[3]["reason"] == "output_moderation"
    stored = await rows(fresh_database, "SELECT answer, status FROM messages ORDER BY created_at")
    assert stored == [("I cannot talk about that.", "normal"), ("[redacted]", "normal")]


async def test_a_new_conversation_is_named_in_the_background(
    fresh_database: str, openai: FakeOpenAI
) -> None:
    openai.clear()
    async with api_client(fresh_database, **env(openai)) as client:
        token = await login_admin(client)
        _, key = await configured_app(client, token, "chat", document())
        openai.reply("Hi there")
        openai.reply('{"title": "Friendly greeting"}')
        reply = await client.post(
            "/v1/chat-messages", json={"query": "hello!", "user": "u"}, headers=bearer(key)
        )
        assert reply.json()["answer"] == "Hi there"
        await eventually_rows(
            fresh_database, "SELECT name FROM conversations", [("Friendly greeting",)]
        )
        naming_prompt = openai.requests[-1].json["messages"][0]["content"]
        assert "hello!" in naming_prompt


async def test_suggested_questions_after_an_answer(fresh_database: str, openai: FakeOpenAI) -> None:
    openai.clear()
    async with api_client(fresh_database, **env(openai)) as client:
        token = await login_admin(client)
        enabled = document(suggested_questions_after_answer={"enabled": True})
        on_id, on_key = await configured_app(client, token, "chat", enabled)
        off_id, off_key = await configured_app(client, token, "chat", document())
        for key in (on_key, off_key):
            openai.reply("Bees dance.")
            await client.post(
                "/v1/chat-messages",
                json={"query": "How do bees talk?", "user": "u", "auto_generate_name": False},
                headers=bearer(key),
            )
    async with services_on(fresh_database, **env(openai)) as services:
        async with services.transaction() as db:
            on_app, off_app = await db.get(App, on_id), await db.get(App, off_id)
            found = (await db.execute(select(DbMessage).order_by(DbMessage.created_at))).scalars()
            on_message, off_message = list(found)
        assert on_app is not None
        assert off_app is not None
        openai.reply('Here: ["Why dance?", "Which flowers?", "Who leads?", "More?"]')
        questions = await suggested_questions(
            services.sessions, services.models, on_app, on_message
        )
        assert questions == ["Why dance?", "Which flowers?", "Who leads?"]
        prompt = openai.requests[-1].json["messages"][0]["content"]
        assert "How do bees talk?" in prompt
        assert "Bees dance." in prompt
        with pytest.raises(SuggestionsDisabled):
            await suggested_questions(services.sessions, services.models, off_app, off_message)


# --- errors --------------------------------------------------------------------------------


async def test_bad_configs_and_inputs_are_400_naming_the_field(
    fresh_database: str, openai: FakeOpenAI
) -> None:
    async with api_client(fresh_database, **env(openai)) as client:
        token = await login_admin(client)
        made = await client.post(
            "/console/api/apps", json={"name": "c", "mode": "chat"}, headers=bearer(token)
        )
        app_id = made.json()["id"]
        key = await client.post(f"/console/api/apps/{app_id}/api-keys", headers=bearer(token))
        unconfigured = await client.post(
            "/v1/chat-messages", json={"query": "x", "user": "u"},
            headers=bearer(key.json()["token"]),
        )  # fmt: skip
        assert_error(unconfigured, 400, "app_unavailable")

        path = f"/console/api/apps/{app_id}/model-config"
        no_model = {**document(), "model": {"provider": "openai", "name": ""}}
        bad_form = document(user_input_form=[{"color-input": {"variable": "x"}}])
        bad_name = document(user_input_form=[{"text-input": {"variable": "1 bad"}}])
        no_preset_config = {**MODERATION["config"], "outputs_config": {"enabled": True}}
        no_preset = document(sensitive_word_avoidance={**MODERATION, "config": no_preset_config})
        advanced = document(prompt_type="advanced")
        cases = [
            (no_model, "model.name"),
            (bad_form, "user_input_form[0]"),
            (bad_name, "user_input_form[0].variable"),
            (no_preset, "sensitive_word_avoidance.config.outputs_config.preset_response"),
            (advanced, "chat_prompt_config"),
            ({**document(), "prompt_type": "fancy"}, "prompt_type"),
        ]
        for config, field in cases:
            refused = await client.post(path, json=config, headers=bearer(token))
            assert assert_error(refused, 400, "invalid_param")["params"] == field, config

        _, key_value = await configured_app(
            client, token, "chat", document(user_input_form=[NAME_FIELD])
        )
        missing = await client.post(
            "/v1/chat-messages", json={"query": "x", "user": "u", "inputs": {}},
            headers=bearer(key_value),
        )  # fmt: skip
        body = assert_error(missing, 400, "invalid_param")
        assert (body["params"], body["message"]) == ("name", "name is required in input form")


async def test_provider_errors_are_reported_and_recorded(
    fresh_database: str, openai: FakeOpenAI
) -> None:
    openai.clear()
    async with api_client(fresh_database, **env(openai, model_max_retries=0)) as client:
        token = await login_admin(client)
        _, key = await configured_app(client, token, "chat", document())
        openai.fail(400, "bad request from the provider")
        streamed = await client.post(
            "/v1/chat-messages",
            json={"query": "hi", "user": "u", "response_mode": "streaming"},
            headers=bearer(key),
        )
        [error] = events(streamed.text)
        assert (error["event"], error["code"], error["status"]) == (
            "error", "completion_request_error", 400)  # fmt: skip
        assert "bad request from the provider" in error["message"]
        openai.fail(400, "bad request again")
        blocking = await client.post(
            "/v1/chat-messages", json={"query": "hi", "user": "u"}, headers=bearer(key)
        )
        assert (
            "bad request again"
            in assert_error(blocking, 400, "completion_request_error")["message"]
        )
        haiku = {"provider": "anthropic", "name": "claude-3-5-haiku-latest", "mode": "chat"}
        _, other_key = await configured_app(client, token, "chat", document(model=haiku))
        uninitialised = await client.post(
            "/v1/chat-messages", json={"query": "hi", "user": "u"}, headers=bearer(other_key)
        )
        assert_error(uninitialised, 400, "provider_not_initialize")
    stored = await rows(fresh_database, "SELECT status, error FROM messages ORDER BY created_at")
    assert [status for status, _ in stored] == ["error"] * 3
    assert "bad request from the provider" in stored[0][1]


# --- stop ----------------------------------------------------------------------------------


@asynccontextmanager
async def api_app(conninfo: str, **overrides: Any) -> AsyncIterator[FastAPI]:
    """An API process's app, running, for driving over ASGI as a stream is read."""
    app = create_app(Runtime(make_settings(**overrides), conninfo, SECRET, embedded=False))
    async with app.router.lifespan_context(app):
        yield app


async def stream_events(
    app: FastAPI, path: str, body: dict[str, Any], key: str
) -> AsyncIterator[dict[str, Any]]:
    """SSE payloads as the app sends them; leaving early disconnects the client."""
    sent: asyncio.Queue[MutableMapping[str, Any]] = asyncio.Queue()
    gone = asyncio.Event()
    request = [{"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}]

    async def receive() -> dict[str, Any]:
        if request:
            return request.pop()
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        await sent.put(message)

    headers = [(b"content-type", b"application/json"), (b"authorization", f"Bearer {key}".encode())]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "headers": headers, "server": ("tusk", 80),
             "client": ("127.0.0.1", 5000)}  # fmt: skip
    running = asyncio.create_task(app(scope, receive, send))
    buffer = b""
    try:
        while True:
            message = await sent.get()
            if message["type"] != "http.response.body":
                continue
            buffer += message.get("body", b"")
            while b"\n\n" in buffer:
                frame, buffer = buffer.split(b"\n\n", 1)
                if frame.startswith(b"data: "):
                    yield json.loads(frame[6:])
            if not message.get("more_body"):
                return
    finally:
        gone.set()
        await asyncio.wait_for(running, 10)


SLOW = [f"word{i} " for i in range(20)]


async def test_stop_from_another_api_process(fresh_database: str, openai: FakeOpenAI) -> None:
    openai.clear()
    async with (
        api_app(fresh_database, **env(openai)) as one,
        api_client(fresh_database, **env(openai)) as other,
    ):
        token = await login_admin(other)
        _, key = await configured_app(other, token, "chat", document())
        openai.reply("".join(SLOW), chunks=SLOW, delay=0.2)
        body = {"query": "talk", "user": "u", "response_mode": "streaming",
                "auto_generate_name": False}  # fmt: skip
        received: list[dict[str, Any]] = []
        async for chunk in stream_events(one, "/v1/chat-messages", body, key):
            received.append(chunk)
            if len(received) == 1:
                stopped_at = time.monotonic()
                stop = await other.post(
                    f"/v1/chat-messages/{chunk['task_id']}/stop", json={"user": "u"},
                    headers=bearer(key),
                )  # fmt: skip
                assert stop.json() == {"result": "success"}
        assert time.monotonic() - stopped_at < 2
    assert received[-1]["event"] == "message_end"
    answer = "".join(c["answer"] for c in received if c["event"] == "message")
    assert answer
    assert answer != "".join(SLOW)
    stored = await rows(fresh_database, "SELECT answer, status FROM messages")
    assert stored == [(answer, "stopped")]


async def test_a_client_that_disconnects_stops_the_generation(
    fresh_database: str, openai: FakeOpenAI
) -> None:
    openai.clear()
    async with (
        api_app(fresh_database, **env(openai)) as one,
        api_client(fresh_database, **env(openai)) as client,
    ):
        token = await login_admin(client)
        _, key = await configured_app(client, token, "completion", document(pre_prompt="Go."))
        openai.reply("".join(SLOW), chunks=SLOW, delay=0.2)
        body = {"inputs": {}, "user": "u", "response_mode": "streaming"}
        async with aclosing(stream_events(one, "/v1/completion-messages", body, key)) as stream:
            first = await anext(stream)  # then the client goes away
        assert first["event"] == "message"
        await eventually_rows(
            fresh_database, "SELECT status FROM messages", [("stopped",)], timeout=3
        )
    [(answer,)] = await rows(fresh_database, "SELECT answer FROM messages")
    assert answer.startswith("word0")
    assert answer != "".join(SLOW)


async def test_the_model_call_does_not_wait_for_the_turns_rows(
    fresh_database: str, openai: FakeOpenAI
) -> None:
    """The turn's rows are written while the model is called; its chunks (which carry the ids
    of those rows) reach the client once they are there."""
    openai.clear()
    async with (
        api_app(fresh_database, **env(openai)) as one,
        api_client(fresh_database, **env(openai)) as client,
        engine_scope(fresh_database) as engine,
        engine.connect() as blocker,
    ):
        _, key = await configured_app(client, await login_admin(client), "chat", document())
        openai.reply("Hello there", chunks=["Hello", " there"])
        body = {"query": "hi", "user": "u", "response_mode": "streaming",
                "auto_generate_name": False}  # fmt: skip
        await blocker.execute(text("LOCK TABLE messages IN EXCLUSIVE MODE"))  # no insert passes
        async with aclosing(stream_events(one, "/v1/chat-messages", body, key)) as stream:
            first = asyncio.create_task(anext(stream))
            deadline = time.monotonic() + 10
            while not openai.requests:  # the model is called while the rows wait for the lock
                assert time.monotonic() < deadline, "the model was not called"
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)
            assert not first.done()  # nothing is told before the rows are there
            await blocker.rollback()
            assert (await asyncio.wait_for(first, 10))["answer"] == "Hello"
            rest = [chunk async for chunk in stream]
            assert [c["event"] for c in rest] == ["message", "message_end"]
    assert await rows(fresh_database, "SELECT answer, status FROM messages") == [
        ("Hello there", "normal")
    ]


async def test_the_turns_rows_are_written_while_the_model_thinks(
    fresh_database: str, openai: FakeOpenAI
) -> None:
    """The write starts once the model's request is sent, not at its first token."""
    openai.clear()
    async with (
        api_app(fresh_database, **env(openai)) as one,
        api_client(fresh_database, **env(openai)) as client,
    ):
        _, key = await configured_app(client, await login_admin(client), "chat", document())
        openai.reply("Hello there", chunks=["Hello", " there"], ttft=3.0)
        body = {"query": "hi", "user": "u", "response_mode": "streaming",
                "auto_generate_name": False}  # fmt: skip
        async with aclosing(stream_events(one, "/v1/chat-messages", body, key)) as stream:
            first = asyncio.create_task(anext(stream))
            await eventually_rows(
                fresh_database, "SELECT answer, status FROM messages", [("", "normal")], timeout=2
            )
            assert not first.done()  # the model has not answered yet
            assert (await asyncio.wait_for(first, 10))["answer"] == "Hello"
            assert [c["event"] async for c in stream] == ["message", "message_end"]


async def test_a_turn_whose_rows_cannot_be_written_fails_and_leaves_none(
    fresh_database: str, openai: FakeOpenAI
) -> None:
    openai.clear()
    async with api_client(fresh_database, **env(openai)) as client:
        _, key = await configured_app(client, await login_admin(client), "chat", document())
        async with engine_scope(fresh_database) as engine, engine.begin() as conn:
            await conn.execute(text(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'the disk is full'; END $$"
            ))  # fmt: skip
            await conn.execute(text(
                "CREATE TRIGGER refuse BEFORE INSERT ON messages "
                "FOR EACH ROW EXECUTE FUNCTION refuse()"
            ))  # fmt: skip
        openai.reply("Hello there", chunks=["Hello", " there"])
        body = {"query": "hi", "user": "u", "response_mode": "streaming"}
        reply = await client.post("/v1/chat-messages", json=body, headers=bearer(key))
        sent = events(reply.text)
        assert sent[-1]["event"] == "error"
        assert sent[-1]["status"] == 500
        assert "message_end" not in [chunk["event"] for chunk in sent]
        blocking = await client.post(
            "/v1/chat-messages", json={**body, "response_mode": "blocking"}, headers=bearer(key)
        )
        assert blocking.status_code == 500
        assert blocking.json()["code"] == "internal_server_error"
    assert await rows(fresh_database, "SELECT count(*) FROM messages") == [(0,)]
    assert await rows(fresh_database, "SELECT count(*) FROM conversations") == [(0,)]


async def test_an_app_that_finishes_in_the_background_outlives_its_client(
    fresh_database: str, openai: FakeOpenAI
) -> None:
    openai.clear()
    async with (
        api_app(fresh_database, **env(openai)) as one,
        api_client(fresh_database, **env(openai)) as client,
    ):
        token = await login_admin(client)
        app_id, key = await configured_app(client, token, "chat", document())
        changed = await client.put(
            f"/console/api/apps/{app_id}", json={"finish_in_background": True},
            headers=bearer(token),
        )  # fmt: skip
        assert changed.json()["finish_in_background"] is True
        openai.reply("".join(SLOW), chunks=SLOW, delay=0.05)
        body = {"query": "talk", "user": "u", "response_mode": "streaming",
                "auto_generate_name": False}  # fmt: skip
        async with aclosing(stream_events(one, "/v1/chat-messages", body, key)) as stream:
            first = await anext(stream)  # then the client goes away
        assert first["event"] == "message"
        await eventually_rows(
            fresh_database, "SELECT answer, status FROM messages", [("".join(SLOW), "normal")],
            timeout=5,
        )  # fmt: skip


# --- prompts (pure) ------------------------------------------------------------------------

HISTORY = (Message("user", "hi"), Message("assistant", "hello"))


def test_advanced_chat_prompt_places_context_inputs_history_and_query() -> None:
    config = EasyConfig.model_validate(
        {
            "model": GPT,
            "prompt_type": "advanced",
            "chat_prompt_config": {"prompt": [
                {"role": "system", "text": "Facts: {{#context#}}. Speak to {{name}} {{unknown}}."},
                {"role": "system", "text": "{{empty}}"},
            ]},
        }
    )  # fmt: skip
    prompt = build_prompt(
        config, PromptInput("chat", {"name": "Ann {{x}}", "empty": ""}, "why?", "sky", HISTORY)
    )
    assert [(m.role, m.text) for m in prompt.messages] == [
        ("system", "Facts: sky. Speak to Ann {x} {{unknown}}."),
        ("user", "hi"),
        ("assistant", "hello"),
        ("user", "why?"),
    ]


def test_completion_model_prompts_write_the_history_inline() -> None:
    advanced = EasyConfig.model_validate(
        {
            "model": {**GPT, "mode": "completion"},
            "prompt_type": "advanced",
            "completion_prompt_config": {
                "prompt": {"text": "{{#context#}}|{{#histories#}}|Q: {{#query#}}"},
                "conversation_histories_role": {"user_prefix": "U", "assistant_prefix": "A"},
            },
        }
    )
    prompt = build_prompt(advanced, PromptInput("chat", {}, "why?", "sky", HISTORY))
    assert [m.text for m in prompt.messages] == ["sky|U: hi\nA: hello|Q: why?"]

    simple = EasyConfig.model_validate(
        {"model": {**GPT, "mode": "completion"}, "pre_prompt": "Be kind."}
    )
    prompt = build_prompt(simple, PromptInput("chat", {}, "why?", None, HISTORY))
    [only] = prompt.messages
    assert only.role == "user"
    assert only.text.startswith("Be kind.\n")
    assert "Human: hi\nAssistant: hello" in only.text
    assert only.text.endswith("Human: why?\n\nAssistant: ")
    assert prompt.stops == ["\nHuman:", "</histories>"]
