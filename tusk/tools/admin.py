"""What the console does with tools, in the shapes of Dify's console API: providers listed with
their tools, OpenAPI providers added from a spec (pasted or fetched by URL), MCP servers
registered and their tools refreshed."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tusk.config import Settings
from tusk.db.models.tools import ApiToolProvider, McpToolProvider
from tusk.errors import Forbidden, InvalidParam
from tusk.net.ssrf import AllowList
from tusk.tools import store
from tusk.tools.base import Tool, ToolError, ToolProvider
from tusk.tools.http import Outgoing, fetch
from tusk.tools.mcp import (
    McpServer,
    McpTool,
    McpToolSpec,
    McpUnavailable,
    list_tools,
    stdio_allowed,
)
from tusk.tools.openapi import MAX_SPEC_BYTES, ApiAuth, ApiProvider, read_spec
from tusk.tools.registry import builtin_providers
from tusk.tools.workflow_tool import workflow_providers

KINDS = ("builtin", "api", "mcp", "workflow")


def parameter_json(name: str, schema: Mapping[str, Any], required: bool) -> dict[str, Any]:
    """A JSON Schema property as one of Dify's tool parameters."""
    kind = schema.get("type", "string")
    described = str(schema.get("description") or "")
    shown = {"en_US": name, "zh_Hans": name}
    return {
        "name": name,
        "label": shown,
        "human_description": {"en_US": described, "zh_Hans": described},
        "llm_description": described,
        "type": {"integer": "number", "object": "object", "array": "array"}.get(kind, kind),
        "form": "llm",
        "required": required,
        "options": [{"value": v, "label": {"en_US": str(v)}} for v in schema.get("enum") or []],
        "default": schema.get("default"),
    }


def tool_json(tool: Tool) -> dict[str, Any]:
    properties = tool.parameters.get("properties") or {}
    required = set(tool.parameters.get("required") or [])
    label = tool.label or tool.name
    return {
        "author": "",
        "name": tool.name,
        "label": {"en_US": label, "zh_Hans": label},
        "description": {"en_US": tool.description, "zh_Hans": tool.description},
        "parameters": [parameter_json(n, s or {}, n in required) for n, s in properties.items()],
        "input_schema": tool.parameters,
        "labels": [],
    }


def provider_json(provider: ToolProvider, kind: str, **extra: Any) -> dict[str, Any]:
    label = provider.label or provider.name
    return {
        "id": provider.name,
        "author": "Tusk" if kind == "builtin" else "",
        "name": provider.name,
        "label": {"en_US": label, "zh_Hans": label},
        "description": {"en_US": provider.description, "zh_Hans": provider.description},
        "icon": "",
        "type": kind,
        "is_team_authorization": True,
        "allow_delete": kind != "builtin",
        "labels": [],
        "tools": [tool_json(t) for t in provider.tools()],
        **extra,
    }


def mcp_json(row: McpToolProvider) -> dict[str, Any]:
    label = row.name
    return {
        "id": str(row.id),
        "author": "",
        "name": row.name,
        "label": {"en_US": label, "zh_Hans": label},
        "description": {"en_US": "", "zh_Hans": ""},
        "icon": row.icon or "",
        "type": "mcp",
        "server_url": row.server_url,
        "server_identifier": row.server_identifier,
        "transport": row.transport,
        "configuration": {"timeout": row.timeout, "sse_read_timeout": row.sse_read_timeout},
        "is_team_authorization": True,
        "allow_delete": True,
        "labels": [],
        "tools": [mcp_tool_json(spec) for spec in store.mcp_tools(row)],
        "updated_at": int(row.tools_updated_at.timestamp()) if row.tools_updated_at else None,
    }


def mcp_tool_json(spec: McpToolSpec) -> dict[str, Any]:
    return tool_json(McpTool(McpServer(""), spec))


