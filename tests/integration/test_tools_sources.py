"""Tools from real sources: an OpenAPI spec served (with its API) by a loopback HTTP server, a
real MCP server built with the `mcp` SDK on streamable HTTP, the built-in tools, and the tool
node running them through the workflow engine. Loopback is reached through the SSRF allow-list
only."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import pytest_asyncio
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError as McpToolError

from tests.support.knowledge import new_workspace, services_on
from tests.support.workflow import Outcome, chain, node, run_graph
from tusk.errors import InvalidParam
from tusk.services import Services
from tusk.tools import ToolContext, call, store
from tusk.tools.registry import find_tool
from tusk.workflow.context import Resources

pytestmark = pytest.mark.asyncio(loop_scope="module")


# --- an API with its OpenAPI spec --------------------------------------------------------------

SPEC = """
openapi: 3.0.3
info: {title: Weather, version: "1"}
servers: [{url: "BASE"}]
paths:
  /weather/{city}:
    get:
      operationId: getWeather
      summary: The weather in a city
      parameters:
        - {name: city, in: path, required: true, schema: {type: string}}
        - {name: days, in: query, schema: {type: integer, minimum: 1}}
  /notes:
    post:
      operationId: addNote
      requestBody:
        content:
          application/json:
            schema:
              type: object
              required: [text]
              properties: {text: {type: string}, pinned: {type: boolean}}
  /big:
    get: {operationId: bigReport}
