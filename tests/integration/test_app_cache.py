"""The API process's cache of apps, keys, end users, model configs and annotation settings: what
changes reaches every process (at once in the one that made it; through the database's
notifications in the others), and what a warm request still asks of the database."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from tests.support.api import SECRET, assert_error, bearer, make_settings, setup_and_login
from tusk.api.app import create_app
from tusk.apps.cache import AppCache
from tusk.apps.easy_config import AppUnavailable
from tusk.db.engine import engine_scope, session_factory
from tusk.db.models import App
from tusk.db.pubsub import Broker
from tusk.runtime import Runtime
from tusk.testing.openai_server import FakeOpenAI

KEY = "sk-cache"
GPT = {"provider": "langgenius/openai/openai", "name": "gpt-4o-mini", "mode": "chat"}
CHAT = {"query": "hi", "user": "ann", "inputs": {}, "auto_generate_name": False}
PROPAGATION_SECONDS = 2.0  # a notification takes milliseconds; this is the test's patience


@asynccontextmanager
async def api(conninfo: str, **overrides: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """An API process (its FastAPI app too, to look inside)."""
    app = create_app(Runtime(make_settings(**overrides), conninfo, SECRET, embedded=False))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tusk") as client:
            yield app, client


async def chat_app(client: httpx.AsyncClient, token: str) -> tuple[str, str, str]:
    """A configured chat app: its id, an `app-` key and the key's id."""
    made = await client.post(
        "/console/api/apps", json={"name": "Cached", "mode": "chat"}, headers=bearer(token)
    )
    app_id = made.json()["id"]
    config = {"model": GPT, "prompt_type": "simple", "pre_prompt": ""}
    saved = await client.post(
        f"/console/api/apps/{app_id}/model-config", json=config, headers=bearer(token)
    )
    assert saved.status_code == 200, saved.text
    key = (await client.post(f"/console/api/apps/{app_id}/api-keys", headers=bearer(token))).json()
    return app_id, key["token"], key["id"]


async def info_status(client: httpx.AsyncClient, token: str) -> int:
    return (await client.get("/v1/info", headers=bearer(token))).status_code


async def eventually(check: Callable[[], Awaitable[bool]]) -> float:
    """Seconds until `check` holds; fails after PROPAGATION_SECONDS."""
    started = asyncio.get_running_loop().time()
    async with asyncio.timeout(PROPAGATION_SECONDS):
        while not await check():
            await asyncio.sleep(0.005)
    return asyncio.get_running_loop().time() - started


async def test_a_revoked_key_stops_working_in_every_process(fresh_database: str) -> None:
    async with api(fresh_database) as (_, one), api(fresh_database) as (_, two):
        token = await setup_and_login(one)
        app_id, key, key_id = await chat_app(one, token)
        assert (await info_status(one, key), await info_status(two, key)) == (200, 200)

        revoked = await one.delete(
            f"/console/api/apps/{app_id}/api-keys/{key_id}", headers=bearer(token)
        )
        assert revoked.status_code == 204
        # The process that revoked it refuses it at once; the other as the news arrives.
        assert_error(await one.get("/v1/info", headers=bearer(key)), 401, "unauthorized")
        await eventually(lambda: _refused(two, key))


async def _refused(client: httpx.AsyncClient, key: str) -> bool:
    return await info_status(client, key) == 401


async def test_changes_made_outside_any_api_process_reach_them_all(fresh_database: str) -> None:
    async with api(fresh_database) as (_, one), api(fresh_database) as (_, two):
        token = await setup_and_login(one)
        _, key, _ = await chat_app(one, token)
        _, other_key, _ = await chat_app(one, token)
        for client in (one, two):
            assert await info_status(client, key) == 200
            assert await info_status(client, other_key) == 200
        async with engine_scope(fresh_database) as engine, engine.begin() as conn:
            await conn.execute(text("UPDATE apps SET enable_api = false WHERE name = 'Cached'"))
        for client in (one, two):
            await eventually(lambda c=client: _forbidden(c, key))  # type: ignore[misc]
        async with engine_scope(fresh_database) as engine, engine.begin() as conn:
            await conn.execute(text("DELETE FROM api_keys"))
        for client in (one, two):
            await eventually(lambda c=client: _refused(c, other_key))  # type: ignore[misc]


async def _forbidden(client: httpx.AsyncClient, key: str) -> bool:
    return await info_status(client, key) == 403


