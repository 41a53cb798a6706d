"""The `mcp` SDK's side of MCP tools (tusk.tools.mcp): connecting through the SSRF guard,
listing and calling tools, turning results into Tusk's. Imported at the first MCP call: the SDK
takes about 22 MiB that an API process serving no MCP tool does not need."""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx2
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import (
    AudioContent,
    BlobResourceContents,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    TextResourceContents,
)

from tusk.errors import TuskError
from tusk.net.ssrf import AllowList
from tusk.tools.base import ToolContext, ToolError, ToolResult
from tusk.tools.files import decoded, save_file
from tusk.tools.mcp import MAX_PAGES, McpServer, McpToolSpec, McpUnavailable
from tusk.tools.mcp_net import guarded_client


def _transport(server: McpServer, allow: AllowList) -> AbstractAsyncContextManager[Any]:
    timeout = httpx2.Timeout(server.timeout, read=server.sse_read_timeout)
    if server.transport == "sse":

        def factory(
            headers: dict[str, str] | None = None,
            timeout: httpx2.Timeout | None = None,
            auth: httpx2.Auth | None = None,
        ) -> httpx2.AsyncClient:
            return guarded_client(allow, headers, timeout)

        return sse_client(
            server.url,
            headers=dict(server.headers),
            timeout=server.timeout,
            sse_read_timeout=server.sse_read_timeout,
            httpx_client_factory=factory,
        )
    client = guarded_client(allow, server.headers, timeout)
    return streamable_http_client(server.url, http_client=client)


def _target(server: McpServer, allow: AllowList) -> Any:
    if server.transport == "stdio":
        argv = shlex.split(server.url)
        if not argv:
            raise ToolError("the stdio MCP server has no command")
        return StdioServerParameters(command=argv[0], args=argv[1:], env=dict(server.env) or None)
    return _transport(server, allow)


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside the exception groups of anyio's task groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _problem(server: McpServer, exc: BaseException) -> McpUnavailable:
    leaf = _leaf(exc)
    where = f"the MCP server {server.shown}"
    if isinstance(leaf, TimeoutError | httpx2.TimeoutException):
        return McpUnavailable(f"{where} did not answer within {server.timeout:g} seconds")
    if isinstance(leaf, MCPError):
        return McpUnavailable(f"{where} answered with an error: {leaf.error.message}")
    if isinstance(leaf, TuskError):
        return McpUnavailable(f"{where} cannot be used: {leaf.message}")
    if isinstance(leaf, httpx2.HTTPStatusError):
        return McpUnavailable(f"{where} answered HTTP {leaf.response.status_code}")
    detail = str(leaf) or type(leaf).__name__
    return McpUnavailable(f"{where} cannot be reached: {detail}")


@asynccontextmanager
async def _connected(server: McpServer, allow: AllowList) -> AsyncIterator[Client]:
    async with Client(_target(server, allow), read_timeout_seconds=server.timeout) as client:
        yield client


async def _list(server: McpServer, allow: AllowList) -> list[McpToolSpec]:
    found: list[McpToolSpec] = []
    async with _connected(server, allow) as client:
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            page = await client.list_tools(cursor=cursor)
            found += [
                McpToolSpec(t.name, t.description or "", dict(t.input_schema)) for t in page.tools
            ]
            cursor = page.next_cursor
            if not cursor:
                break
    return found


async def _call(
    server: McpServer, allow: AllowList, name: str, arguments: dict[str, Any]
) -> CallToolResult:
    async with _connected(server, allow) as client:
        return await client.call_tool(name, arguments)


async def list_tools(server: McpServer, allow: AllowList) -> list[McpToolSpec]:
    """The server's tools, or McpUnavailable within the server's timeout."""
    try:
        async with asyncio.timeout(server.timeout):
            return await _list(server, allow)
    except Exception as exc:
        raise _problem(server, exc) from None


async def call_tool(
    server: McpServer, allow: AllowList, name: str, arguments: dict[str, Any], context: ToolContext
) -> ToolResult:
    try:
        async with asyncio.timeout(server.timeout):
            result = await _call(server, allow, name, arguments)
    except Exception as exc:
        raise _problem(server, exc) from None
    return await as_result(result, context)


# --- results -----------------------------------------------------------------------------------


async def _block(block: Any, context: ToolContext, index: int) -> tuple[str, dict[str, Any] | None]:
    """A content block as (text, file)."""
    if isinstance(block, TextContent):
        return block.text, None
    if isinstance(block, ImageContent | AudioContent):
        kind = "image" if isinstance(block, ImageContent) else "audio"
        data = decoded(block.data)
        return "", await save_file(context, data, f"{kind}-{index}", block.mime_type)
    if isinstance(block, EmbeddedResource):
        resource = block.resource
        if isinstance(resource, TextResourceContents):
            return resource.text, None
        if isinstance(resource, BlobResourceContents):
            mime = resource.mime_type or "application/octet-stream"
            name = str(resource.uri).rsplit("/", 1)[-1] or f"resource-{index}"
            return "", await save_file(context, decoded(resource.blob), name, mime)
    if isinstance(block, ResourceLink):
        return f"Link: {block.uri}", None
    return "", None


async def as_result(result: CallToolResult, context: ToolContext) -> ToolResult:
    texts: list[str] = []
    files: list[dict[str, Any]] = []
    for index, block in enumerate(result.content, start=1):
        text, file = await _block(block, context, index)
        if text:
            texts.append(text)
        if file:
            files.append(file)
    text = "\n".join(texts)
    if result.is_error:
        return ToolResult.error(text or "the MCP tool reported an error without a message")
    structured = result.structured_content
    objects = (
        []
        if structured is None
        else [structured if isinstance(structured, dict) else {"data": structured}]
    )
    return ToolResult(text=text, json=objects, files=files)
