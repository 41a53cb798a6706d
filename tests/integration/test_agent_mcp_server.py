"""Apps served as MCP servers: the console creates, shows and renews a server code, and the `mcp`
SDK's client lists the app as a tool (its form variables and `query` as parameters) and calls it
through `/mcp/server/{code}/mcp`; the app answers with FakeOpenAI."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import pytest
from fastapi import FastAPI
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent

from tests.support.api import SECRET, bearer, make_settings
from tests.support.api import setup_and_login as login_admin
from tusk.api.app import create_app
from tusk.runtime import Runtime
from tusk.testing.openai_server import FakeOpenAI

KEY = "sk-mcp-apps"
GPT = {"provider": "openai", "name": "gpt-4o-mini", "mode": "chat", "completion_params": {}}
NAME_FIELD = {"text-input": {"label": "Name", "variable": "name", "required": True}}


@pytest.fixture(scope="module")
def openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as fake:
        yield fake


@asynccontextmanager
async def tusk_app(conninfo: str, openai: FakeOpenAI) -> AsyncIterator[FastAPI]:
    settings = make_settings(openai_api_key=KEY, openai_api_base=openai.base_url)
    app = create_app(Runtime(settings, conninfo, SECRET, embedded=False))
    async with app.router.lifespan_context(app):
        yield app


@asynccontextmanager
async def mcp_client(app: FastAPI, code: str) -> AsyncIterator[Client]:
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://tusk")
    transport = streamable_http_client(f"http://tusk/mcp/server/{code}/mcp", http_client=http)
    async with http, Client(transport, read_timeout_seconds=30) as client:
        yield client


async def chat_app(client: httpx.AsyncClient, token: str) -> str:
    made = await client.post(
        "/console/api/apps",
        json={"name": "Greeter app", "mode": "chat", "description": "Greets people"},
        headers=bearer(token),
    )
    app_id = str(made.json()["id"])
    document = {"model": GPT, "pre_prompt": "Greet {{name}}.", "user_input_form": [NAME_FIELD]}
    saved = await client.post(
        f"/console/api/apps/{app_id}/model-config", json=document, headers=bearer(token)
    )
    assert saved.status_code == 200, saved.text
    return app_id


async def test_an_mcp_client_calls_a_chat_app(fresh_database: str, openai: FakeOpenAI) -> None:
    openai.clear()
    async with tusk_app(fresh_database, openai) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tusk") as client:
            token = await login_admin(client)
            app_id = await chat_app(client, token)
            path = f"/console/api/apps/{app_id}/server"
            assert (await client.get(path, headers=bearer(token))).json() == {}
            created = await client.post(
                path, json={"parameters": {"name": "Who to greet"}}, headers=bearer(token)
            )
            assert created.status_code == 201, created.text
            server: dict[str, Any] = created.json()
            assert (server["status"], server["description"]) == ("active", "Greets people")
            assert len(server["server_code"]) == 16
            assert (await client.get(path, headers=bearer(token))).json() == server
            again = await client.post(path, json={}, headers=bearer(token))
            assert again.status_code == 400

        openai.reply("Hello Ann!")
        async with mcp_client(app, server["server_code"]) as mcp:
            listed = await mcp.list_tools()
            (tool,) = listed.tools
            assert tool.name == "Greeter_app"
            assert tool.description == "Greets people"
            assert tool.input_schema["required"] == ["query", "name"]
            assert tool.input_schema["properties"]["name"]["description"] == "Who to greet"
            result = await mcp.call_tool("Greeter_app", {"query": "hi", "name": "Ann"})
            assert not result.is_error
            assert isinstance(result.content[0], TextContent)
            assert result.content[0].text == "Hello Ann!"
            sent = openai.requests[-1].json["messages"]
            assert sent == [
                {"role": "system", "content": "Greet Ann."},
                {"role": "user", "content": "hi"},
            ]
            missing = await mcp.call_tool("Greeter_app", {"query": "hi"})
            assert missing.is_error
            assert "name" in missing.content[0].text  # type: ignore[union-attr]

        async with httpx.AsyncClient(transport=transport, base_url="http://tusk") as client:
            renewed = await client.get(
                f"/console/api/apps/{server['id']}/server/refresh", headers=bearer(token)
            )
            assert renewed.json()["server_code"] != server["server_code"]
            old = await client.post(
                f"/mcp/server/{server['server_code']}/mcp", json={"jsonrpc": "2.0", "id": 1}
            )
            assert old.status_code == 404
