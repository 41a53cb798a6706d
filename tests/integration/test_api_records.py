"""The Service API's records around apps over HTTP, as Dify serves them: conversations (scrolling,
rename, soft delete, variables), messages and feedback, parameters, meta, site, end users,
workflow logs with their filters, the console's logs with totals, and file upload and preview."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.integration.test_api_chatflow import GPT, published_chatflow
from tests.integration.test_api_workflows import publish_with_key, workflow_app
from tests.support.api import add_member, api_client, assert_error, bearer, login, setup_and_login
from tests.support.workflow import chain, node
from tusk.db.engine import engine_scope
from tusk.testing.openai_server import FakeOpenAI

KEY = "sk-chatflow"
CONVERSATION_KEYS = {"id", "name", "inputs", "status", "introduction", "created_at", "updated_at"}
MESSAGE_KEYS = {
    "id", "conversation_id", "parent_message_id", "inputs", "query", "answer", "feedback",
    "retriever_resources", "created_at", "agent_thoughts", "message_files", "status", "error",
    "extra_contents",
}  # fmt: skip
PARAMETER_KEYS = {
    "opening_statement", "suggested_questions", "suggested_questions_after_answer",
    "speech_to_text", "text_to_speech", "retriever_resource", "annotation_reply",
    "more_like_this", "user_input_form", "sensitive_word_avoidance", "file_upload",
    "system_parameters",
}  # fmt: skip


@pytest.fixture(scope="module")
def openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as fake:
        yield fake


async def say(
    client: httpx.AsyncClient, openai: FakeOpenAI, key: str, user: str, query: str,
    conversation_id: str = "",
) -> dict[str, Any]:  # fmt: skip
    openai.reply(f"re: {query}")
    body = {"query": query, "user": user, "inputs": {}, "conversation_id": conversation_id}
    reply = await client.post("/v1/chat-messages", json=body, headers=bearer(key))
    assert reply.status_code == 200, reply.text
    answer: dict[str, Any] = reply.json()
    return answer


async def test_conversations_messages_feedback_and_variables(
    fresh_database: str, openai: FakeOpenAI
) -> None:
    openai.clear()
    env = {"openai_api_key": KEY, "openai_api_base": openai.base_url}
    async with api_client(fresh_database, **env) as client:
        token = await setup_and_login(client)
        key = await published_chatflow(client, token)
        first = await say(client, openai, key, "ann", "one")
        c1 = first["conversation_id"]
        await say(client, openai, key, "ann", "one again", c1)
        c2 = (await say(client, openai, key, "ann", "two"))["conversation_id"]
        c3 = (await say(client, openai, key, "ann", "three"))["conversation_id"]
        await say(client, openai, key, "bob", "bob's")
        h = bearer(key)

        # scrolling, newest activity first by default
        page = (await client.get("/v1/conversations?user=ann&limit=2", headers=h)).json()
        assert page["limit"] == 2
        assert page["has_more"] is True
        assert [c["id"] for c in page["data"]] == [c3, c2]
        assert set(page["data"][0]) == CONVERSATION_KEYS
        rest = await client.get(
            f"/v1/conversations?user=ann&limit=2&last_id={c2}", headers=h
        )  # fmt: skip
        assert [c["id"] for c in rest.json()["data"]] == [c1]
        assert rest.json()["has_more"] is False
        whole = (await client.get("/v1/conversations?user=ann", headers=h)).json()
        assert whole["limit"] == 20
        assert len(whole["data"]) == 3
        oldest = await client.get("/v1/conversations?user=ann&sort_by=created_at", headers=h)
        assert [c["id"] for c in oldest.json()["data"]] == [c1, c2, c3]
        bob = (await client.get("/v1/conversations?user=bob", headers=h)).json()["data"]
        assert len(bob) == 1
        assert bob[0]["id"] not in (c1, c2, c3)
        bad_sort = await client.get("/v1/conversations?user=ann&sort_by=name", headers=h)
        assert_error(bad_sort, 400, "invalid_param")
        assert_error(await client.get("/v1/conversations?limit=101", headers=h), 400,
                     "invalid_param")  # fmt: skip
        unknown_last = await client.get(f"/v1/conversations?user=bob&last_id={c1}", headers=h)
        assert_error(unknown_last, 404, "not_found")

        # messages: the newest `limit`, oldest first; first_id scrolls back
        listing = f"/v1/messages?conversation_id={c1}&user=ann"
        newest = (await client.get(f"{listing}&limit=1", headers=h)).json()
        assert newest["has_more"] is True
        assert [m["query"] for m in newest["data"]] == ["one again"]
        message = newest["data"][0]
        assert set(message) == MESSAGE_KEYS
        assert message["answer"] == "re: one again (turn 2)"
        assert message["parent_message_id"] == first["message_id"]
        assert (message["status"], message["error"], message["feedback"]) == ("normal", None, None)
        assert message["agent_thoughts"] == message["message_files"] == []
        older = await client.get(f"{listing}&limit=1&first_id={message['id']}", headers=h)
        assert [m["id"] for m in older.json()["data"]] == [first["message_id"]]
        assert older.json()["has_more"] is False
        both = (await client.get(listing, headers=h)).json()
        assert [m["query"] for m in both["data"]] == ["one", "one again"]
        assert both["limit"] == 20
        not_his = await client.get(f"/v1/messages?conversation_id={c1}&user=bob", headers=h)
        assert assert_error(not_his, 404, "not_found")["message"] == "Conversation Not Exists."
        assert_error(await client.get("/v1/messages?user=ann", headers=h), 400, "invalid_param")

        # feedback: given, shown, listed, taken back
        feedback_url = f"/v1/messages/{message['id']}/feedbacks"
        liked = await client.post(
            feedback_url, json={"rating": "like", "content": "good", "user": "ann"}, headers=h
        )
        assert liked.json() == {"result": "success"}
        shown = (await client.get(listing, headers=h)).json()["data"]
        assert [m["feedback"] for m in shown] == [None, {"rating": "like"}]
        listed = (await client.get("/v1/app/feedbacks", headers=h)).json()["data"]
        assert [(f["message_id"], f["rating"], f["content"], f["from_source"]) for f in listed] == [
            (message["id"], "like", "good", "user")
        ]
        await client.post(feedback_url, json={"rating": "dislike", "user": "ann"}, headers=h)
        listed = (await client.get("/v1/app/feedbacks", headers=h)).json()["data"]
        assert [f["rating"] for f in listed] == ["dislike"]
        stranger = await client.post(feedback_url, json={"rating": "like", "user": "bob"},
                                     headers=h)  # fmt: skip
        assert_error(stranger, 404, "not_found")
        no_user = await client.post(feedback_url, json={"rating": "like"}, headers=h)
        assert_error(no_user, 400, "invalid_param")
        wrong = await client.post(feedback_url, json={"rating": "meh", "user": "ann"}, headers=h)
        assert_error(wrong, 400, "invalid_param")

        # console logs, with totals, before the feedback is taken back
        console = bearer(token)
        app_id = await app_of(fresh_database)
        logs = await client.get(f"/console/api/apps/{app_id}/chat-conversations", headers=console)
        assert logs.status_code == 200, logs.text
        rows = {row["id"]: row for row in logs.json()["data"]}
        assert logs.json()["total"] == 4
        assert rows[c1]["message_count"] == 2
        assert rows[c1]["total_tokens"] > 0
        assert rows[c1]["user_feedback_stats"] == {"like": 0, "dislike": 1}
        assert rows[c1]["from_end_user_session_id"] == "ann"
        found = await client.get(
            f"/console/api/apps/{app_id}/chat-conversations?keyword=again", headers=console
        )
        assert [row["id"] for row in found.json()["data"]] == [c1]
        detail = await client.get(
            f"/console/api/apps/{app_id}/chat-messages?conversation_id={c1}", headers=console
        )
        details = detail.json()["data"]
        assert [d["query"] for d in details] == ["one", "one again"]
        assert details[1]["feedbacks"][0]["rating"] == "dislike"
        assert details[1]["workflow_run_id"]
        costs = await client.get(
            f"/console/api/apps/{app_id}/statistics/token-costs", headers=console
        )
        days = costs.json()["data"]
        assert len(days) == 1
        assert days[0]["token_count"] == sum(r["total_tokens"] for r in rows.values())
        assert set(days[0]) == {"date", "token_count", "total_price", "currency"}

        taken_back = await client.post(feedback_url, json={"rating": None, "user": "ann"},
                                       headers=h)  # fmt: skip
        assert taken_back.status_code == 200
        assert (await client.get("/v1/app/feedbacks", headers=h)).json()["data"] == []
        again = await client.post(feedback_url, json={"rating": None, "user": "ann"}, headers=h)
        assert_error(again, 400, "invalid_param")

        # suggestions are off in this app's features
        suggested = await client.get(f"/v1/messages/{message['id']}/suggested?user=ann", headers=h)
        assert_error(suggested, 400, "bad_request")
        theirs = await client.get(f"/v1/messages/{message['id']}/suggested?user=bob", headers=h)
        assert_error(theirs, 404, "not_found")

        # rename
        renamed = await client.post(
            f"/v1/conversations/{c2}/name", json={"name": "Trip", "user": "ann"}, headers=h
        )
        assert renamed.status_code == 200, renamed.text
        assert renamed.json()["name"] == "Trip"
        assert set(renamed.json()) == CONVERSATION_KEYS
        theirs = await client.post(
            f"/v1/conversations/{c2}/name", json={"name": "Mine", "user": "bob"}, headers=h
        )
        assert_error(theirs, 404, "not_found")
        await client.post(
            "/console/api/workspaces/current/default-model",
            json={"model_settings": [{"model_type": "llm", "provider": GPT["provider"],
                                      "model": GPT["name"]}]},
            headers=bearer(token),
        )  # fmt: skip
        openai.reply('{"title": "Counting"}')
        named = await client.post(
            f"/v1/conversations/{c1}/name", json={"auto_generate": True, "user": "ann"}, headers=h
        )
        assert named.status_code == 200, named.text
        assert named.json()["name"] == "Counting"
        assert "one" in openai.requests[-1].json["messages"][-1]["content"]
        nameless = await client.post(f"/v1/conversations/{c2}/name", json={"user": "ann"},
                                     headers=h)  # fmt: skip
        assert_error(nameless, 400, "invalid_param")

        # conversation variables of the chatflow
        variables_url = f"/v1/conversations/{c1}/variables"
        variables = (await client.get(f"{variables_url}?user=ann", headers=h)).json()
        assert variables["has_more"] is False
        [turns] = variables["data"]
        assert (turns["id"], turns["name"], turns["value_type"], turns["value"]) == (
            "v1", "turns", "number", "2"
        )  # fmt: skip
        assert set(turns) == {"id", "name", "value_type", "value", "description", "created_at",
                              "updated_at"}  # fmt: skip
        mismatch = await client.put(
            f"{variables_url}/v1", json={"value": "many", "user": "ann"}, headers=h
        )
        assert_error(mismatch, 400, "bad_request")
        updated = await client.put(f"{variables_url}/v1", json={"value": 7, "user": "ann"},
                                   headers=h)  # fmt: skip
        assert updated.json()["value"] == "7"
        missing = await client.put(f"{variables_url}/v9", json={"value": 1, "user": "ann"},
                                   headers=h)  # fmt: skip
        assert_error(missing, 404, "not_found")
        not_yours = await client.get(f"{variables_url}?user=bob", headers=h)
        assert_error(not_yours, 404, "not_found")
        next_turn = await say(client, openai, key, "ann", "count on", c1)
        assert next_turn["answer"].endswith("(turn 8)")

        # soft delete
        theirs = await client.request(
            "DELETE", f"/v1/conversations/{c3}", json={"user": "bob"}, headers=h
        )
        assert_error(theirs, 404, "not_found")
        deleted = await client.request(
            "DELETE", f"/v1/conversations/{c3}", json={"user": "ann"}, headers=h
        )
        assert deleted.status_code == 204
        left = (await client.get("/v1/conversations?user=ann", headers=h)).json()["data"]
        assert c3 not in [c["id"] for c in left]
        gone = await client.get(f"/v1/messages?conversation_id={c3}&user=ann", headers=h)
        assert_error(gone, 404, "not_found")

    async with engine_scope(fresh_database) as engine, engine.connect() as conn:
        kept = await conn.execute(text("SELECT is_deleted FROM conversations WHERE id = :id"),
                                  {"id": c3})  # fmt: skip
        assert kept.scalar_one() is True


async def app_of(conninfo: str) -> str:
    async with engine_scope(conninfo) as engine, engine.connect() as conn:
        return str((await conn.execute(text("SELECT id FROM apps"))).scalar_one())


FORM = [
    {"variable": "name", "label": "Name", "type": "text-input", "required": True,
     "max_length": 20},
    {"variable": "size", "label": "Size", "type": "select", "required": False,
     "options": ["S", "M"]},
]  # fmt: skip


def echo_workflow() -> dict[str, Any]:
    nodes = [
        node("start", "start", variables=FORM),
        node("end", "end", outputs=[{"variable": "said", "value_selector": ["start", "name"]}]),
    ]
    features = {"opening_statement": "Hi", "retriever_resource": {"enabled": True}}
    return {"graph": {"nodes": nodes, "edges": chain("start", "end")}, "features": features}


async def test_workflow_parameters_logs_and_app_metadata(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        app_id = await workflow_app(client, token, echo_workflow())
        key = await publish_with_key(client, token, app_id)
        h = bearer(key)
        for user, name in (("ann", "Ada"), ("ann", "Alan"), ("bob", "Grace")):
            run = await client.post(
                "/v1/workflows/run", json={"inputs": {"name": name}, "user": user}, headers=h
            )
            assert run.json()["data"]["status"] == "succeeded", run.text

        params = (await client.get("/v1/parameters", headers=h)).json()
        assert set(params) == PARAMETER_KEYS
        assert params["user_input_form"] == [{"text-input": FORM[0]}, {"select": FORM[1]}]
        assert params["opening_statement"] == "Hi"
        assert params["retriever_resource"] == {"enabled": True}
        assert params["suggested_questions"] == []
        assert params["more_like_this"] == {"enabled": False}
        assert params["file_upload"]["image"]["enabled"] is False
        assert params["system_parameters"]["file_size_limit"] == 15
        assert (await client.get("/v1/meta", headers=h)).json() == {"tool_icons": {}}
        site = (await client.get("/v1/site", headers=h)).json()
        assert site["title"] == "Flow"
        assert {"chat_color_theme", "icon_url", "default_language", "show_workflow_steps",
                "use_icon_as_answer_icon", "copyright", "privacy_policy"} <= set(site)  # fmt: skip
        assert_error(await client.get("/v1/conversations?user=ann", headers=h), 400,
                     "not_chat_app")  # fmt: skip

        logs = (await client.get("/v1/workflows/logs", headers=h)).json()
        assert (logs["page"], logs["limit"], logs["total"], logs["has_more"]) == (1, 20, 3, False)
        entry = logs["data"][0]
        assert set(entry) >= {"id", "workflow_run", "created_from", "created_by_role",
                              "created_by_account", "created_by_end_user",
                              "created_at"}  # fmt: skip
        assert entry["created_by_end_user"]["session_id"] == "bob"  # newest first
        assert entry["created_from"] == "service-api"
        assert entry["workflow_run"]["status"] == "succeeded"
        paged = (await client.get("/v1/workflows/logs?limit=2", headers=h)).json()
        assert (len(paged["data"]), paged["has_more"]) == (2, True)
        anns = await client.get("/v1/workflows/logs?created_by_end_user_session_id=ann", headers=h)
        assert anns.json()["total"] == 2
        alan = await client.get("/v1/workflows/logs?keyword=Alan", headers=h)
        assert alan.json()["total"] == 1
        assert (await client.get("/v1/workflows/logs?status=failed", headers=h)).json()[
            "total"
        ] == 0
        assert_error(await client.get("/v1/workflows/logs?status=odd", headers=h), 400,
                     "invalid_param")  # fmt: skip
        early = await client.get("/v1/workflows/logs?created_at__before=2000-01-01T00:00:00Z",
                                 headers=h)  # fmt: skip
        assert early.json()["total"] == 0
        assert_error(await client.get("/v1/workflows/logs?created_at__after=soon", headers=h),
                     400, "invalid_param")  # fmt: skip
        console = await client.get(
            f"/console/api/apps/{app_id}/workflow-app-logs?keyword=Ada", headers=bearer(token)
        )
        assert console.json()["total"] == 1

        bob_id = entry["created_by_end_user"]["id"]
        bob = (await client.get(f"/v1/end-users/{bob_id}", headers=h)).json()
        assert (bob["session_id"], bob["app_id"], bob["type"]) == ("bob", app_id, "service-api")
        assert set(bob) == {"id", "tenant_id", "app_id", "type", "external_user_id", "name",
                            "is_anonymous", "session_id", "created_at", "updated_at"}  # fmt: skip
        nobody = await client.get(f"/v1/end-users/{uuid.uuid4()}", headers=h)
        assert_error(nobody, 404, "end_user_not_found")


async def test_chat_app_parameters_come_from_its_model_config(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        created = await client.post(
            "/console/api/apps", json={"name": "Chat", "mode": "chat"}, headers=bearer(token)
        )
        app_id = created.json()["id"]
        key = await client.post(f"/console/api/apps/{app_id}/api-keys", headers=bearer(token))
        h = bearer(key.json()["token"])
        unconfigured = await client.get("/v1/parameters", headers=h)
        assert_error(unconfigured, 400, "app_unavailable")
        form = [{"paragraph": {"variable": "topic", "label": "Topic", "required": True}}]
        config = {"opening_statement": "Ask me", "suggested_questions": ["Why?"],
                  "user_input_form": form, "speech_to_text": {"enabled": True}}  # fmt: skip
        await configure(fresh_database, app_id, config)  # as another process would
        # API processes learn of another's change when its notification arrives (milliseconds)
        async with asyncio.timeout(5):
            while (answer := await client.get("/v1/parameters", headers=h)).status_code != 200:
                await asyncio.sleep(0.01)
        params = answer.json()
        assert set(params) == PARAMETER_KEYS
        assert params["user_input_form"] == form
        assert (params["opening_statement"], params["suggested_questions"]) == ("Ask me", ["Why?"])
        assert params["speech_to_text"] == {"enabled": True}
        assert params["annotation_reply"] == {"enabled": False}


async def configure(conninfo: str, app_id: str, config: dict[str, Any]) -> None:
    """Give a chat app a model config document, as the app editor would store it."""
    async with engine_scope(conninfo) as engine, engine.begin() as conn:
        made = await conn.execute(
            text("INSERT INTO app_model_configs (workspace_id, app_id, config) "
                 "SELECT workspace_id, id, CAST(:config AS jsonb) FROM apps WHERE id = :app "
                 "RETURNING id"),
            {"config": json.dumps(config), "app": app_id},
        )  # fmt: skip
        await conn.execute(
            text("UPDATE apps SET app_model_config_id = :config WHERE id = :app"),
            {"config": made.scalar_one(), "app": app_id},
        )


async def test_upload_and_preview_within_the_workspace(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        app_id = await workflow_app(client, token, echo_workflow())
        key = await publish_with_key(client, token, app_id)
        h = bearer(key)
        upload = await client.post(
            "/v1/files/upload",
            files={"file": ("notes.txt", b"hello file", "text/plain")},
            data={"user": "ann"},
            headers=h,
        )
        assert upload.status_code == 201, upload.text
        file = upload.json()
        assert {"id", "name", "size", "extension", "mime_type", "created_by", "created_at",
                "preview_url", "source_url", "original_url", "user_id", "tenant_id",
                "conversation_id", "file_key"} == set(file)  # fmt: skip
        assert (file["name"], file["size"], file["extension"]) == ("notes.txt", 10, "txt")
        assert file["created_by"] == file["user_id"]
        empty = await client.post("/v1/files/upload", data={"user": "ann"}, headers=h)
        assert_error(empty, 400, "no_file_uploaded")

        preview = await client.get(f"/v1/files/{file['id']}/preview", headers=h)
        assert preview.status_code == 200
        assert preview.content == b"hello file"
        assert preview.headers["content-type"].startswith("text/plain")
        assert preview.headers["cache-control"] == "public, max-age=3600"
        download = await client.get(f"/v1/files/{file['id']}/preview?as_attachment=true",
                                    headers=h)  # fmt: skip
        assert download.headers["content-disposition"] == "attachment; filename*=UTF-8''notes.txt"
        assert_error(await client.get(f"/v1/files/{uuid.uuid4()}/preview", headers=h), 404,
                     "file_not_found")  # fmt: skip

        email, password = await add_member(fresh_database, "eve@example.com")
        other = await login(client, email, password)
        their_app = await workflow_app(client, other, echo_workflow())
        their_key = await publish_with_key(client, other, their_app)
        refused = await client.get(f"/v1/files/{file['id']}/preview", headers=bearer(their_key))
        assert_error(refused, 404, "file_not_found")
