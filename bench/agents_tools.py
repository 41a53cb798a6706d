"""Tool calls for `bench.agents`: `tusk.tools.call` around a built-in and a trivial tool
against the tool's own `invoke`; an OpenAPI operation and an MCP tool called through Tusk against
the bare httpx and `mcp` SDK clients, on the servers of `bench.agents`' child process."""

from __future__ import annotations

import json
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from mcp import Client

from bench.common import Stats, markdown_table, ratio
from tusk.agent import AgentTool
from tusk.config import Settings
from tusk.net import ssrf
from tusk.net.ssrf import AllowList
from tusk.tools import Tool, ToolContext, ToolResult, call, mcp_net
from tusk.tools.base import object_schema
from tusk.tools.builtin.clock import CurrentTime
from tusk.tools.mcp import McpServer, McpTool, list_tools
from tusk.tools.openapi import ApiAuth, ApiTool, read_spec
from tusk.workflow.context import Resources

LOCAL_FACTOR = 20  # local calls of each way for one remote call
BLOCK = 25  # remote calls of one way before the next way's turn; local: x LOCAL_FACTOR
WARMUP = 5
TIME_ARGUMENTS = {"timezone": "Europe/Paris"}
CLOCK = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d CES?T"  # Paris's time, as current_time writes it
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
"""
WEATHER = {"city": "Paris", "days": 2}
ADDENDS = {"a": 2, "b": 3}
CLIENTS = "making and closing an HTTP client, no request"


def tool_context() -> ToolContext:
    """A context for tools that need no database: settings that let tools reach loopback."""
    settings = Settings(_env_file=None, ssrf_allowed_hosts="127.0.0.1")
    unused: Any = None
    resources = Resources(settings, unused, unused, unused, unused)
    return ToolContext(uuid.uuid4(), resources, timeout=30.0)


class Echo(Tool):
    """A tool that does next to nothing, so that what is around it shows."""

    name = "echo"
    description = "Gives back its text."
    parameters = object_schema({"text": {"type": "string"}}, ["text"])

    async def invoke(self, params: dict[str, Any], context: ToolContext) -> ToolResult:
        return ToolResult(text=params["text"])


Way = Callable[[], Awaitable[str]]  # one call, giving the text of its result


@dataclass(frozen=True)
class WaySpec:
    name: str
    baseline: bool  # the reference of its group's ratios
    call: Way
    expected: str  # the result: a JSON object, or a regular expression of its text


@dataclass(frozen=True)
class WayResult:
    group: str
    name: str
    baseline: bool
    latencies: list[float]
    seconds: float


def _local_ways(
    tool: Tool, params: dict[str, Any], context: ToolContext, expected: str
) -> list[WaySpec]:
    text_args = json.dumps(params)
    agent_tool = AgentTool(tool, context)

    async def direct() -> str:
        return (await tool.invoke(dict(params), context)).text

    async def checked() -> str:
        return (await call(tool, text_args, context)).text

    async def agent_path() -> str:
        return (await agent_tool.call(text_args))[0].text

    return [
        WaySpec("`tool.invoke(params, context)`", True, direct, expected),
        WaySpec("`tusk.tools.call(tool, json_text, context)`", False, checked, expected),
        WaySpec("`AgentTool.call(json_text)` (the agent's path)", False, agent_path, expected),
    ]


async def _httpx_fresh(url: str) -> str:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{url}/weather/Paris", params={"days": 2})
        response.raise_for_status()
        return response.text


async def _httpx_kept(client: httpx.AsyncClient, url: str) -> str:
    response = await client.get(f"{url}/weather/Paris", params={"days": 2})
    response.raise_for_status()
    return response.text


async def _mcp_fresh(url: str) -> str:
    async with Client(url) as client:
        return _mcp_text(await client.call_tool("add", ADDENDS))


async def _mcp_kept(client: Client) -> str:
    return _mcp_text(await client.call_tool("add", ADDENDS))


def _mcp_text(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def _remote_ways(
    api_url: str,
    mcp_url: str,
    context: ToolContext,
    http: httpx.AsyncClient,
    mcp: Client,
    mcp_tool: McpTool,
) -> dict[str, list[WaySpec]]:
    api_tool = ApiTool(read_spec(SPEC.replace("BASE", api_url))[0], ApiAuth())
    weather = json.dumps({**WEATHER, "sky": "clear"})

    async def fresh_http() -> str:
        return await _httpx_fresh(api_url)

    async def kept_http() -> str:
        return await _httpx_kept(http, api_url)

    async def tusk_api() -> str:
        return (await call(api_tool, WEATHER, context)).text

    async def fresh_mcp() -> str:
        return await _mcp_fresh(mcp_url)

    async def kept_mcp() -> str:
        return await _mcp_kept(mcp)

    async def tusk_mcp() -> str:
        return (await call(mcp_tool, ADDENDS, context)).text

    return {
        "OpenAPI operation (HTTP GET on loopback)": [
            WaySpec("bare httpx, a new `AsyncClient` per call", True, fresh_http, weather),
            WaySpec("bare httpx, one kept `AsyncClient`", False, kept_http, weather),
            WaySpec("Tusk `call(ApiTool, ...)`", False, tusk_api, weather),
        ],
        "MCP tool (streamable HTTP on loopback)": [
            WaySpec("`mcp` SDK, a new `Client` per call", True, fresh_mcp, "5"),
            WaySpec("`mcp` SDK, one kept `Client` session", False, kept_mcp, "5"),
            WaySpec("Tusk `call(McpTool, ...)`", False, tusk_mcp, "5"),
        ],
    }


def _client_ways(allow: AllowList) -> list[WaySpec]:
    """What making each way's HTTP client costs, without a request: most of a remote call."""

    async def bare() -> str:
        await httpx.AsyncClient().aclose()
        return ""

    async def guarded() -> str:
        await ssrf.guarded_client(allow).aclose()
        return ""

    async def mcp_guarded() -> str:
        await mcp_net.guarded_client(allow).aclose()
        return ""

    return [
        WaySpec("`httpx.AsyncClient()`", True, bare, ""),
        WaySpec("`tusk.net.ssrf.guarded_client` (OpenAPI tools)", False, guarded, ""),
        WaySpec("`tusk.tools.mcp_net.guarded_client` (MCP tools)", False, mcp_guarded, ""),
    ]


