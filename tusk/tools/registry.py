"""Finding tools: built-in providers through the `tusk.tools` entry points, a workspace's OpenAPI
and MCP providers and its published workflows from the database, and Dify's built-in provider
ids mapped to their Tusk equivalents."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncSession

from tusk.db.models.tools import ApiToolProvider, McpToolProvider
from tusk.errors import NotFound
from tusk.tools import store
from tusk.tools.base import Tool, ToolNotFound, ToolProvider
from tusk.tools.mcp import McpProvider
from tusk.tools.workflow_tool import workflow_provider

GROUP = "tusk.tools"
ProviderType = Literal["builtin", "api", "mcp", "workflow"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Equivalent:
    provider: str
    tool: str


# Dify built-in tools that Tusk has, by (provider, tool). Others fail by name.
DIFY_BUILTINS: dict[tuple[str, str], Equivalent] = {
    ("time", "current_time"): Equivalent("time", "current_time"),
    ("webscraper", "webscraper"): Equivalent("webpage", "fetch_webpage"),
    ("code", "simple_code"): Equivalent("code", "run_code"),
}


@cache
def builtin_providers() -> dict[str, ToolProvider]:
    found: dict[str, ToolProvider] = {}
    for entry in entry_points(group=GROUP):
        try:
            cls = entry.load()
            provider = cls()
        except Exception as exc:  # one broken package must not hide every tool
            log.error("tool provider %s (%s) cannot be loaded: %s", entry.name, entry.value, exc)
            continue
        if isinstance(provider, ToolProvider):
            found[entry.name] = provider
    return found


def plain_provider_id(provider_id: str) -> str:
    """Dify's plugin ids ("langgenius/time/time") name the provider last."""
    return provider_id.rstrip("/").rsplit("/", 1)[-1]


def builtin_equivalent(provider_id: str, tool_name: str) -> Equivalent:
    """The Tusk built-in tool for a built-in provider and tool named as in Tusk or in Dify."""
    name = plain_provider_id(provider_id)
    provider = builtin_providers().get(name)
    if provider is not None and any(t.name == tool_name for t in provider.tools()):
        return Equivalent(name, tool_name)
    equivalent = DIFY_BUILTINS.get((name, tool_name))
    if equivalent is not None and equivalent.provider in builtin_providers():
        return equivalent
    raise ToolNotFound(
        f"the built-in tool provider {provider_id!r} (tool {tool_name!r}) has no Tusk "
        f"equivalent; Tusk's built-in tools are: {', '.join(sorted(builtin_providers()))}"
    )


async def find_provider(
    db: AsyncSession,
    secret_key: str,
    workspace_id: uuid.UUID,
    provider_type: str,
    provider_id: str,
) -> ToolProvider:
    """A provider of the workspace by Dify's provider type and id (or name)."""
    try:
        match provider_type:
            case "builtin" | "plugin":
                return builtin_providers()[plain_provider_id(provider_id)]
            case "api":
                return store.api_provider(secret_key, await _api_row(db, workspace_id, provider_id))
            case "mcp":
                row = await store.get_mcp(db, workspace_id, provider_id)
                return await _mcp_provider(secret_key, row)
            case "workflow":
                return await workflow_provider(db, workspace_id, provider_id)
    except (KeyError, NotFound):
        pass
    raise ToolNotFound(f"no {provider_type} tool provider {provider_id!r} in this workspace")


async def _api_row(db: AsyncSession, workspace_id: uuid.UUID, key: str) -> ApiToolProvider:
    try:
        row = await db.get(ApiToolProvider, uuid.UUID(key))
    except ValueError:
        row = None
    if row is not None and row.workspace_id == workspace_id:
        return row
    return await store.get_api_provider(db, workspace_id, key)


async def _mcp_provider(secret_key: str, row: McpToolProvider) -> ToolProvider:
    return McpProvider(row.name, store.mcp_server(secret_key, row), store.mcp_tools(row))


async def find_tool(
    db: AsyncSession,
    secret_key: str,
    workspace_id: uuid.UUID,
    provider_type: str,
    provider_id: str,
    tool_name: str,
) -> Tool:
    if provider_type in ("builtin", "plugin"):
        equivalent = builtin_equivalent(provider_id, tool_name)
        return builtin_providers()[equivalent.provider].tool(equivalent.tool)
    provider = await find_provider(db, secret_key, workspace_id, provider_type, provider_id)
    return provider.tool(tool_name)
