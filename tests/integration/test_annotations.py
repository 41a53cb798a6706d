"""Annotation reply over HTTP: stored question/answer pairs matched with the local embedding model
before a chat app calls its model (FakeOpenAI), the threshold, hits recorded, Dify's Service API
and console endpoints with their shapes and paging, and isolation between apps and workspaces."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.support.api import add_member, api_client, assert_error, bearer, login
from tests.support.api import setup_and_login as login_admin
from tusk.db.engine import engine_scope
from tusk.testing.openai_server import FakeOpenAI

KEY = "sk-annotations"
GPT = {"provider": "openai", "name": "gpt-4o-mini", "mode": "chat", "completion_params": {}}
LOCAL = {"embedding_provider_name": "local", "embedding_model_name": "all-MiniLM-L6-v2"}
RESET = ("How do I reset my password?", "Use the 'Forgot password' link on the sign-in page.")
HOURS = ("When is the support desk open?", "Monday to Friday, 9:00 to 17:00.")
ANNOTATION_KEYS = {"id", "question", "answer", "hit_count", "created_at"}
PAGE_KEYS = {"data", "has_more", "limit", "total", "page"}


@pytest.fixture(scope="module")
def openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as fake:
        yield fake


def env(openai: FakeOpenAI) -> dict[str, Any]:
    return {"openai_api_key": KEY, "openai_api_base": openai.base_url}


async def chat_app(client: httpx.AsyncClient, token: str, name: str = "chat") -> tuple[str, str]:
    """A chat app with a model config, and an `app-` key for it."""
    made = await client.post(
        "/console/api/apps", json={"name": name, "mode": "chat"}, headers=bearer(token)
    )
    app_id = made.json()["id"]
    config = {"model": GPT, "prompt_type": "simple", "pre_prompt": ""}
    saved = await client.post(
        f"/console/api/apps/{app_id}/model-config", json=config, headers=bearer(token)
    )
    assert saved.status_code == 200, saved.text
    key = await client.post(f"/console/api/apps/{app_id}/api-keys", headers=bearer(token))
    return app_id, key.json()["token"]


async def annotate(client: httpx.AsyncClient, key: str, pair: tuple[str, str]) -> dict[str, Any]:
    made = await client.post(
        "/v1/apps/annotations",
        json={"question": pair[0], "answer": pair[1]},
        headers=bearer(key),
    )
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    return body


async def switch(
    client: httpx.AsyncClient, key: str, action: str, threshold: float = 0.9
) -> dict[str, Any]:
    done = await client.post(
        f"/v1/apps/annotation-reply/{action}",
        json={"score_threshold": threshold, **LOCAL},
        headers=bearer(key),
    )
    assert done.status_code == 200, done.text
    body: dict[str, Any] = done.json()
    assert set(body) == {"job_id", "job_status"}
    status = await client.get(
        f"/v1/apps/annotation-reply/{action}/status/{body['job_id']}", headers=bearer(key)
    )
    assert status.json() == {"job_id": body["job_id"], "job_status": "completed", "error_msg": ""}
    return body


async def ask(client: httpx.AsyncClient, key: str, query: str, **extra: Any) -> httpx.Response:
    body = {"query": query, "user": "ann", "auto_generate_name": False, "inputs": {}, **extra}
    return await client.post("/v1/chat-messages", json=body, headers=bearer(key))


def events(body: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]


async def rows(conninfo: str, sql: str) -> list[tuple[Any, ...]]:
    async with engine_scope(conninfo) as engine, engine.connect() as conn:
        return [tuple(row) for row in (await conn.execute(text(sql))).all()]


async def test_a_matching_query_is_answered_by_its_annotation(
    fresh_database: str, openai: FakeOpenAI
) -> None:
    async with api_client(fresh_database, **env(openai)) as client:
        token = await login_admin(client)
        app_id, key = await chat_app(client, token)
        reset = await annotate(client, key, RESET)  # written before the reply is on
        assert set(reset) == ANNOTATION_KEYS
        assert (reset["question"], reset["answer"], reset["hit_count"]) == (*RESET, 0)
        await switch(client, key, "enable")
        hours = await annotate(client, key, HOURS)  # written while it is on

        openai.clear()
        blocking = await ask(client, key, RESET[0])
        assert blocking.status_code == 200, blocking.text
        body = blocking.json()
        assert body["answer"] == RESET[1]
        admin = await client.get("/console/api/account/profile", headers=bearer(token))
        account = {"id": admin.json()["id"], "name": "Admin"}
        assert body["metadata"]["annotation_reply"] == {"id": reset["id"], "account": account}
        assert body["metadata"]["usage"]["total_tokens"] == 0
        assert openai.requests == []

        streamed = await ask(
            client, key, "when is the support desk open", response_mode="streaming"
        )
        chunks = events(streamed.text)
        assert [c["event"] for c in chunks] == ["message", "message_end"]
        assert chunks[0]["answer"] == HOURS[1]
        assert chunks[-1]["metadata"]["annotation_reply"]["id"] == hours["id"]
        assert openai.requests == []

        openai.reply("Mars is cold.")
        other = (await ask(client, key, "What is the weather like on Mars?")).json()
        assert other["answer"] == "Mars is cold."
        assert "annotation_reply" not in other["metadata"]
        assert len(openai.requests) == 1

        listed = await client.get("/v1/apps/annotations", headers=bearer(key))
        counts = {a["id"]: a["hit_count"] for a in listed.json()["data"]}
        assert counts == {reset["id"]: 1, hours["id"]: 1}
        hits = await client.get(
            f"/console/api/apps/{app_id}/annotations/{hours['id']}/hit-histories",
            headers=bearer(token),
        )
        page = hits.json()
        assert set(page) == PAGE_KEYS
        (hit,) = page["data"]
        assert set(hit) == {"id", "source", "score", "question", "created_at", "match", "response"}
        assert (hit["source"], hit["question"]) == ("api", "when is the support desk open")
        assert (hit["match"], hit["response"]) == HOURS
        assert 0.9 <= hit["score"] <= 1.0001
    stored = await rows(
        fresh_database,
        "SELECT m.answer, m.message_metadata->'annotation_reply'->>'id', h.message_id = m.id "
        "FROM messages m JOIN app_annotation_hit_histories h ON h.message_id = m.id "
        "ORDER BY m.created_at",
    )
    assert stored == [(RESET[1], reset["id"], True), (HOURS[1], hours["id"], True)]


async def test_the_threshold_decides_and_disable_stops_the_reply(
    fresh_database: str, openai: FakeOpenAI
) -> None:
    paraphrase = "how can I change my forgotten password"
    async with api_client(fresh_database, **env(openai)) as client:
        token = await login_admin(client)
        app_id, key = await chat_app(client, token)
        reset = await annotate(client, key, RESET)
        await switch(client, key, "enable", threshold=0.3)
        openai.clear()
        assert (await ask(client, key, paraphrase)).json()["answer"] == RESET[1]
        hits = await client.get(
            f"/console/api/apps/{app_id}/annotations/{reset['id']}/hit-histories",
            headers=bearer(token),
        )
        score = hits.json()["data"][0]["score"]
        assert 0.3 <= score < 0.99

        # Just above the paraphrase's score: it goes to the model, the question itself does not.
        await switch(client, key, "enable", threshold=min(score + 0.02, 0.99))
        openai.reply("From the model.")
        assert (await ask(client, key, paraphrase)).json()["answer"] == "From the model."
        assert (await ask(client, key, RESET[0])).json()["answer"] == RESET[1]
        assert len(openai.requests) == 1

        setting = await client.get(
            f"/console/api/apps/{app_id}/annotation-setting", headers=bearer(token)
        )
        shown = setting.json()
        assert shown["enabled"] is True
        assert shown["score_threshold"] == pytest.approx(min(score + 0.02, 0.99))
        assert shown["embedding_model"] == LOCAL
        lowered = await client.post(
            f"/console/api/apps/{app_id}/annotation-settings/{shown['id']}",
            json={"score_threshold": 0.3},
            headers=bearer(token),
        )
        assert lowered.json()["score_threshold"] == 0.3
        assert (await ask(client, key, paraphrase)).json()["answer"] == RESET[1]

        await switch(client, key, "disable")
        openai.reply("Model again.")
        assert (await ask(client, key, RESET[0])).json()["answer"] == "Model again."
        assert len(openai.requests) == 2
        setting = await client.get(
            f"/console/api/apps/{app_id}/annotation-setting", headers=bearer(token)
        )
        assert setting.json() == {"enabled": False}


async def test_annotation_endpoints_shapes_paging_and_errors(
    fresh_database: str, openai: FakeOpenAI
) -> None:
    async with api_client(fresh_database, **env(openai)) as client:
        token = await login_admin(client)
        app_id, key = await chat_app(client, token)
        made = [await annotate(client, key, (f"question {i}", f"answer {i}")) for i in range(25)]

        first = (await client.get("/v1/apps/annotations?limit=10", headers=bearer(key))).json()
        assert set(first) == PAGE_KEYS
        assert (first["page"], first["limit"], first["total"], first["has_more"]) == (
            1,
            10,
            25,
            True,
        )
        assert [a["id"] for a in first["data"]] == [a["id"] for a in reversed(made)][:10]
        last = await client.get("/v1/apps/annotations?page=3&limit=10", headers=bearer(key))
        assert (len(last.json()["data"]), last.json()["has_more"]) == (5, False)
        found = await client.get("/v1/apps/annotations?keyword=answer 7", headers=bearer(key))
        assert [a["question"] for a in found.json()["data"]] == ["question 7"]

        target = made[3]["id"]
        changed = await client.put(
            f"/v1/apps/annotations/{target}",
            json={"question": "new question", "answer": "new answer"},
            headers=bearer(key),
        )
        assert changed.status_code == 200, changed.text
        assert changed.json() == {**made[3], "question": "new question", "answer": "new answer"}
        gone = await client.delete(f"/v1/apps/annotations/{target}", headers=bearer(key))
        assert (gone.status_code, gone.content) == (204, b"")
        again = await client.put(
            f"/v1/apps/annotations/{target}", json={"question": "q", "answer": "a"},
            headers=bearer(key),
        )  # fmt: skip
        assert_error(again, 404, "not_found")
        listed = await client.get("/v1/apps/annotations", headers=bearer(key))
        assert listed.json()["total"] == 24

        empty = await client.post(
            "/v1/apps/annotations", json={"question": " ", "answer": "a"}, headers=bearer(key)
        )
        assert assert_error(empty, 400, "invalid_param")["params"] == "question"
        missing = await client.post(
            "/v1/apps/annotation-reply/enable",
            json={"score_threshold": 0.8, "embedding_provider_name": "local"},
            headers=bearer(key),
        )
        assert assert_error(missing, 400, "invalid_param")["params"] == "embedding_model_name"
        unknown = await client.post(
            "/v1/apps/annotation-reply/enable",
            json={"score_threshold": 0.8, "embedding_provider_name": "nowhere",
                  "embedding_model_name": "x"},
            headers=bearer(key),
        )  # fmt: skip
        assert unknown.status_code == 400
        wrong = await client.post("/v1/apps/annotation-reply/toggle", json={}, headers=bearer(key))
        assert_error(wrong, 400, "invalid_param")
        no_job = await client.get(
            "/v1/apps/annotation-reply/enable/status/00000000-0000-0000-0000-000000000000",
            headers=bearer(key),
        )
        assert_error(no_job, 404, "not_found")

        # The console: the same annotations, exported, written, and deleted in bulk.
        console = f"/console/api/apps/{app_id}/annotations"
        exported = await client.get(f"{console}/export", headers=bearer(token))
        assert len(exported.json()["data"]) == 24
        written = await client.post(
            console, json={"question": "console q", "answer": "console a"}, headers=bearer(token)
        )
        assert set(written.json()) == ANNOTATION_KEYS
        edited = await client.post(
            f"{console}/{written.json()['id']}",
            json={"question": "console q", "answer": "console b"},
            headers=bearer(token),
        )
        assert edited.json()["answer"] == "console b"
        two = [made[0]["id"], made[1]["id"]]
        bulk = await client.delete(
            f"{console}?annotation_id={two[0]}&annotation_id={two[1]}", headers=bearer(token)
        )
        assert bulk.status_code == 204
        assert (await client.get(console, headers=bearer(token))).json()["total"] == 23
        cleared = await client.delete(console, headers=bearer(token))
        assert cleared.status_code == 204
        assert (await client.get(console, headers=bearer(token))).json()["total"] == 0


async def test_console_annotates_a_message(fresh_database: str, openai: FakeOpenAI) -> None:
    async with api_client(fresh_database, **env(openai)) as client:
        token = await login_admin(client)
        app_id, key = await chat_app(client, token)
        openai.reply("A weak answer.")
        message = (await ask(client, key, "What is Tusk?")).json()
        console = f"/console/api/apps/{app_id}/annotations"
        body = {"message_id": message["id"], "answer": "An LLM app platform."}
        first = await client.post(console, json=body, headers=bearer(token))
        assert first.json()["question"] == "What is Tusk?"
        second = await client.post(
            console, json={**body, "answer": "A platform for LLM apps."}, headers=bearer(token)
        )
        assert second.json()["id"] == first.json()["id"]
        assert second.json()["answer"] == "A platform for LLM apps."
        await switch(client, key, "enable")
        openai.clear()
        assert (await ask(client, key, "What is Tusk?")).json()["answer"] == second.json()["answer"]
        assert openai.requests == []


async def test_annotations_stay_within_their_app_and_workspace(
    fresh_database: str, openai: FakeOpenAI
) -> None:
    async with api_client(fresh_database, **env(openai)) as client:
        token = await login_admin(client)
        app_id, key = await chat_app(client, token)
        reset = await annotate(client, key, RESET)
        await switch(client, key, "enable")
        # Another app of the same workspace, with the reply on, has no annotation to give.
        _, sibling_key = await chat_app(client, token, "sibling")
        await switch(client, sibling_key, "enable")
        openai.clear()
        openai.reply("Sibling's model.")
        assert (await ask(client, sibling_key, RESET[0])).json()["answer"] == "Sibling's model."
        sibling_list = await client.get("/v1/apps/annotations", headers=bearer(sibling_key))
        assert sibling_list.json()["data"] == []
        for call in (
            client.put(f"/v1/apps/annotations/{reset['id']}",
                       json={"question": "q", "answer": "a"}, headers=bearer(sibling_key)),
            client.delete(f"/v1/apps/annotations/{reset['id']}", headers=bearer(sibling_key)),
        ):  # fmt: skip
            assert_error(await call, 404, "not_found")
        job = await switch(client, key, "disable")
        foreign_job = await client.get(
            f"/v1/apps/annotation-reply/disable/status/{job['job_id']}",
            headers=bearer(sibling_key),
        )
        assert_error(foreign_job, 404, "not_found")

        # Another workspace sees none of it from the console.
        email, password = await add_member(fresh_database, "other@example.com")
        other = await login(client, email, password)
        for path in (
            "annotations",
            "annotation-setting",
            f"annotations/{reset['id']}/hit-histories",
        ):
            assert_error(
                await client.get(f"/console/api/apps/{app_id}/{path}", headers=bearer(other)),
                404,
                "not_found",
            )
        deleted = await client.delete(
            f"/console/api/apps/{app_id}/annotations", headers=bearer(other)
        )
        assert_error(deleted, 404, "not_found")
        mine = await client.get("/v1/apps/annotations", headers=bearer(key))
        assert mine.json()["total"] == 1
