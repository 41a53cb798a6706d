"""Files sent with chat, completion, agent-chat and chatflow messages, over the Service API with
FakeOpenAI: images reach the model as image parts, documents as text after the query, the file
mappings are checked against the app's `file_upload` settings, the files are kept as message
files (GET /v1/messages, `message_end`), and another workspace's upload is refused. Also: an
agent-chat turn stopped from a second API process."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.integration.test_agent_chat import TIME_TOOL
from tests.integration.test_agent_chat import config as agent_config
from tests.integration.test_api_chat_apps import api_app, stream_events
from tests.support.api import add_member, api_client, assert_error, bearer, login
from tests.support.api import setup_and_login as login_admin
from tests.support.workflow import chain, node
from tusk.apps.message_files import MAX_DOCUMENT_CHARS, FileRules, documents_block, file_rules
from tusk.db.engine import engine_scope
from tusk.testing.llm_server import ToolCall
from tusk.testing.openai_server import FakeOpenAI

KEY = "sk-chat-files"
GPT = {"provider": "langgenius/openai/openai", "name": "gpt-4o-mini", "mode": "chat"}
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)
REMOTE_IMAGE = "https://images.example.com/cat.jpg"
FILE_KEYS = {"id", "filename", "type", "url", "mime_type", "size", "transfer_method",
             "belongs_to", "upload_file_id"}  # fmt: skip
ALL_FILES = {
    "enabled": True,
    "allowed_file_types": ["image", "document"],
    "allowed_file_extensions": [],
    "allowed_file_upload_methods": ["local_file", "remote_url"],
    "number_limits": 3,
    "image": {"detail": "low"},
}


@pytest.fixture(scope="module")
def openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as fake:
        yield fake


def env(openai: FakeOpenAI) -> dict[str, Any]:
    return {"openai_api_key": KEY, "openai_api_base": openai.base_url}


def document(**fields: Any) -> dict[str, Any]:
    return {"model": GPT, "prompt_type": "simple", "pre_prompt": "Be kind.", **fields}


async def configured_app(
    client: httpx.AsyncClient, token: str, mode: str, config: dict[str, Any]
) -> str:
    made = await client.post(
        "/console/api/apps", json={"name": mode, "mode": mode}, headers=bearer(token)
    )
    app_id = made.json()["id"]
    saved = await client.post(
        f"/console/api/apps/{app_id}/model-config", json=config, headers=bearer(token)
    )
    assert saved.json() == {"result": "success"}, saved.text
    key = await client.post(f"/console/api/apps/{app_id}/api-keys", headers=bearer(token))
    return str(key.json()["token"])


async def upload(client: httpx.AsyncClient, key: str, name: str, data: bytes, mime: str) -> str:
    sent = await client.post(
        "/v1/files/upload",
        files={"file": (name, data, mime)},
        data={"user": "ann"},
        headers=bearer(key),
    )
    assert sent.status_code == 201, sent.text
    return str(sent.json()["id"])


def local(file_id: str, kind: str = "image") -> dict[str, str]:
    return {"type": kind, "transfer_method": "local_file", "upload_file_id": file_id}


def remote(url: str, kind: str = "image") -> dict[str, str]:
    return {"type": kind, "transfer_method": "remote_url", "url": url}


def events(body: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]


async def rows(conninfo: str, sql: str) -> list[tuple[Any, ...]]:
    async with engine_scope(conninfo) as engine, engine.connect() as conn:
        return [tuple(row) for row in (await conn.execute(text(sql))).all()]


async def history(client: httpx.AsyncClient, key: str, conversation_id: str) -> list[Any]:
    listed = await client.get(
        "/v1/messages",
        params={"conversation_id": conversation_id, "user": "ann"},
        headers=bearer(key),
    )
    assert listed.status_code == 200, listed.text
    return list(listed.json()["data"])


# --- chat and completion -------------------------------------------------------------------------


async def test_images_reach_the_model_and_are_kept(fresh_database: str, openai: FakeOpenAI) -> None:
    openai.clear()
    async with api_client(fresh_database, **env(openai)) as client:
        token = await login_admin(client)
        key = await configured_app(client, token, "chat", document(file_upload=ALL_FILES))
        png_id = await upload(client, key, "dot.png", PNG, "image/png")
        openai.reply("A dot and a cat.")
        sent = await client.post(
            "/v1/chat-messages",
            json={"query": "What is here?", "user": "ann", "response_mode": "streaming",
                  "auto_generate_name": False, "files": [local(png_id), remote(REMOTE_IMAGE)]},
            headers=bearer(key),
        )  # fmt: skip
        assert sent.status_code == 200, sent.text
        chunks = events(sent.text)
        assert chunks[-1]["event"] == "message_end", chunks[-1]

        # The images are parts of the user's message, with the configured detail.
        question = openai.requests[-1].json["messages"][-1]
        assert question["role"] == "user"
        data_uri = f"data:image/png;base64,{base64.b64encode(PNG).decode()}"
        assert question["content"] == [
            {"type": "text", "text": "What is here?"},
            {"type": "image_url", "image_url": {"url": data_uri, "detail": "low"}},
            {"type": "image_url", "image_url": {"url": REMOTE_IMAGE, "detail": "low"}},
        ]

        ended = chunks[-1]["files"]
        assert [(f["filename"], f["transfer_method"], f["belongs_to"]) for f in ended] == [
            ("dot.png", "local_file", "user"),
            ("cat.jpg", "remote_url", "user"),
        ]
        [shown] = await history(client, key, chunks[-1]["conversation_id"])
        files = shown["message_files"]
        assert files == ended
        assert all(set(f) == FILE_KEYS for f in files)
        assert files[0]["upload_file_id"] == png_id
        assert (files[0]["mime_type"], files[0]["size"]) == ("image/png", len(PNG))
        assert (files[1]["url"], files[1]["upload_file_id"]) == (REMOTE_IMAGE, None)
        preview = await client.get(files[0]["url"], headers=bearer(key))
        assert preview.content == PNG

        # A later turn without files keeps its own list empty.
        openai.reply("Nothing new.")
        later = await client.post(
            "/v1/chat-messages",
            json={"query": "And now?", "user": "ann",
                  "conversation_id": chunks[-1]["conversation_id"]},
            headers=bearer(key),
        )  # fmt: skip
        assert later.status_code == 200, later.text
        turns = await history(client, key, chunks[-1]["conversation_id"])
        assert [len(t["message_files"]) for t in turns] == [2, 0]
    stored = await rows(
        fresh_database,
        "SELECT type, transfer_method, belongs_to, created_by_role FROM message_files "
        "ORDER BY created_at, id",
    )
    assert sorted(stored) == [("image", "local_file", "user", "end_user"),
                              ("image", "remote_url", "user", "end_user")]  # fmt: skip


async def test_documents_are_read_into_the_query(fresh_database: str, openai: FakeOpenAI) -> None:
    openai.clear()
    async with api_client(fresh_database, **env(openai)) as client:
        token = await login_admin(client)
        config = document(pre_prompt="Summarise.", file_upload=ALL_FILES)
        key = await configured_app(client, token, "completion", config)
        notes = await upload(client, key, "notes.txt", b"Ship on Friday.\n", "text/plain")
        openai.reply("Friday.")
        sent = await client.post(
            "/v1/completion-messages",
            json={"inputs": {}, "query": "When?", "user": "ann",
                  "files": [local(notes, "document")]},
            headers=bearer(key),
        )  # fmt: skip
        assert sent.status_code == 200, sent.text
        assert sent.json()["answer"] == "Friday."
        question = openai.requests[-1].json["messages"][-1]["content"]
        assert question == 'When?\n\n<document name="notes.txt">\nShip on Friday.\n</document>'
    stored = await rows(fresh_database, "SELECT type, upload_file_id::text FROM message_files")
    assert stored == [("document", notes)]


async def test_file_mappings_are_checked(fresh_database: str, openai: FakeOpenAI) -> None:
    openai.clear()
    only_images = {"image": {"enabled": True, "number_limits": 1, "detail": "high",
                             "transfer_methods": ["local_file"]}}  # fmt: skip
    async with api_client(fresh_database, **env(openai)) as client:
        token = await login_admin(client)
        key = await configured_app(client, token, "chat", document(file_upload=only_images))
        bare = await configured_app(client, token, "chat", document())
        png_id = await upload(client, key, "dot.png", PNG, "image/png")
        txt_id = await upload(client, key, "notes.txt", b"text", "text/plain")
        # Another workspace's upload is not found from this app.
        email, password = await add_member(fresh_database, "other@example.com")
        other_token = await login(client, email, password)
        theirs = await client.post(
            "/console/api/files/upload",
            files={"file": ("theirs.png", PNG, "image/png")},
            headers=bearer(other_token),
        )
        their_id = theirs.json()["id"]

        async def refused(files: Any, app_key: str = key) -> str:
            response = await client.post(
                "/v1/chat-messages",
                json={"query": "look", "user": "ann", "files": files},
                headers=bearer(app_key),
            )
            return str(assert_error(response, 400, "invalid_param")["message"])

        assert "type must be one of" in await refused([{"type": "pdf", "upload_file_id": png_id}])
        assert "at most 1 image" in await refused([local(png_id), local(png_id)])
        assert "remote_url are not accepted" in await refused([remote(REMOTE_IMAGE)])
        assert "document files are not accepted" in await refused([local(txt_id, "document")])
        assert "'notes.txt' is a document file" in await refused([local(txt_id)])
        assert "does not exist" in await refused([local(their_id)])
        assert "upload_file_id" in await refused([local("not-an-id")])
        assert "does not accept files" in await refused([local(png_id)], bare)
        # A mistake is named before anything is stored.
        assert await rows(fresh_database, "SELECT count(*) FROM messages") == [(0,)]

        openai.reply("A dot.")
        accepted = await client.post(
            "/v1/chat-messages",
            json={"query": "look", "user": "ann", "files": [local(png_id)]},
            headers=bearer(key),
        )
        assert accepted.status_code == 200, accepted.text
        image = openai.requests[-1].json["messages"][-1]["content"][1]
        assert image["image_url"]["detail"] == "high"


# --- agent-chat and chatflow ---------------------------------------------------------------------


async def test_an_agent_turn_sees_the_image(fresh_database: str, openai: FakeOpenAI) -> None:
    openai.clear()
    async with api_client(fresh_database, **env(openai)) as client:
        token = await login_admin(client)
        config = {**agent_config(TIME_TOOL), "file_upload": ALL_FILES}
        key = await configured_app(client, token, "agent-chat", config)
        openai.reply("A dot.")
        sent = await client.post(
            "/v1/chat-messages",
            json={"query": "What is it?", "user": "ann", "response_mode": "streaming",
                  "auto_generate_name": False, "files": [remote(REMOTE_IMAGE)]},
            headers=bearer(key),
        )  # fmt: skip
        chunks = events(sent.text)
        assert chunks[-1]["event"] == "message_end", chunks[-1]
        assert [f["url"] for f in chunks[-1]["files"]] == [REMOTE_IMAGE]
        question = openai.requests[-1].json["messages"][-1]["content"]
        assert question[-1] == {
            "type": "image_url",
            "image_url": {"url": REMOTE_IMAGE, "detail": "low"},
        }
        [shown] = await history(client, key, chunks[-1]["conversation_id"])
        assert [f["url"] for f in shown["message_files"]] == [REMOTE_IMAGE]


IMAGES_ONLY = {
    "file_upload": {
        "enabled": True,
        "allowed_file_types": ["image"],
        "allowed_file_upload_methods": ["local_file", "remote_url"],
        "number_limits": 3,
    }
}


def echo_chatflow(features: dict[str, Any] | None = None) -> dict[str, Any]:
    nodes = [
        node("start", "start", variables=[]),
        node("answer", "answer", answer="Got {{#sys.query#}}"),
    ]
    graph = {"nodes": nodes, "edges": chain("start", "answer")}
    return {"graph": graph, "features": features or IMAGES_ONLY, "conversation_variables": []}


async def published_echo_chatflow(
    client: httpx.AsyncClient, token: str, features: dict[str, Any] | None = None
) -> str:
    made = await client.post(
        "/console/api/apps", json={"name": "Flow", "mode": "advanced-chat"}, headers=bearer(token)
    )
    base = f"/console/api/apps/{made.json()['id']}"
    draft = echo_chatflow(features)
    await client.post(f"{base}/workflows/draft", json=draft, headers=bearer(token))
    published = await client.post(f"{base}/workflows/publish", json={}, headers=bearer(token))
    assert published.status_code == 200, published.text
    token_: str = (await client.post(f"{base}/api-keys", headers=bearer(token))).json()["token"]
    return token_


async def test_chatflow_files_are_kept_as_message_files(
    fresh_database: str, openai: FakeOpenAI
) -> None:
    async with api_client(fresh_database, **env(openai)) as client:
        key = await published_echo_chatflow(client, await login_admin(client))
        png_id = await upload(client, key, "dot.png", PNG, "image/png")
        sent = await client.post(
            "/v1/chat-messages",
            json={"query": "hi", "user": "ann", "inputs": {},
                  "files": [local(png_id), remote(REMOTE_IMAGE)]},
            headers=bearer(key),
        )  # fmt: skip
        assert sent.status_code == 200, sent.text
        assert sent.json()["answer"] == "Got hi"
        [shown] = await history(client, key, sent.json()["conversation_id"])
        assert [(f["filename"], f["upload_file_id"]) for f in shown["message_files"]] == [
            ("dot.png", png_id),
            ("cat.jpg", None),
        ]


async def test_chatflow_files_are_checked_against_the_workflows_features(
    fresh_database: str, openai: FakeOpenAI
) -> None:
    async with api_client(fresh_database, **env(openai)) as client:
        token = await login_admin(client)
        images = await published_echo_chatflow(client, token)
        text_id = await upload(client, images, "notes.txt", b"some notes", "text/plain")
        body = {"query": "hi", "user": "ann", "inputs": {},
                "files": [{"type": "document", "transfer_method": "local_file",
                           "upload_file_id": text_id}]}  # fmt: skip
        refused = await client.post("/v1/chat-messages", json=body, headers=bearer(images))
        assert (
            "document files are not accepted"
            in assert_error(refused, 400, "invalid_param")["message"]
        )
        too_many = {**body, "files": [remote(REMOTE_IMAGE)] * 4}
        refused = await client.post("/v1/chat-messages", json=too_many, headers=bearer(images))
        assert "at most 3" in assert_error(refused, 400, "invalid_param")["message"]
        closed = await published_echo_chatflow(client, token, {"file_upload": {"enabled": False}})
        refused = await client.post("/v1/chat-messages", json=body, headers=bearer(closed))
        assert "does not accept files" in assert_error(refused, 400, "invalid_param")["message"]
    assert await rows(fresh_database, "SELECT count(*) FROM messages") == [(0,)]


# --- stop ----------------------------------------------------------------------------------------

SLOW = [f"word{i} " for i in range(20)]


async def test_an_agent_turn_stopped_from_another_api_process(
    fresh_database: str, openai: FakeOpenAI
) -> None:
    openai.clear()
    async with (
        api_app(fresh_database, **env(openai)) as one,
        api_client(fresh_database, **env(openai)) as other,
    ):
        token = await login_admin(other)
        key = await configured_app(other, token, "agent-chat", agent_config(TIME_TOOL))
        openai.reply_tool_calls([ToolCall("current_time", {"timezone": "UTC"})])
        openai.reply("".join(SLOW), chunks=SLOW, delay=0.2)
        body = {"query": "Which year?", "user": "u", "response_mode": "streaming",
                "auto_generate_name": False}  # fmt: skip
        received: list[dict[str, Any]] = []
        stopped_at: float | None = None
        async for chunk in stream_events(one, "/v1/chat-messages", body, key):
            received.append(chunk)
            if chunk["event"] == "agent_message" and stopped_at is None:
                stopped_at = time.monotonic()
                stop = await other.post(
                    f"/v1/chat-messages/{chunk['task_id']}/stop", json={"user": "u"},
                    headers=bearer(key),
                )  # fmt: skip
                assert stop.json() == {"result": "success"}
        assert stopped_at is not None
        assert time.monotonic() - stopped_at < 2
    assert received[-1]["event"] == "message_end"
    answer = "".join(c["answer"] for c in received if c["event"] == "agent_message")
    assert answer.startswith("word0")
    assert answer != "".join(SLOW)
    stored = await rows(fresh_database, "SELECT answer, status, agent_based FROM messages")
    assert stored == [(answer, "stopped", True)]
    thoughts = await rows(
        fresh_database,
        "SELECT position, tool, observation FROM message_agent_thoughts ORDER BY position",
    )
    assert thoughts[0][:2] == (1, "current_time")
    assert json.loads(thoughts[0][2])["current_time"]


# --- settings and document text (pure) -----------------------------------------------------------


def test_file_upload_settings_old_and_new() -> None:
    assert file_rules({}) is None
    assert file_rules({"file_upload": {"enabled": False, "image": {"enabled": False}}}) is None
    old = {"image": {"enabled": True, "number_limits": 2, "detail": "low",
                     "transfer_methods": ["remote_url"]}}  # fmt: skip
    assert file_rules({"file_upload": old}) == FileRules(
        allowed_file_types=("image",),
        allowed_file_upload_methods=("remote_url",),
        number_limits=2,
        image_number_limits=2,
        image_transfer_methods=("remote_url",),
        detail="low",
    )
    new = {"enabled": True, "allowed_file_types": ["custom"], "allowed_file_extensions": [".MD"],
           "allowed_file_upload_methods": ["local_file"], "number_limits": 5}  # fmt: skip
    rules = file_rules({"file_upload": new})
    assert rules is not None
    assert (rules.allowed_file_extensions, rules.number_limits, rules.detail) == (
        frozenset({"md"}), 5, "high",
    )  # fmt: skip


def test_document_text_is_cut_at_the_limit() -> None:
    long = "x" * (MAX_DOCUMENT_CHARS + 10)
    block = documents_block([("a.txt", " short \n"), ("b.txt", long), ("c.txt", "never")])
    assert block.startswith('<document name="a.txt">\nshort\n</document>\n\n')
    assert block.endswith("x\n[...]\n</document>")
    assert "c.txt" not in block
    kept = block.split('<document name="b.txt">\n')[1].split("\n[...]")[0]
    assert kept == "x" * (MAX_DOCUMENT_CHARS - len("short"))
