"""The MCP endpoint's SDK side (tusk.api.routes.mcp_server): an SDK server per request whose
one tool runs the app. Imported at the first MCP request: the SDK takes about 22 MiB that an API
process serving no MCP client does not need."""

from __future__ import annotations

from typing import Any

from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.types import (
    CallToolRequestParams,
    CallToolResult,
    ListToolsResult,
    PaginatedRequestParams,
    TextContent,
    Tool,
)
from starlette.types import Receive, Scope, Send

from tusk import __version__
from tusk.apps import mcp_app
from tusk.db.models import App
from tusk.db.models.agent import AppMcpServer


def app_server(deps: mcp_app.McpDeps, server: AppMcpServer, app: App) -> Server[Any]:
    """An SDK server whose one tool runs the app."""
    name = mcp_app.app_tool_name(app)

    async def list_tools(ctx: Any, params: PaginatedRequestParams | None) -> ListToolsResult:
        async with deps.sessions() as db:
            schema = await mcp_app.tool_schema(db, app, server)
        tool = Tool(name=name, description=server.description or app.name, input_schema=schema)
        return ListToolsResult(tools=[tool])

    async def call_tool(ctx: Any, params: CallToolRequestParams) -> CallToolResult:
        if params.name != name:
            text, failed = f"Unknown tool {params.name!r}: this server has {name!r}.", True
        else:
            outcome = await mcp_app.call_app(deps, server, app, params.arguments or {})
            text, failed = outcome.text, outcome.is_error
        return CallToolResult(content=[TextContent(type="text", text=text)], is_error=failed)

    return Server(
        "Tusk",
        version=__version__,
        instructions=server.description,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def answer(
    deps: mcp_app.McpDeps,
    server: AppMcpServer,
    app: App,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    """Answer one MCP request, statelessly."""
    manager = StreamableHTTPSessionManager(
        app=app_server(deps, server, app), stateless=True, json_response=True
    )
    async with manager.run():
        await manager.handle_request(scope, receive, send)
