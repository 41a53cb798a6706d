"""The Service API's response keys and SSE event sequences, endpoint by endpoint, against the
contract document kept beside the project (`dify-contracts.md`, sections 3.1, 3.2 and 3.4): the
expected keys are written out here from that document.

Where Tusk still differs, the test says exactly how and is marked `xfail(strict=True)`, so it
turns red the day the difference goes away unnoticed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.support.api import api_client, bearer, setup_and_login
from tests.support.workflow import chain, node
from tusk.db.engine import engine_scope
from tusk.testing.openai_server import FakeOpenAI

KEY = "sk-contracts"
GPT = {"provider": "langgenius/openai/openai", "name": "gpt-4o-mini", "mode": "chat"}

# --- the document's keys (§3.2, §3.4) -----------------------------------------------------------

CHAT_BLOCKING = {"event", "task_id", "id", "message_id", "conversation_id", "mode", "answer",
                 "metadata", "created_at"}  # fmt: skip
COMPLETION_BLOCKING = CHAT_BLOCKING - {"conversation_id"}
METADATA = {"usage", "retriever_resources"}
USAGE = {"prompt_tokens", "prompt_unit_price", "prompt_price_unit", "prompt_price",
         "completion_tokens", "completion_unit_price", "completion_price_unit",
         "completion_price", "total_tokens", "total_price", "currency", "latency",
         "time_to_first_token", "time_to_generate"}  # fmt: skip
MESSAGE_END = {"id", "metadata", "files"}
RUN_SUMMARY = {"id", "workflow_id", "status", "outputs", "error", "elapsed_time", "total_tokens",
               "total_steps", "created_at", "finished_at"}  # fmt: skip
WORKFLOW_BLOCKING = {"task_id", "workflow_run_id", "data"}
RUN_DETAIL = {"id", "workflow_id", "status", "inputs", "outputs", "error", "total_steps",
              "total_tokens", "created_at", "finished_at", "elapsed_time"}  # fmt: skip
LOGS_PAGE = {"page", "limit", "total", "has_more", "data"}
LOG_ITEM = {"id", "workflow_run", "details", "created_from", "created_by_role",
            "created_by_account", "created_by_end_user", "created_at"}  # fmt: skip
UPLOAD = {"id", "name", "size", "extension", "mime_type", "created_by", "created_at",
          "preview_url", "source_url", "original_url", "user_id", "tenant_id",
          "conversation_id", "file_key"}  # fmt: skip
SCROLL = {"limit", "has_more", "data"}
MESSAGE = {"id", "conversation_id", "parent_message_id", "inputs", "query", "answer", "feedback",
           "retriever_resources", "created_at", "agent_thoughts", "message_files", "status",
           "error", "extra_contents"}  # fmt: skip
CONVERSATION = {"id", "name", "inputs", "status", "introduction", "created_at", "updated_at"}
VARIABLE = {"id", "name", "value_type", "value", "description", "created_at", "updated_at"}
PARAMETERS = {"opening_statement", "suggested_questions", "suggested_questions_after_answer",
              "speech_to_text", "text_to_speech", "retriever_resource", "annotation_reply",
              "more_like_this", "user_input_form", "sensitive_word_avoidance", "file_upload",
              "system_parameters"}  # fmt: skip
SYSTEM_PARAMETERS = {"image_file_size_limit", "video_file_size_limit", "audio_file_size_limit",
                     "file_size_limit", "workflow_file_upload_limit"}  # fmt: skip
INFO = {"name", "description", "tags", "mode", "author_name"}
SITE = {"title", "chat_color_theme", "chat_color_theme_inverted", "icon_type", "icon",
        "icon_background", "icon_url", "description", "copyright", "privacy_policy",
        "custom_disclaimer", "default_language", "show_workflow_steps",
        "use_icon_as_answer_icon"}  # fmt: skip
END_USER = {"id", "tenant_id", "app_id", "type", "external_user_id", "name", "is_anonymous",
            "session_id", "created_at", "updated_at"}  # fmt: skip
ERROR = {"code", "message", "status"}
WORKFLOW_STARTED = {"id", "workflow_id", "inputs", "created_at"}  # `reason` is newer: below
NODE_STARTED = {"id", "node_id", "node_type", "title", "index", "predecessor_node_id", "inputs",
                "created_at", "extras", "iteration_id", "loop_id"}  # fmt: skip
NODE_FINISHED = {"id", "node_id", "node_type", "title", "index", "predecessor_node_id", "inputs",
                 "process_data", "outputs", "status", "error", "elapsed_time",
                 "execution_metadata", "created_at", "finished_at", "files", "iteration_id",
                 "loop_id"}  # fmt: skip
WORKFLOW_FINISHED = {"id", "workflow_id", "status", "outputs", "error", "elapsed_time",
                     "total_tokens", "total_steps", "created_by", "created_at", "finished_at",
                     "exceptions_count", "files"}  # fmt: skip


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as server:
        yield server


@asynccontextmanager
async def tusk(conninfo: str, fake: FakeOpenAI) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    async with api_client(conninfo, openai_api_key=KEY, openai_api_base=fake.base_url) as client:
        yield client, await setup_and_login(client)


async def new_app(
    client: httpx.AsyncClient, token: str, mode: str, graph: dict[str, Any] | None = None
) -> str:
    made = await client.post(
        "/console/api/apps", json={"name": mode, "mode": mode}, headers=bearer(token)
    )
    base = f"/console/api/apps/{made.json()['id']}"
    if graph is None:
        config = {"model": GPT, "prompt_type": "simple", "pre_prompt": ""}
        assert await client.post(f"{base}/model-config", json=config, headers=bearer(token))
    else:
        await client.post(f"{base}/workflows/draft", json=graph, headers=bearer(token))
        await client.post(f"{base}/workflows/publish", json={}, headers=bearer(token))
    key: str = (await client.post(f"{base}/api-keys", headers=bearer(token))).json()["token"]
    return key


def events(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.startswith("event: ping\n\n")
    return [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data:")]


def keys(value: Any) -> set[str]:
    assert isinstance(value, dict), value
    return set(value)


CHAT_BODY = {"query": "hi", "inputs": {}, "user": "ann", "auto_generate_name": False}


async def test_chat_and_completion(fresh_database: str, fake: FakeOpenAI) -> None:
    async with tusk(fresh_database, fake) as (client, token):
        key = bearer(await new_app(client, token, "chat"))
        blocking = (await client.post("/v1/chat-messages", json=CHAT_BODY, headers=key)).json()
        assert keys(blocking) == CHAT_BLOCKING
        assert keys(blocking["metadata"]) == METADATA
        assert keys(blocking["metadata"]["usage"]) == USAGE

        stream = {**CHAT_BODY, "response_mode": "streaming"}
        chunks = events(await client.post("/v1/chat-messages", json=stream, headers=key))
        assert [c["event"] for c in chunks][-1] == "message_end"
        assert {c["event"] for c in chunks[:-1]} == {"message"}
        for chunk in chunks:  # §3.4: every chat chunk carries these
            assert {"event", "task_id", "conversation_id", "message_id", "created_at"} <= set(chunk)
        assert {"id", "answer"} <= set(chunks[0])
        assert set(chunks[-1]) >= MESSAGE_END
        assert keys(chunks[-1]["metadata"]["usage"]) == USAGE

        conversation = blocking["conversation_id"]
        query = {"user": "ann", "conversation_id": conversation}
        messages = (await client.get("/v1/messages", params=query, headers=key)).json()
        assert keys(messages) == SCROLL
        assert keys(messages["data"][0]) == MESSAGE
        listed = (await client.get("/v1/conversations", params={"user": "ann"}, headers=key)).json()
        assert keys(listed) == SCROLL
        assert keys(listed["data"][0]) == CONVERSATION
        renamed = await client.post(
            f"/v1/conversations/{conversation}/name", json={"name": "N", "user": "ann"}, headers=key
        )
        assert keys(renamed.json()) == CONVERSATION
        feedback = await client.post(
            f"/v1/messages/{blocking['message_id']}/feedbacks",
            json={"rating": "like", "user": "ann"},
            headers=key,
        )
        assert feedback.json() == {"result": "success"}
        assert keys((await client.get("/v1/app/feedbacks", headers=key)).json()) >= {"data"}
        stop = await client.post(
            f"/v1/chat-messages/{blocking['task_id']}/stop", json={"user": "ann"}, headers=key
        )
        assert stop.json() == {"result": "success"}
        deleted = await client.request(
            "DELETE", f"/v1/conversations/{conversation}", json={"user": "ann"}, headers=key
        )
        assert (deleted.status_code, deleted.content) == (204, b"")

        done = bearer(await new_app(client, token, "completion"))
        body = {"inputs": {}, "user": "ann"}
        completed = (await client.post("/v1/completion-messages", json=body, headers=done)).json()
        assert keys(completed) == COMPLETION_BLOCKING
        body["response_mode"] = "streaming"
        chunks = events(await client.post("/v1/completion-messages", json=body, headers=done))
        assert [c["event"] for c in chunks][-1] == "message_end"
        for chunk in chunks:
            assert {"event", "task_id", "message_id", "created_at"} <= set(chunk)
            assert "conversation_id" not in chunk


def chatflow() -> dict[str, Any]:
    nodes = [
        node("start", "start", variables=[]),
        node("llm", "llm", model=GPT,
             prompt_template=[{"role": "user", "text": "{{#sys.query#}}"}]),
        node("answer", "answer", answer="{{#llm.text#}}"),
    ]  # fmt: skip
    variables = [{"id": "v1", "name": "turns", "value_type": "number", "value": 0}]
    graph = {"nodes": nodes, "edges": chain("start", "llm", "answer")}
    return {"graph": graph, "features": {}, "conversation_variables": variables}


async def test_chatflow_stream(fresh_database: str, fake: FakeOpenAI) -> None:
    async with tusk(fresh_database, fake) as (client, token):
        key = bearer(await new_app(client, token, "advanced-chat", chatflow()))
        stream = {**CHAT_BODY, "response_mode": "streaming"}
        chunks = events(await client.post("/v1/chat-messages", json=stream, headers=key))
        names = [c["event"] for c in chunks]
        assert names[0] == "workflow_started"
        assert names[-2:] == ["message_end", "workflow_finished"]
        assert set(names[1:-2]) == {"node_started", "node_finished", "message"}
        for chunk in chunks:
            assert {"event", "task_id", "conversation_id", "message_id", "created_at"} <= set(chunk)
        by_name = {c["event"]: c for c in chunks}
        assert set(by_name["workflow_started"]["data"]) >= WORKFLOW_STARTED
        assert set(by_name["node_started"]["data"]) >= NODE_STARTED
        assert set(by_name["node_finished"]["data"]) >= NODE_FINISHED
        assert set(by_name["workflow_finished"]["data"]) >= WORKFLOW_FINISHED
        assert "workflow_run_id" in by_name["workflow_finished"]

        conversation = chunks[0]["conversation_id"]
        found = await client.get(
            f"/v1/conversations/{conversation}/variables", params={"user": "ann"}, headers=key
        )
        assert keys(found.json()) == SCROLL
        assert keys(found.json()["data"][0]) == VARIABLE


def echo_workflow() -> dict[str, Any]:
    form = [{"variable": "q", "label": "Q", "type": "text-input", "required": True}]
    nodes = [
        node("start", "start", variables=form),
        node("end", "end", outputs=[{"variable": "echo", "value_selector": ["start", "q"]}]),
    ]
    return {"graph": {"nodes": nodes, "edges": chain("start", "end")}, "features": {}}


async def test_workflow_run(fresh_database: str, fake: FakeOpenAI) -> None:
    async with tusk(fresh_database, fake) as (client, token):
        key = bearer(await new_app(client, token, "workflow", echo_workflow()))
        body = {"inputs": {"q": "x"}, "user": "ann"}
        ran = (await client.post("/v1/workflows/run", json=body, headers=key)).json()
        assert keys(ran) == WORKFLOW_BLOCKING
        assert keys(ran["data"]) >= RUN_SUMMARY  # and two more: see the test below
        detail = await client.get(f"/v1/workflows/run/{ran['workflow_run_id']}", headers=key)
        assert keys(detail.json()) == RUN_DETAIL

        chunks = events(
            await client.post(
                "/v1/workflows/run", json={**body, "response_mode": "streaming"}, headers=key
            )
        )
        names = [c["event"] for c in chunks if c["event"] != "text_chunk"]  # the End node's
        assert names == ["workflow_started", "node_started", "node_finished", "node_started",
                         "node_finished", "workflow_finished"]  # fmt: skip
        for chunk in chunks:
            assert {"event", "task_id", "workflow_run_id", "data"} <= set(chunk)
        assert set(chunks[-1]["data"]) >= WORKFLOW_FINISHED
        stop = await client.post(
            f"/v1/workflows/tasks/{ran['task_id']}/stop", json={"user": "ann"}, headers=key
        )
        assert stop.json() == {"result": "success"}

        logs = (await client.get("/v1/workflows/logs", headers=key)).json()
        assert keys(logs) == LOGS_PAGE
        assert keys(logs["data"][0]) == LOG_ITEM
        assert chunks[0]["data"]["reason"] == "initial"


async def test_blocking_run_summary_has_only_difys_keys(
    fresh_database: str, fake: FakeOpenAI
) -> None:
    async with tusk(fresh_database, fake) as (client, token):
        key = bearer(await new_app(client, token, "workflow", echo_workflow()))
        body = {"inputs": {"q": "x"}, "user": "a"}
        ran = (await client.post("/v1/workflows/run", json=body, headers=key)).json()
        assert keys(ran["data"]) == RUN_SUMMARY


async def test_workflow_finished_names_its_creator(fresh_database: str, fake: FakeOpenAI) -> None:
    async with tusk(fresh_database, fake) as (client, token):
        key = bearer(await new_app(client, token, "workflow", echo_workflow()))
        body = {"inputs": {"q": "x"}, "user": "a", "response_mode": "streaming"}
        chunks = events(await client.post("/v1/workflows/run", json=body, headers=key))
        assert chunks[-1]["data"]["created_by"] == {"id": chunks[-1]["data"]["created_by"]["id"],
                                                    "user": "a"}  # fmt: skip


async def test_metadata_files_and_errors(fresh_database: str, fake: FakeOpenAI) -> None:
    async with tusk(fresh_database, fake) as (client, token):
        key = bearer(await new_app(client, token, "chat"))
        welcome = (await client.get("/v1/", headers=key)).json()
        assert keys(welcome) == {"welcome", "api_version", "server_version"}
        parameters = (await client.get("/v1/parameters", headers=key)).json()
        assert keys(parameters) == PARAMETERS
        assert keys(parameters["system_parameters"]) == SYSTEM_PARAMETERS
        assert keys((await client.get("/v1/meta", headers=key)).json()) == {"tool_icons"}
        assert keys((await client.get("/v1/info", headers=key)).json()) == INFO
        assert keys((await client.get("/v1/site", headers=key)).json()) == SITE

        files = {"file": ("a.txt", b"hello", "text/plain")}
        uploaded = await client.post("/v1/files/upload", files=files, data={"user": "ann"},
                                     headers=key)  # fmt: skip
        assert uploaded.status_code == 201
        assert keys(uploaded.json()) == UPLOAD

        await client.post("/v1/chat-messages", json=CHAT_BODY, headers=key)
        async with engine_scope(fresh_database) as engine, engine.connect() as conn:
            user_id = (await conn.execute(text("SELECT id FROM end_users LIMIT 1"))).scalar_one()
        end_user = await client.get(f"/v1/end-users/{user_id}", headers=key)
        assert keys(end_user.json()) == END_USER

        missing = await client.get("/v1/parameters")
        assert keys(missing.json()) == ERROR
        assert missing.headers["www-authenticate"] == 'Bearer realm="api"'
        no_user = await client.post("/v1/chat-messages", json={"query": "x"}, headers=key)
        assert no_user.json() == {"code": "invalid_param", "message": "Arg user must be provided.",
                                  "params": "user", "status": 400}  # fmt: skip
