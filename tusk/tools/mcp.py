"""MCP tools through the official `mcp` SDK: a registered server's tools listed (and kept, to be
refreshed on demand) and called over streamable HTTP or SSE, through the SSRF guard, with the
server's auth headers; stdio servers (local commands) only where an administrator allowed them.

Each call opens its own connection, so no session outlives a request, and the whole exchange
(connect, handshake, call) is bounded by the server's timeout: a server that is down or slow
gives a clear tool error in time."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tusk.config import Settings
from tusk.net.ssrf import AllowList
from tusk.tools.base import Tool, ToolContext, ToolError, ToolProvider, ToolResult

Transport = Literal["streamable_http", "sse", "stdio"]
MAX_PAGES = 20


class McpUnavailable(ToolError):
    code = "mcp_unavailable"


@dataclass(frozen=True)
class McpServer:
    url: str  # for stdio, the command line
    transport: Transport = "streamable_http"
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 30.0
    sse_read_timeout: float = 300.0
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def shown(self) -> str:
        return self.url.split("?", 1)[0] if self.transport != "stdio" else self.url.split()[0]


@dataclass(frozen=True)
class McpToolSpec:
    name: str
    description: str
    input_schema: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "inputSchema": self.input_schema,
        }

    @classmethod
    def of_json(cls, raw: Mapping[str, Any]) -> McpToolSpec:
        schema = raw.get("inputSchema") or {"type": "object", "properties": {}}
        return cls(str(raw["name"]), str(raw.get("description") or ""), dict(schema))


def stdio_allowed(settings: Settings) -> bool:
    return settings.mcp_stdio_enabled


async def list_tools(server: McpServer, allow: AllowList) -> list[McpToolSpec]:
    """The server's tools, or McpUnavailable within the server's timeout."""
    from tusk.tools import mcp_client  # the SDK, at the first use

    return await mcp_client.list_tools(server, allow)


class McpTool(Tool):
    def __init__(self, server: McpServer, spec: McpToolSpec) -> None:
        self.server = server
        self.name = spec.name
        self.label = spec.name
        self.description = spec.description
        self.parameters = spec.input_schema

    async def invoke(self, params: dict[str, Any], context: ToolContext) -> ToolResult:
        allow = AllowList.from_settings(context.resources.settings)
        if self.server.transport == "stdio" and not stdio_allowed(context.resources.settings):
            raise ToolError(
                "stdio MCP servers are turned off on this Tusk (TUSK_MCP_STDIO_ENABLED)"
            )
        from tusk.tools import mcp_client  # the SDK, at the first use

        return await mcp_client.call_tool(self.server, allow, self.name, params, context)


class McpProvider(ToolProvider):
    def __init__(self, name: str, server: McpServer, specs: Sequence[McpToolSpec]) -> None:
        self.name = self.label = name
        self._tools = tuple(McpTool(server, spec) for spec in specs)

    def tools(self) -> Sequence[Tool]:
        return self._tools