async def test_a_new_model_config_is_used_by_the_next_message(fresh_database: str) -> None:
    with FakeOpenAI(api_key=KEY) as fake:
        env = {"openai_api_key": KEY, "openai_api_base": fake.base_url}
        async with api(fresh_database, **env) as (_, client):
            token = await setup_and_login(client)
            app_id, key, _ = await chat_app(client, token)
            fake.reply("first")
            first = await client.post("/v1/chat-messages", json=CHAT, headers=bearer(key))
            assert first.json()["answer"] == "first"
            config = {"model": GPT, "prompt_type": "simple", "pre_prompt": "Talk like a pirate."}
            await client.post(
                f"/console/api/apps/{app_id}/model-config", json=config, headers=bearer(token)
            )
            fake.reply("arr")
            second = await client.post("/v1/chat-messages", json=CHAT, headers=bearer(key))
            assert second.json()["answer"] == "arr"
            sent = fake.requests[-1].json["messages"]
            assert sent[0] == {"role": "system", "content": "Talk like a pirate."}


async def test_a_warm_chat_message_asks_little_of_the_database(
    fresh_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeOpenAI(api_key=KEY) as fake:
        env = {"openai_api_key": KEY, "openai_api_base": fake.base_url}
        async with api(fresh_database, **env) as (_, client):
            token = await setup_and_login(client)
            _, key, _ = await chat_app(client, token)
            fake.reply("warm-up")
            await client.post("/v1/chat-messages", json=CHAT, headers=bearer(key))
            statements: list[str] = []
            sent = psycopg.AsyncCursor.execute  # every statement, SQLAlchemy's and the driver's

            async def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
                statements.append(" ".join(str(query).split()))
                return await sent(self, query, *args, **kwargs)

            monkeypatch.setattr(psycopg.AsyncCursor, "execute", execute)
            fake.reply("hello")
            answer = await client.post("/v1/chat-messages", json=CHAT, headers=bearer(key))
            monkeypatch.undo()
        assert answer.json()["answer"] == "hello"
        # key, app, end user, model config and annotation setting come from the cache: left are
        # the conversation and message inserts in one statement, committed without waiting for
        # the disk, then the answer and the count in one statement (the usage row is written
        # later, in a batch)
        assert len(statements) == 2, statements
        turn, answered = statements
        assert re.search(r"INSERT INTO \W?conversations.* INSERT INTO \W?messages", turn)
        assert turn.endswith("RETURNING set_config('synchronous_commit', 'off', true)")
        assert answered.startswith("WITH answered AS ( UPDATE messages")


async def test_annotation_settings_are_forgotten_when_they_change(fresh_database: str) -> None:
    async with api(fresh_database) as (_, client):
        token = await setup_and_login(client)
        app_id, _, _ = await chat_app(client, token)
    async with engine_scope(fresh_database) as engine:
        sessions = session_factory(engine)
        broker = Broker(fresh_database)
        await broker.start()
        cache = AppCache()
        following = asyncio.create_task(cache.follow_changes(broker))
        try:
            await asyncio.sleep(0.05)  # subscribed
            async with sessions() as db:
                app = await db.get(App, uuid.UUID(app_id))
            assert app is not None
            assert await cache.reply_match(sessions, app) is None
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO app_annotation_settings (workspace_id, app_id, "
                        "score_threshold, embedding_provider_name, embedding_model_name) "
                        "SELECT workspace_id, id, 0.8, 'local', 'all-MiniLM-L6-v2' FROM apps "
                        "WHERE id = :id"
                    ),
                    {"id": app_id},
                )

            async def turned_on() -> bool:
                match = await cache.reply_match(sessions, app)
                return match is not None and match.threshold == 0.8

            await eventually(turned_on)
            match = await cache.reply_match(sessions, app)
            assert match is not None
            assert match.model == "local:all-MiniLM-L6-v2"
        finally:
            following.cancel()
            await broker.close()


def test_a_config_document_is_read_once_per_config() -> None:
    cache, config_id = AppCache(), uuid.uuid4()
    document = {"model": {"provider": "openai", "name": "gpt-4o-mini", "mode": "chat"},
                "pre_prompt": "Be brief."}  # fmt: skip
    first = cache.easy_config(config_id, document)
    assert first.pre_prompt == "Be brief."
    assert cache.easy_config(config_id, {}) is first  # rows never change: kept by id
    with pytest.raises(AppUnavailable, match="configuration is broken"):
        cache.easy_config(uuid.uuid4(), {"model": "not a model"})
