"""An app's concurrency limit (`max_active_requests`): kept in PostgreSQL, shared by every API
process, answered with 429 `too_many_requests` on every generating endpoint, and never leaked by
a request that ends badly or a process that dies (its lease expires)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.support.api import api_client, assert_error, bearer, setup_and_login
from tests.support.workflow import chain, node
from tusk.apps import limits
from tusk.db.engine import engine_scope, session_factory
from tusk.db.models import App
from tusk.errors import TooManyRequests
from tusk.testing.openai_server import FakeOpenAI

KEY = "sk-limits"
GPT = {"provider": "langgenius/openai/openai", "name": "gpt-4o-mini", "mode": "chat"}


@pytest.fixture(scope="module")
def openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as fake:
        yield fake


def test_the_smaller_positive_limit_wins() -> None:
    assert limits.effective_limit(None, 0) == 0
    assert limits.effective_limit(0, 0) == 0
    assert limits.effective_limit(3, 0) == 3
    assert limits.effective_limit(None, 5) == 5
    assert limits.effective_limit(3, 5) == 3
    assert limits.effective_limit(8, 5) == 5


async def configured(client: httpx.AsyncClient, token: str, mode: str) -> tuple[str, str]:
    made = await client.post(
        "/console/api/apps", json={"name": mode, "mode": mode}, headers=bearer(token)
    )
    app_id = made.json()["id"]
    base = f"/console/api/apps/{app_id}"
    if mode == "workflow":
        nodes = [
            node("start", "start", variables=[]),
            node("end", "end", outputs=[{"variable": "u", "value_selector": ["sys", "user_id"]}]),
        ]
        graph = {"graph": {"nodes": nodes, "edges": chain("start", "end")}, "features": {}}
        assert await client.post(f"{base}/workflows/draft", json=graph, headers=bearer(token))
        await client.post(f"{base}/workflows/publish", json={}, headers=bearer(token))
    else:
        config = {"model": GPT, "prompt_type": "simple", "pre_prompt": "Be brief."}
        saved = await client.post(f"{base}/model-config", json=config, headers=bearer(token))
        assert saved.status_code == 200, saved.text
    key = await client.post(f"{base}/api-keys", headers=bearer(token))
    return app_id, key.json()["token"]


async def set_limit(conninfo: str, app_id: str, limit: int | None) -> None:
    async with engine_scope(conninfo) as engine, engine.begin() as conn:
        await conn.execute(
            text("UPDATE apps SET max_active_requests = :n WHERE id = :id"),
            {"n": limit, "id": app_id},
        )


async def active(conninfo: str, app_id: str) -> int:
    async with engine_scope(conninfo) as engine:
        sessions = session_factory(engine)
        async with sessions() as db:
            app = await db.get(App, uuid.UUID(app_id))
        assert app is not None
        return await limits.active_requests(sessions, app)


async def until_idle(conninfo: str, app_id: str) -> None:
    async with asyncio.timeout(10):
        while await active(conninfo, app_id):
            await asyncio.sleep(0.02)


CHAT = {"query": "hi", "user": "ann", "inputs": {}, "auto_generate_name": False}


async def test_a_stream_holds_its_slot_until_it_ends(
    fresh_database: str, openai: FakeOpenAI
) -> None:
    env = {"openai_api_key": KEY, "openai_api_base": openai.base_url}
    async with (
        api_client(fresh_database, **env) as one,
        api_client(fresh_database, **env) as two,  # another API process on the same database
    ):
        token = await setup_and_login(one)
        app_id, key = await configured(one, token, "chat")
        await set_limit(fresh_database, app_id, 1)
        openai.reply("slow answer", ttft=1.0)
        streaming = {**CHAT, "response_mode": "streaming"}
        first = asyncio.create_task(
            one.post("/v1/chat-messages", json=streaming, headers=bearer(key))
        )
        async with asyncio.timeout(10):
            while await active(fresh_database, app_id) == 0:
                await asyncio.sleep(0.02)
        refused = await two.post("/v1/chat-messages", json=CHAT, headers=bearer(key))
        body = assert_error(refused, 429, "too_many_requests")
        assert body["message"] == (
            "Too many requests. Please try again later. The current maximum concurrent "
            f"requests allowed for {app_id} is 1."
        )
        done = await first
        assert done.status_code == 200
        assert '"event": "message_end"' in done.text
        await until_idle(fresh_database, app_id)

        openai.reply("again")
        again = await two.post("/v1/chat-messages", json=CHAT, headers=bearer(key))
        assert again.status_code == 200, again.text
        assert again.json()["answer"] == "again"
        await until_idle(fresh_database, app_id)

        # A request that fails gives its slot back too.
        bad = await one.post("/v1/chat-messages", json={"user": "ann"}, headers=bearer(key))
        assert_error(bad, 400, "invalid_param")
        await until_idle(fresh_database, app_id)


async def test_every_generating_endpoint_is_limited(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        calls: list[tuple[str, str, dict[str, Any]]] = []
        for mode, path, body in (
            ("chat", "/v1/chat-messages", CHAT),
            ("completion", "/v1/completion-messages", {"inputs": {}, "user": "ann"}),
            ("workflow", "/v1/workflows/run", {"inputs": {}, "user": "ann"}),
        ):
            app_id, key = await configured(client, token, mode)
            await set_limit(fresh_database, app_id, 2)
            calls.append((app_id, key, {"path": path, "body": body}))

        async with engine_scope(fresh_database) as engine:
            sessions = session_factory(engine)
            for app_id, key, call in calls:
                async with sessions() as db:
                    app = await db.get(App, uuid.UUID(app_id))
                assert app is not None
                held = [await limits.acquire(sessions, app, 2) for _ in range(2)]
                refused = await client.post(call["path"], json=call["body"], headers=bearer(key))
                assert_error(refused, 429, "too_many_requests")
                for lease in held:
                    lease.release()
                await until_idle(fresh_database, app_id)
                if call["path"] == "/v1/workflows/run":
                    ran = await client.post(call["path"], json=call["body"], headers=bearer(key))
                    assert ran.json()["data"]["outputs"] == {"u": "ann"}, ran.text
                    await until_idle(fresh_database, app_id)


async def test_an_expired_lease_frees_its_slot(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        app_id, _ = await configured(client, token, "workflow")
    async with engine_scope(fresh_database) as engine:
        sessions = session_factory(engine)
        async with sessions() as db:
            app = await db.get(App, uuid.UUID(app_id))
        assert app is not None
        lost = await limits.acquire(sessions, app, 1)  # its process "dies": never released
        with pytest.raises(TooManyRequests):
            await limits.acquire(sessions, app, 1)
        async with sessions.begin() as db:
            await db.execute(
                text("UPDATE kv_store SET expires_at = now() - interval '1 second' WHERE key = :k"),
                {"k": lost.key},
            )
        taken = await limits.acquire(sessions, app, 1)
        assert taken.key is not None
        assert await limits.active_requests(sessions, app) == 1
        unlimited = await limits.acquire(sessions, app, 0)
        assert unlimited.key is None


async def test_concurrent_admissions_never_exceed_the_limit(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        app_id, _ = await configured(client, token, "workflow")
    async with engine_scope(fresh_database) as engine:
        sessions = session_factory(engine)
        async with sessions() as db:
            app = await db.get(App, uuid.UUID(app_id))
        assert app is not None

        async def try_one() -> bool:
            try:
                await limits.acquire(sessions, app, 3)
            except TooManyRequests:
                return False
            return True

        admitted = await asyncio.gather(*(try_one() for _ in range(12)))
        assert sum(admitted) == 3
        assert await limits.active_requests(sessions, app) == 3
