"""Tool providers in the console, at Dify's paths: built-in, OpenAPI (`api`), MCP and workflow
providers listed with their tools; OpenAPI providers added, read, changed and deleted; MCP
servers registered, changed, deleted and their tools refreshed."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from tusk.accounts.service import ADMIN_ROLES, ConsoleUser
from tusk.api.deps import ConsoleUserDep, ServicesDep
from tusk.errors import InvalidParam
from tusk.tools import admin, store

router = APIRouter(prefix="/console/api/workspaces/current", tags=["console"])
SUCCESS = {"result": "success"}


class ApiProviderBody(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    provider: str
    schema_text: str = Field(alias="schema")
    schema_type: Literal["openapi", "openapi_yaml", "swagger"] = "openapi"
    credentials: dict[str, Any] = {}
    icon: dict[str, Any] = {}
    description: str = ""
    privacy_policy: str | None = ""
    custom_disclaimer: str | None = ""
    original_provider: str | None = None

    def as_input(self) -> store.ApiProviderInput:
        return store.ApiProviderInput(
            self.provider,
            self.schema_text,
            self.credentials,
            self.icon,
            self.description,
            self.privacy_policy or "",
            self.custom_disclaimer or "",
        )


class ProviderName(BaseModel):
    provider: str


class SchemaBody(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    schema_text: str = Field(alias="schema")


class McpBody(BaseModel):
    name: str
    server_url: str
    server_identifier: str
    transport: Literal["streamable_http", "sse", "stdio"] | None = None
    icon: str | dict[str, Any] = ""
    icon_type: str = ""
    icon_background: str = ""
    headers: dict[str, str] = {}
    configuration: dict[str, Any] = {}
    provider_id: str | None = None

    def as_input(self) -> store.McpInput:
        transport = self.transport or (
            "sse" if self.server_url.rstrip("/").endswith("/sse") else "streamable_http"
        )
        icon = (
            self.icon
            if isinstance(self.icon, dict)
            else {"content": self.icon, "type": self.icon_type, "background": self.icon_background}
        )
        return store.McpInput(
            name=self.name,
            server_identifier=self.server_identifier,
            server_url=self.server_url,
            transport=transport,
            headers=self.headers,
            timeout=float(self.configuration.get("timeout") or 30),
            sse_read_timeout=float(self.configuration.get("sse_read_timeout") or 300),
            icon=icon,
        )


class McpId(BaseModel):
    provider_id: str


@router.get("/tool-providers")
async def list_providers(
    user: ConsoleUserDep, services: ServicesDep, type: str | None = None
) -> list[dict[str, Any]]:
    async with services.transaction() as db:
        return await admin.list_providers(db, services.runtime.secret_key, user.workspace_id, type)


@router.get("/tools/{kind}")
async def list_providers_of_kind(
    kind: str, user: ConsoleUserDep, services: ServicesDep
) -> list[dict[str, Any]]:
    async with services.transaction() as db:
        return await admin.list_providers(db, services.runtime.secret_key, user.workspace_id, kind)


@router.get("/tool-provider/builtin/{provider}/tools")
async def builtin_tools(provider: str, user: ConsoleUserDep) -> list[dict[str, Any]]:
    return admin.builtin_tools(provider)


# --- OpenAPI providers -------------------------------------------------------------------------


@router.post("/tool-provider/api/add")
async def add_api_provider(
    body: ApiProviderBody, user: ConsoleUserDep, services: ServicesDep
) -> dict[str, Any]:
    user.require_admin()
    async with services.transaction() as db:
        await store.add_api_provider(
            db, services.runtime.secret_key, user.workspace_id, body.as_input(), user.account.id
        )
    return SUCCESS


@router.post("/tool-provider/api/update")
async def update_api_provider(
    body: ApiProviderBody, user: ConsoleUserDep, services: ServicesDep
) -> dict[str, Any]:
    user.require_admin()
    original = body.original_provider or body.provider
    async with services.transaction() as db:
        await store.update_api_provider(
            db, services.runtime.secret_key, user.workspace_id, original, body.as_input()
        )
    return SUCCESS


@router.post("/tool-provider/api/delete")
async def delete_api_provider(
    body: ProviderName, user: ConsoleUserDep, services: ServicesDep
) -> dict[str, Any]:
    user.require_admin()
    async with services.transaction() as db:
        await store.delete_api_provider(db, user.workspace_id, body.provider)
    return SUCCESS


@router.get("/tool-provider/api/get")
async def get_api_provider(
    provider: str, user: ConsoleUserDep, services: ServicesDep
) -> dict[str, Any]:
    async with services.transaction() as db:
        row = await store.get_api_provider(db, user.workspace_id, provider)
        return admin.api_provider_json(services.runtime.secret_key, row)


@router.get("/tool-provider/api/tools")
async def api_provider_tools(
    provider: str, user: ConsoleUserDep, services: ServicesDep
) -> list[dict[str, Any]]:
    async with services.transaction() as db:
        row = await store.get_api_provider(db, user.workspace_id, provider)
        return admin.api_tools(services.runtime.secret_key, row)


@router.post("/tool-provider/api/schema")
async def parse_schema(body: SchemaBody, user: ConsoleUserDep) -> dict[str, Any]:
    return admin.parse_schema(body.schema_text)


@router.get("/tool-provider/api/remote")
async def remote_schema(url: str, user: ConsoleUserDep, services: ServicesDep) -> dict[str, Any]:
    return await admin.remote_schema(services.settings, url)


# --- MCP servers -------------------------------------------------------------------------------


def _is_admin(user: ConsoleUser) -> bool:
    return user.role in ADMIN_ROLES


@router.post("/tool-provider/mcp")
async def add_mcp(body: McpBody, user: ConsoleUserDep, services: ServicesDep) -> dict[str, Any]:
    user.require_editor()
    data = body.as_input()
    admin.check_transport(services.settings, data, _is_admin(user))
    secret = services.runtime.secret_key
    async with services.transaction() as db:
        row = await store.add_mcp(db, secret, user.workspace_id, data, user.account.id)
        key = str(row.id)
    return await _refreshed_or_as_is(services, user.workspace_id, key)


async def _refreshed_or_as_is(services: Any, workspace_id: Any, key: str) -> dict[str, Any]:
    """The provider with its tools; when the server cannot be reached yet, as stored and why."""
    try:
        return await admin.refresh_mcp(
            services.sessions, services.settings, services.runtime.secret_key, workspace_id, key
        )
    except InvalidParam as exc:
        async with services.transaction() as db:
            row = await store.get_mcp(db, workspace_id, key)
            return {**admin.mcp_json(row), "error": exc.message}


@router.put("/tool-provider/mcp")
async def update_mcp(body: McpBody, user: ConsoleUserDep, services: ServicesDep) -> dict[str, Any]:
    user.require_editor()
    if not body.provider_id:
        raise InvalidParam("provider_id is required", params="provider_id")
    data = body.as_input()
    admin.check_transport(services.settings, data, _is_admin(user))
    async with services.transaction() as db:
        await store.update_mcp(
            db, services.runtime.secret_key, user.workspace_id, body.provider_id, data
        )
    return await _refreshed_or_as_is(services, user.workspace_id, body.provider_id)


@router.delete("/tool-provider/mcp")
async def delete_mcp(body: McpId, user: ConsoleUserDep, services: ServicesDep) -> dict[str, Any]:
    user.require_editor()
    async with services.transaction() as db:
        await store.delete_mcp(db, user.workspace_id, body.provider_id)
    return SUCCESS


@router.get("/tool-provider/mcp/tools/{provider_id}")
async def mcp_tools(
    provider_id: str, user: ConsoleUserDep, services: ServicesDep
) -> dict[str, Any]:
    async with services.transaction() as db:
        row = await store.get_mcp(db, user.workspace_id, provider_id)
        return {"tools": admin.tools_of(store.mcp_tools(row))}


@router.get("/tool-provider/mcp/update/{provider_id}")
async def refresh_mcp(
    provider_id: str, user: ConsoleUserDep, services: ServicesDep
) -> dict[str, Any]:
    refreshed = await admin.refresh_mcp(
        services.sessions,
        services.settings,
        services.runtime.secret_key,
        user.workspace_id,
        provider_id,
    )
    return {"tools": refreshed["tools"]}