async def list_providers(
    db: AsyncSession, secret_key: str, workspace_id: uuid.UUID, kind: str | None = None
) -> list[dict[str, Any]]:
    if kind is not None and kind not in KINDS:
        raise InvalidParam(f"type must be one of {', '.join(KINDS)}", params="type")
    found: list[dict[str, Any]] = []
    if kind in (None, "builtin"):
        found += [provider_json(p, "builtin") for p in builtin_providers().values()]
    if kind in (None, "api"):
        for row in await store.list_api_providers(db, workspace_id):
            provider = store.api_provider(secret_key, row)
            found.append(provider_json(provider, "api", id=str(row.id), icon=row.icon))
    if kind in (None, "mcp"):
        found += [mcp_json(row) for row in await store.list_mcp(db, workspace_id)]
    if kind in (None, "workflow"):
        found += [provider_json(p, "workflow") for p in await workflow_providers(db, workspace_id)]
    return found


def builtin_tools(provider: str) -> list[dict[str, Any]]:
    found = builtin_providers().get(provider)
    if found is None:
        raise InvalidParam(f"no built-in tool provider {provider!r}", params="provider")
    return [tool_json(t) for t in found.tools()]


# --- OpenAPI providers ---------------------------------------------------------------------------


def parse_schema(text: str) -> dict[str, Any]:
    """Dify's answer to "what tools would this spec give?"."""
    provider = ApiProvider("preview", read_spec(text), ApiAuth())
    return {
        "schema_type": "openapi",
        "parameters_schema": [tool_json(t) for t in provider.tools()],
        "credentials_schema": [],
        "warning": {},
    }


async def remote_schema(settings: Settings, url: str) -> dict[str, Any]:
    if not url.startswith(("http://", "https://")):
        raise InvalidParam("url must be an http:// or https:// URL", params="url")
    try:
        page = await fetch(
            AllowList.from_settings(settings),
            Outgoing("GET", url),
            limit=MAX_SPEC_BYTES,
            timeout=20,
        )
    except ToolError as exc:
        raise InvalidParam(f"the spec cannot be fetched: {exc.message}", params="url") from None
    if page.status_code >= 400 or page.truncated:
        problem = "is too large" if page.truncated else f"answered HTTP {page.status_code}"
        raise InvalidParam(f"the spec at {url} {problem}", params="url")
    text = page.content.decode("utf-8", "replace")
    read_spec(text, base_url=url)
    return {"schema": text}


def api_tools(secret_key: str, row: ApiToolProvider) -> list[dict[str, Any]]:
    return [tool_json(t) for t in store.api_provider(secret_key, row).tools()]


def api_provider_json(secret_key: str, row: ApiToolProvider) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "provider": row.name,
        "schema_type": row.schema_type,
        "schema": row.schema,
        "tools": api_tools(secret_key, row),
        "icon": row.icon,
        "description": row.description,
        "credentials": store.masked(store.api_credentials(secret_key, row)),
        "privacy_policy": row.privacy_policy,
        "custom_disclaimer": row.custom_disclaimer,
        "labels": [],
    }


# --- MCP servers -----------------------------------------------------------------------------


def check_transport(settings: Settings, data: store.McpInput, is_admin: bool) -> None:
    if data.transport != "stdio":
        return
    if not stdio_allowed(settings):
        raise Forbidden("stdio MCP servers are turned off here (TUSK_MCP_STDIO_ENABLED)")
    if not is_admin:
        raise Forbidden("Only the workspace's owner and admins may add stdio MCP servers.")


async def refresh_mcp(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    secret_key: str,
    workspace_id: uuid.UUID,
    key: str,
) -> dict[str, Any]:
    """List the server's tools again and keep them; the server's error when it cannot."""
    async with sessions.begin() as db:
        row = await store.get_mcp(db, workspace_id, key)
        server = store.mcp_server(secret_key, row)
    if server.transport == "stdio" and not stdio_allowed(settings):
        raise Forbidden("stdio MCP servers are turned off here (TUSK_MCP_STDIO_ENABLED)")
    try:
        specs = await list_tools(server, AllowList.from_settings(settings))
    except McpUnavailable as exc:
        raise InvalidParam(exc.message, params="server_url") from None
    async with sessions.begin() as db:
        row = await store.get_mcp(db, workspace_id, key)
        store.keep_mcp_tools(row, specs)
        return mcp_json(row)


def tools_of(specs: Sequence[McpToolSpec]) -> list[dict[str, Any]]:
    return [mcp_tool_json(spec) for spec in specs]