"""


class Api(BaseHTTPRequestHandler):
    def _route(self) -> None:
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query))
        if url.path == "/spec.yaml":
            self._reply(200, SPEC.replace("BASE", "/").encode(), "application/yaml")
        elif url.path.startswith("/weather/"):
            seen = {"city": url.path.rsplit("/", 1)[1], "query": query}
            seen["auth"] = self.headers.get("Authorization", "")
            self._reply(200, json.dumps(seen).encode(), "application/json")
        elif url.path == "/notes":
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._reply(201, body, "application/json")
        elif url.path == "/big":
            self._reply(200, b"y" * (600 * 1024), "text/plain")
        else:
            self._reply(404, b"no such page", "text/plain")

    do_GET = do_POST = _route

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


# --- an MCP server -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mcp_server() -> MCPServer:
    server = MCPServer("calculator")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    async def pause(seconds: float) -> str:
        """Wait, then answer."""
        await asyncio.sleep(seconds)
        return "awake"

    @server.tool()
    def fail(reason: str) -> str:
        """Always fails."""
        raise McpToolError(f"cannot: {reason}")

    return server


@pytest.fixture(scope="module")
def mcp_url() -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(
        mcp_server().streamable_http_app(), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/mcp"
    server.should_exit = True
    thread.join(10)


# --- services -------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def services(database: str) -> AsyncIterator[Services]:
    async with services_on(database, sandbox_pool_size=1, ssrf_allowed_hosts="127.0.0.1") as made:
        yield made


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def workspace(services: Services) -> uuid.UUID:
    return await new_workspace(services)


@pytest.fixture(scope="module")
def resources(services: Services) -> Resources:
    return Resources(
        services.settings, services.sessions, services.storage, services.models, services.sandbox
    )


def secret(services: Services) -> str:
    return services.models.secret_key


async def tool_of(
    services: Services, workspace: uuid.UUID, kind: str, provider: str, name: str
) -> Any:
    async with services.transaction() as db:
        return await find_tool(db, secret(services), workspace, kind, provider, name)


def tool_node(kind: str, provider: str, tool: str, **parameters: Any) -> dict[str, Any]:
    return node(
        "tool",
        "tool",
        provider_id=provider,
        provider_type=kind,
        provider_name=provider,
        tool_name=tool,
        tool_parameters=parameters,
    )


async def run_tool_node(
    resources: Resources, workspace: uuid.UUID, tool: dict[str, Any], **inputs: Any
) -> Outcome:
    start = node(
        "start", "start", variables=[{"variable": k, "type": "text-input"} for k in inputs]
    )
    end = node(
        "end",
        "end",
        outputs=[{"variable": name, "value_selector": ["tool", name]} for name in ("text", "json")],
    )
    nodes = [start, tool, end]
    return await run_graph(
        nodes, chain("start", "tool", "end"), inputs, resources=resources, workspace_id=workspace
    )


# --- OpenAPI --------------------------------------------------------------------------------


async def test_an_openapi_provider_calls_its_operations(
    services: Services, workspace: uuid.UUID, resources: Resources, api: str
) -> None:
    credentials = {
        "auth_type": "api_key_header",
        "api_key_header_prefix": "bearer",
        "api_key_value": "s3cret-key-42",
    }
    spec = SPEC.replace("BASE", api)
    async with services.transaction() as db:
        row = await store.add_api_provider(
            db, secret(services), workspace, store.ApiProviderInput("weather", spec, credentials)
        )
        assert b"s3cret" not in row.encrypted_credentials
    context = ToolContext(workspace, resources)
    weather = await tool_of(services, workspace, "api", "weather", "getWeather")
    result = await call(weather, {"city": "Lyon", "days": "3"}, context)
    assert not result.is_error, result.text
    assert result.json == [{"city": "Lyon", "query": {"days": "3"}, "auth": "Bearer s3cret-key-42"}]
    note = await tool_of(services, workspace, "api", str(row.id), "addNote")
    result = await call(note, '{"text": "hello", "pinned": true}', context)
    assert result.json == [{"text": "hello", "pinned": True}]
    refused = await call(note, '{"pinned": "maybe"}', context)
    assert refused.is_error
    assert "Invalid arguments for tool addNote" in refused.text


async def test_a_large_response_is_cut_with_a_note(
    services: Services, workspace: uuid.UUID, resources: Resources, api: str
) -> None:
    big = await tool_of(services, workspace, "api", "weather", "bigReport")
    result = await call(big, {}, ToolContext(workspace, resources))
    assert not result.is_error
    assert result.text.startswith("yyyy")
    assert result.text.endswith("was longer than 262144 bytes and was cut there.]")


async def test_an_invalid_spec_or_a_taken_name_is_refused(
    services: Services, workspace: uuid.UUID, api: str
) -> None:
    bad = store.ApiProviderInput("broken", "openapi: 3.0.0\ninfo: {}\n")
    async with services.transaction() as db:
        with pytest.raises(InvalidParam, match="the spec has no `paths`"):
            await store.add_api_provider(db, secret(services), workspace, bad)
    taken = store.ApiProviderInput("weather", SPEC.replace("BASE", api))
    async with services.transaction() as db:
        with pytest.raises(store.ProviderExists, match="already exists"):
            await store.add_api_provider(db, secret(services), workspace, taken)


async def test_the_tool_node_calls_an_api_tool(resources: Resources, workspace: uuid.UUID) -> None:
    tool = tool_node(
        "api",
        "weather",
        "getWeather",
        city={"type": "variable", "value": ["start", "where"]},
        days={"type": "mixed", "value": "{{#start.how_long#}}"},
    )
    outcome = await run_tool_node(resources, workspace, tool, where="Paris", how_long="2")
    assert outcome.state.status == "succeeded", outcome.state.error
    assert outcome.state.outputs["json"][0]["city"] == "Paris"
    assert outcome.state.outputs["json"][0]["query"] == {"days": "2"}


# --- MCP --------------------------------------------------------------------------------------


async def register_mcp(
    services: Services, workspace: uuid.UUID, url: str, identifier: str, timeout: float = 5.0
) -> None:
    data = store.McpInput(
        name=identifier,
        server_identifier=identifier,
        server_url=url,
        headers={"X-Api-Key": "mcp-secret"},
        timeout=timeout,
    )
    async with services.transaction() as db:
        row = await store.add_mcp(db, secret(services), workspace, data)
        server = store.mcp_server(secret(services), row)
    from tusk.net.ssrf import AllowList
    from tusk.tools.mcp import list_tools

    specs = await list_tools(server, AllowList.parse("127.0.0.1"))
    async with services.transaction() as db:
        row = await store.get_mcp(db, workspace, identifier)
        store.keep_mcp_tools(row, specs)


async def test_mcp_tools_are_listed_and_called(
    services: Services, workspace: uuid.UUID, resources: Resources, mcp_url: str
) -> None:
    await register_mcp(services, workspace, mcp_url, "calc")
    async with services.transaction() as db:
        row = await store.get_mcp(db, workspace, "calc")
        assert {t.name for t in store.mcp_tools(row)} == {"add", "pause", "fail"}
        assert store.mcp_headers(secret(services), row) == {"X-Api-Key": "mcp-secret"}
    add = await tool_of(services, workspace, "mcp", "calc", "add")
    context = ToolContext(workspace, resources)
    result = await call(add, '{"a": 2, "b": "40"}', context)
    assert not result.is_error, result.text
    assert result.text == "42"
    assert result.json == [{"result": 42}]
    wrong = await call(add, '{"a": "two", "b": 1}', context)
    assert wrong.is_error
    assert "a: 'two' is not of type 'integer'" in wrong.text
    fail = await tool_of(services, workspace, "mcp", "calc", "fail")
    failed = await call(fail, {"reason": "no"}, context)
    assert failed.is_error
    assert "cannot: no" in failed.text


async def test_a_slow_or_unreachable_mcp_server_is_a_clear_error_in_time(
    services: Services, workspace: uuid.UUID, resources: Resources, mcp_url: str
) -> None:
    await register_mcp(services, workspace, mcp_url, "calc-quick", timeout=1.0)
    pause = await tool_of(services, workspace, "mcp", "calc-quick", "pause")
    started = time.monotonic()
    result = await call(pause, {"seconds": 10}, ToolContext(workspace, resources))
    assert time.monotonic() - started < 5
    assert result.is_error
    assert "did not answer within 1 seconds" in result.text
    async with services.transaction() as db:
        row = await store.get_mcp(db, workspace, "calc-quick")
        row.server_url = f"http://127.0.0.1:{free_port()}/mcp"
    down = await tool_of(services, workspace, "mcp", "calc-quick", "add")
    result = await call(down, {"a": 1, "b": 2}, ToolContext(workspace, resources))
    assert result.is_error
    assert "cannot be reached" in result.text


async def test_the_tool_node_calls_an_mcp_tool(resources: Resources, workspace: uuid.UUID) -> None:
    tool = tool_node(
        "mcp",
        "calc",
        "add",
        a={"type": "mixed", "value": "{{#start.x#}}"},
        b={"type": "constant", "value": 1},
    )
    outcome = await run_tool_node(resources, workspace, tool, x="41")
    assert outcome.state.status == "succeeded", outcome.state.error
    assert outcome.state.outputs["text"] == "42"


# --- built-ins --------------------------------------------------------------------------------


async def test_dify_time_and_webscraper_tools_run_as_their_tusk_equivalents(
    resources: Resources, workspace: uuid.UUID, api: str
) -> None:
    timed = node(
        "tool",
        "tool",
        provider_id="time",
        provider_type="builtin",
        tool_name="current_time",
        tool_configurations={
            "format": {"type": "mixed", "value": "%Y"},
            "timezone": {"type": "constant", "value": "UTC"},
        },
        tool_parameters={},
    )
    outcome = await run_tool_node(resources, workspace, timed)
    assert outcome.state.outputs["text"] == time.strftime("%Y", time.gmtime())
    scraper = node(
        "tool",
        "tool",
        provider_id="webscraper",
        provider_type="builtin",
        tool_name="webscraper",
        tool_configurations={"generate_summary": 0, "user_agent": "Tests"},
        tool_parameters={"url": {"type": "mixed", "value": "{{#start.page#}}"}},
    )
    outcome = await run_tool_node(resources, workspace, scraper, page=f"{api}/weather/Nice")
    assert outcome.state.status == "succeeded", outcome.state.error
    assert '"city": "Nice"' in outcome.state.outputs["text"]


async def test_an_unknown_dify_provider_fails_naming_it(
    resources: Resources, workspace: uuid.UUID
) -> None:
    tavily = tool_node("builtin", "langgenius/tavily/tavily", "tavily_search")
    outcome = await run_tool_node(resources, workspace, tavily)
    assert outcome.state.status == "failed"
    assert "'langgenius/tavily/tavily' (tool 'tavily_search') has no Tusk equivalent" in str(
        outcome.state.error
    )


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
async def test_the_code_interpreter_runs_scripts_in_the_sandbox(
    services: Services, workspace: uuid.UUID, resources: Resources
) -> None:
    run_code = await tool_of(services, workspace, "builtin", "code", "run_code")
    context = ToolContext(workspace, resources)
    result = await call(run_code, {"code": "import math\nprint(math.factorial(10))"}, context)
    assert result.text.strip() == "3628800", result.text
    failed = await call(run_code, {"code": "print(1 / 0)"}, context)
    assert failed.is_error
    assert "ZeroDivisionError" in failed.text
