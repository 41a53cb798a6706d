"""Tool providers over Dify's console paths: built-ins listed, OpenAPI providers added from a
spec (with the reason when it cannot be used) and shown with masked keys, MCP servers
registered with their tools refreshed from a real server, and a published workflow app listed
and called as a tool."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.integration.test_tools_sources import Api, free_port, mcp_server
from tests.support.api import SECRET, assert_error, bearer, make_settings, setup_and_login
from tests.support.workflow import chain, node
from tusk.api.app import create_app
from tusk.runtime import Runtime
from tusk.services import Services
from tusk.tools import ToolContext, call
from tusk.tools.registry import find_tool
from tusk.workflow.context import Resources

BASE = "/console/api/workspaces/current"


@asynccontextmanager
async def console(conninfo: str) -> AsyncIterator[tuple[httpx.AsyncClient, FastAPI]]:
    """The API, allowed to reach the loopback servers of these tests."""
    settings = make_settings(ssrf_allowed_hosts="127.0.0.1")
    app = create_app(Runtime(settings, conninfo, SECRET, embedded=False))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tusk") as client:
            yield client, app


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    import threading
    from http.server import ThreadingHTTPServer

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def mcp_url() -> Iterator[str]:
    import threading
    import time

    import uvicorn

    port = free_port()
    app = mcp_server().streamable_http_app()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/mcp"
    server.should_exit = True
    thread.join(10)


def names(providers: list[dict[str, Any]]) -> set[str]:
    return {p["name"] for p in providers}


async def test_builtin_and_openapi_providers(fresh_database: str, api: str) -> None:
    async with console(fresh_database) as (client, app):
        auth = bearer(await setup_and_login(client))
        listed = await client.get(
            f"{BASE}/tool-providers", params={"type": "builtin"}, headers=auth
        )
        assert names(listed.json()) == {"time", "webpage", "knowledge", "code"}
        tools = await client.get(f"{BASE}/tool-provider/builtin/time/tools", headers=auth)
        assert [t["name"] for t in tools.json()] == ["current_time"]
        assert {p["name"] for p in tools.json()[0]["parameters"]} == {"timezone", "format"}

        remote = await client.get(
            f"{BASE}/tool-provider/api/remote", params={"url": f"{api}/spec.yaml"}, headers=auth
        )
        assert remote.status_code == 200, remote.text
        spec = remote.json()["schema"].replace(
            'servers: [{url: "/"}]', f'servers: [{{url: "{api}"}}]'
        )
        bad = await client.post(
            f"{BASE}/tool-provider/api/schema", json={"schema": "openapi: 2.0\n"}, headers=auth
        )
        assert (
            "only OpenAPI 3.x specs are supported"
            in assert_error(bad, 400, "invalid_param")["message"]
        )
        parsed = await client.post(
            f"{BASE}/tool-provider/api/schema", json={"schema": spec}, headers=auth
        )
        assert [t["name"] for t in parsed.json()["parameters_schema"]] == [
            "getWeather", "addNote", "bigReport"
        ]  # fmt: skip
        credentials = {
            "auth_type": "api_key_query",
            "api_key_query_param": "k",
            "api_key_value": "key-123456789",
        }
        body = {
            "provider": "weather",
            "schema": spec,
            "schema_type": "openapi",
            "credentials": credentials,
            "icon": {},
        }
        added = await client.post(f"{BASE}/tool-provider/api/add", json=body, headers=auth)
        assert added.json() == {"result": "success"}, added.text
        again = await client.post(f"{BASE}/tool-provider/api/add", json=body, headers=auth)
        assert_error(again, 400, "provider_exists")

        shown = await client.get(
            f"{BASE}/tool-provider/api/get", params={"provider": "weather"}, headers=auth
        )
        masked = shown.json()["credentials"]["api_key_value"]
        assert masked != "key-123456789"
        assert masked.endswith("6789")
        kept = {**body, "original_provider": "weather", "provider": "forecast",
                "credentials": {**credentials, "api_key_value": masked}}  # fmt: skip
        updated = await client.post(f"{BASE}/tool-provider/api/update", json=kept, headers=auth)
        assert updated.status_code == 200, updated.text
        tools = await client.get(
            f"{BASE}/tool-provider/api/tools", params={"provider": "forecast"}, headers=auth
        )
        assert len(tools.json()) == 3
        services: Services = app.state.services
        workspace = await _workspace(services)
        async with services.transaction() as db:
            tool = await find_tool(db, SECRET, workspace, "api", "forecast", "getWeather")
        result = await call(tool, {"city": "Oslo"}, ToolContext(workspace, _resources(services)))
        assert result.json[0]["query"] == {"k": "key-123456789"}, (
            "the masked key kept the stored one"
        )

        deleted = await client.post(
            f"{BASE}/tool-provider/api/delete", json={"provider": "forecast"}, headers=auth
        )
        assert deleted.status_code == 200
        listed = await client.get(f"{BASE}/tool-providers", params={"type": "api"}, headers=auth)
        assert listed.json() == []


async def _workspace(services: Services) -> uuid.UUID:
    from sqlalchemy import select

    from tusk.db.models import Workspace

    async with services.transaction() as db:
        return (await db.execute(select(Workspace.id))).scalar_one()


def _resources(services: Services) -> Resources:
    return Resources(
        services.settings, services.sessions, services.storage, services.models, services.sandbox
    )


async def test_mcp_servers_are_registered_and_refreshed(fresh_database: str, mcp_url: str) -> None:
    async with console(fresh_database) as (client, _):
        auth = bearer(await setup_and_login(client))
        body = {
            "name": "Calculator",
            "server_url": mcp_url,
            "server_identifier": "calc",
            "icon": "🧮",
            "icon_type": "emoji",
            "headers": {"Authorization": "Bearer mcp-token-1234"},
            "configuration": {"timeout": 5},
        }
        created = await client.post(f"{BASE}/tool-provider/mcp", json=body, headers=auth)
        assert created.status_code == 200, created.text
        provider = created.json()
        assert {t["name"] for t in provider["tools"]} == {"add", "pause", "fail"}
        assert "mcp-token" not in created.text
        tools = await client.get(f"{BASE}/tool-provider/mcp/tools/{provider['id']}", headers=auth)
        assert {t["name"] for t in tools.json()["tools"]} == {"add", "pause", "fail"}
        refreshed = await client.get(f"{BASE}/tool-provider/mcp/update/calc", headers=auth)
        assert len(refreshed.json()["tools"]) == 3

        down = {
            **body,
            "provider_id": provider["id"],
            "server_url": f"http://127.0.0.1:{free_port()}/mcp",
        }
        moved = await client.put(f"{BASE}/tool-provider/mcp", json=down, headers=auth)
        assert "cannot be reached" in moved.json()["error"]
        failed = await client.get(f"{BASE}/tool-provider/mcp/update/calc", headers=auth)
        assert "cannot be reached" in assert_error(failed, 400, "invalid_param")["message"]

        stdio = {
            **body,
            "server_identifier": "local",
            "name": "Local",
            "transport": "stdio",
            "server_url": "echo hi",
        }
        refused = await client.post(f"{BASE}/tool-provider/mcp", json=stdio, headers=auth)
        assert (
            "stdio MCP servers are turned off" in assert_error(refused, 403, "forbidden")["message"]
        )

        gone = await client.request(
            "DELETE",
            f"{BASE}/tool-provider/mcp",
            json={"provider_id": provider["id"]},
            headers=auth,
        )
        assert gone.status_code == 200
        listed = await client.get(f"{BASE}/tool-providers", params={"type": "mcp"}, headers=auth)
        assert listed.json() == []


WORKFLOW = {
    "graph": {
        "nodes": [
            node("start", "start", variables=[
                {"variable": "name", "type": "text-input", "required": True, "label": "Who"},
                {"variable": "times", "type": "number"},
            ]),
            node("say", "template-transform", template="Hello {{ name }} x{{ times }}",
                 variables=[{"variable": "name", "value_selector": ["start", "name"]},
                            {"variable": "times", "value_selector": ["start", "times"]}]),
            node("end", "end",
                 outputs=[{"variable": "greeting", "value_selector": ["say", "output"]}]),
        ],
        "edges": chain("start", "say", "end"),
    },
    "features": {},
}  # fmt: skip


async def test_a_published_workflow_is_a_tool(fresh_database: str) -> None:
    async with console(fresh_database) as (client, app):
        auth = bearer(await setup_and_login(client))
        created = await client.post(
            "/console/api/apps", json={"name": "Greeter", "mode": "workflow"}, headers=auth
        )
        app_id = created.json()["id"]
        saved = await client.post(
            f"/console/api/apps/{app_id}/workflows/draft", json=WORKFLOW, headers=auth
        )
        assert saved.status_code == 200, saved.text
        unpublished = await client.get(
            f"{BASE}/tool-providers", params={"type": "workflow"}, headers=auth
        )
        assert unpublished.json() == []
        published = await client.post(
            f"/console/api/apps/{app_id}/workflows/publish", json={}, headers=auth
        )
        assert published.status_code == 200, published.text

        listed = await client.get(
            f"{BASE}/tool-providers", params={"type": "workflow"}, headers=auth
        )
        (tool_json,) = listed.json()[0]["tools"]
        assert tool_json["name"] == "Greeter"
        assert tool_json["input_schema"]["required"] == ["name"]
        assert tool_json["input_schema"]["properties"]["times"] == {"type": "number"}

        services: Services = app.state.services
        workspace = await _workspace(services)
        async with services.transaction() as db:
            tool = await find_tool(db, SECRET, workspace, "workflow", app_id, "Greeter")
        context = ToolContext(workspace, _resources(services), user_id="tester")
        result = await call(tool, '{"name": "Ada", "times": 2}', context)
        assert not result.is_error, result.text
        assert result.json == [{"greeting": "Hello Ada x2"}]
        missing = await call(tool, "{}", context)
        assert "'name' is a required property" in missing.text