def _same(got: str, expected: str) -> bool:
    if expected.startswith("{"):
        return bool(json.loads(got) == json.loads(expected))
    return re.fullmatch(expected, got) is not None


async def _alternate(
    group: str, ways: list[WaySpec], calls: int, block: int, failures: list[str]
) -> list[WayResult]:
    """`calls` calls of each way, in blocks taking turns A B C C B A ..., after a warm-up."""
    latencies: dict[str, list[float]] = {way.name: [] for way in ways}
    for way in ways:
        for _ in range(WARMUP):
            await way.call()
    turn = 0
    while any(len(done) < calls for done in latencies.values()):
        for way in ways if turn % 2 == 0 else ways[::-1]:
            done = latencies[way.name]
            for _ in range(min(block, calls - len(done))):
                before = time.perf_counter()
                got = await way.call()
                done.append(time.perf_counter() - before)
                if not _same(got, way.expected):
                    failures.append(f"{group}, {way.name}: {got[:200]!r} is not {way.expected!r}")
        turn += 1
    return [
        WayResult(group, way.name, way.baseline, latencies[way.name], sum(latencies[way.name]))
        for way in ways
    ]


async def measure(api_url: str, mcp_url: str, calls: int, failures: list[str]) -> list[WayResult]:
    """Every way of calling each tool, `calls` times (local tools LOCAL_FACTOR times more)."""
    context = tool_context()
    local = {
        "built-in `current_time`": _local_ways(CurrentTime(), TIME_ARGUMENTS, context, CLOCK),
        "trivial test tool (`echo`)": _local_ways(Echo(), {"text": "hello"}, context, "hello"),
    }
    results: list[WayResult] = []
    for group, ways in local.items():
        results += await _alternate(
            group, ways, calls * LOCAL_FACTOR, BLOCK * LOCAL_FACTOR, failures
        )
    print("agents: local tool calls measured", file=sys.stderr, flush=True)
    allow = AllowList.from_settings(context.resources.settings)
    server = McpServer(mcp_url, timeout=30.0)
    spec = next(s for s in await list_tools(server, allow) if s.name == "add")
    async with httpx.AsyncClient() as http, Client(mcp_url) as mcp:
        remote = _remote_ways(api_url, mcp_url, context, http, mcp, McpTool(server, spec))
        for group, ways in remote.items():
            results += await _alternate(group, ways, calls, BLOCK, failures)
    few = max(WARMUP, calls // 4)
    results += await _alternate(CLIENTS, _client_ways(allow), few, BLOCK, failures)
    print("agents: remote tool calls measured", file=sys.stderr, flush=True)
    return results


# --- the report -------------------------------------------------------------------------------


def micros(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f}" if seconds >= 1e-4 else f"{seconds * 1e6:.1f}"


def section(results: list[WayResult], calls: int) -> list[str]:
    headers = ["tool", "way", "calls", "p50 (µs)", "p99 (µs)", "calls/s", "p50 ÷ baseline p50"]
    rows = []
    for row in results:
        base = next(r for r in results if r.group == row.group and r.baseline)
        stats = Stats.of(row.latencies)
        rows.append(
            [row.group, row.name + (" (baseline)" if row.baseline else ""), stats.n,
             micros(stats.p50), micros(stats.p99), f"{len(row.latencies) / row.seconds:,.0f}",
             "" if row.baseline else ratio(stats.p50, Stats.of(base.latencies).p50)]
        )  # fmt: skip
    return [
        "### Tool calls: `tusk.tools.call` against calling the tool directly",
        "Local tools: `tusk.tools.call` reads the JSON text of the arguments, coerces and checks "
        "them against the tool's JSON Schema, and runs the tool within its time limit; "
        "`AgentTool.call` adds the author's fixed parameters and Dify's tool meta. The baseline "
        "is the tool's own `invoke`. Remote tools, each served from the child process on "
        "loopback: an OpenAPI operation (`GET /weather/{city}?days=`) and an MCP tool (`add`, "
        "streamable HTTP, the `mcp` SDK's server). Tusk opens a connection for each call, through "
        "the SSRF guard (the MCP client also makes its handshake each time): the baseline does "
        "the same with the bare client; a kept client is shown too. Ways take turns in blocks "
        f"(A B C C B A ...), {calls * LOCAL_FACTOR} local and {calls} remote "
        f"calls of each after {WARMUP} untimed. The last rows time making and closing the "
        "HTTP client that each way makes per call (most of it is building TLS contexts, even "
        "for a plain-HTTP URL).",
        markdown_table(headers, rows, left=2),
    ]
