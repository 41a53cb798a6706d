"""A workspace's tool sources in PostgreSQL: OpenAPI providers, MCP servers and built-in
credentials. Secrets are sealed with the model credentials' scheme (`tusk.models.credentials`),
bound to the workspace and the row, and never returned whole."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from tusk import crypto
from tusk.db.models.tools import (
    MCP_TRANSPORTS,
    ApiToolProvider,
    BuiltinToolCredential,
    McpToolProvider,
)
from tusk.errors import InvalidParam, NotFound, TuskError
from tusk.models import credentials as sealing
from tusk.models.credentials import RotationFailed
from tusk.tools.mcp import McpServer, McpToolSpec
from tusk.tools.openapi import ApiAuth, ApiProvider, read_spec

HIDDEN = "[__HIDDEN__]"
SECRET_FIELDS = ("api_key_value",)


class ProviderExists(TuskError):
    code, status = "provider_exists", 400


def _seal(secret_key: str, workspace_id: uuid.UUID, scope: str, values: Mapping[str, Any]) -> bytes:
    plain = {k: str(v) for k, v in values.items()}
    return sealing.seal(secret_key, workspace_id, f"tool:{scope}", plain)


def _unseal(secret_key: str, workspace_id: uuid.UUID, scope: str, blob: bytes) -> dict[str, str]:
    return sealing.unseal(secret_key, workspace_id, f"tool:{scope}", blob)


def masked(values: Mapping[str, str], secret: Sequence[str] = SECRET_FIELDS) -> dict[str, str]:
    return {k: crypto.mask(v) if k in secret else v for k, v in values.items()}


def kept(new: Mapping[str, Any], old: Mapping[str, str]) -> dict[str, Any]:
    """What the console sends back masked (or hidden) keeps its stored value."""
    return {
        k: old[k] if k in old and v in (HIDDEN, crypto.mask(old[k])) else v for k, v in new.items()
    }


# --- OpenAPI providers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiProviderInput:
    name: str
    schema: str
    credentials: Mapping[str, Any] = field(default_factory=dict)
    icon: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    privacy_policy: str = ""
    custom_disclaimer: str = ""


def _check_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= 255:
        raise InvalidParam("the provider name must have 1 to 255 characters", params="provider")
    return name


async def get_api_provider(db: AsyncSession, workspace_id: uuid.UUID, name: str) -> ApiToolProvider:
    query = select(ApiToolProvider).where(
        ApiToolProvider.workspace_id == workspace_id, ApiToolProvider.name == name
    )
    row = (await db.execute(query)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no API tool provider named {name!r} in this workspace")
    return row


async def _name_free(db: AsyncSession, workspace_id: uuid.UUID, name: str, model: Any) -> None:
    query = select(model.id).where(model.workspace_id == workspace_id, model.name == name)
    if (await db.execute(query)).first() is not None:
        raise ProviderExists(f"a tool provider named {name!r} already exists")


def _fill(row: ApiToolProvider, data: ApiProviderInput, secret_key: str) -> None:
    read_spec(data.schema)  # refuses an unusable spec with the reason
    ApiAuth.of(data.credentials)
    row.name = _check_name(data.name)
    row.schema = data.schema
    row.icon = dict(data.icon)
    row.description = data.description
    row.privacy_policy = data.privacy_policy
    row.custom_disclaimer = data.custom_disclaimer
    row.encrypted_credentials = _seal(
        secret_key, row.workspace_id, f"api:{row.id}", data.credentials
    )


async def add_api_provider(
    db: AsyncSession,
    secret_key: str,
    workspace_id: uuid.UUID,
    data: ApiProviderInput,
    account_id: uuid.UUID | None = None,
) -> ApiToolProvider:
    await _name_free(db, workspace_id, _check_name(data.name), ApiToolProvider)
    row = ApiToolProvider(id=uuid.uuid4(), workspace_id=workspace_id, created_by=account_id)
    _fill(row, data, secret_key)
    db.add(row)
    await db.flush()
    return row


async def update_api_provider(
    db: AsyncSession,
    secret_key: str,
    workspace_id: uuid.UUID,
    original: str,
    data: ApiProviderInput,
) -> ApiToolProvider:
    row = await get_api_provider(db, workspace_id, original)
    if _check_name(data.name) != row.name:
        await _name_free(db, workspace_id, data.name.strip(), ApiToolProvider)
    old = api_credentials(secret_key, row)
    data = ApiProviderInput(**{**data.__dict__, "credentials": kept(data.credentials, old)})
    _fill(row, data, secret_key)
    row.updated_at = datetime.now(UTC)
    return row


async def delete_api_provider(db: AsyncSession, workspace_id: uuid.UUID, name: str) -> None:
    row = await get_api_provider(db, workspace_id, name)
    await db.delete(row)


async def list_api_providers(db: AsyncSession, workspace_id: uuid.UUID) -> list[ApiToolProvider]:
    query = select(ApiToolProvider).where(ApiToolProvider.workspace_id == workspace_id)
    return list((await db.execute(query.order_by(ApiToolProvider.name))).scalars())


def api_credentials(secret_key: str, row: ApiToolProvider) -> dict[str, str]:
    return _unseal(secret_key, row.workspace_id, f"api:{row.id}", row.encrypted_credentials)


def api_provider(secret_key: str, row: ApiToolProvider) -> ApiProvider:
    auth = ApiAuth.of(api_credentials(secret_key, row))
    return ApiProvider(row.name, read_spec(row.schema), auth)


# --- MCP servers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class McpInput:
    name: str
    server_identifier: str
    server_url: str
    transport: str = "streamable_http"
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 30.0
    sse_read_timeout: float = 300.0
    icon: Mapping[str, Any] = field(default_factory=dict)


def _check_mcp(data: McpInput) -> None:
    if data.transport not in MCP_TRANSPORTS:
        raise InvalidParam(
            f"transport must be one of {', '.join(MCP_TRANSPORTS)}", params="transport"
        )
    if data.transport != "stdio" and not data.server_url.startswith(("http://", "https://")):
        raise InvalidParam("server_url must be an http:// or https:// URL", params="server_url")
    if not data.server_identifier.strip() or len(data.server_identifier) > 64:
        raise InvalidParam(
            "server_identifier must have 1 to 64 characters", params="server_identifier"
        )
    if not 0 < data.timeout <= 600 or not 0 < data.sse_read_timeout <= 3600:
        raise InvalidParam("timeouts must be positive (timeout at most 600 s)", params="timeout")


def _fill_mcp(row: McpToolProvider, data: McpInput, secret_key: str) -> None:
    _check_mcp(data)
    row.name = _check_name(data.name)
    row.server_identifier = data.server_identifier.strip()
    row.server_url = data.server_url.strip()
    row.transport = data.transport
    row.timeout = data.timeout
    row.sse_read_timeout = data.sse_read_timeout
    row.icon = dict(data.icon)
    row.encrypted_config = _seal(secret_key, row.workspace_id, f"mcp:{row.id}", data.headers)


async def get_mcp(db: AsyncSession, workspace_id: uuid.UUID, key: str) -> McpToolProvider:
    """By id or server identifier."""
    query = select(McpToolProvider).where(McpToolProvider.workspace_id == workspace_id)
    try:
        query = query.where(McpToolProvider.id == uuid.UUID(key))
    except ValueError:
        query = query.where(McpToolProvider.server_identifier == key)
    row = (await db.execute(query)).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no MCP server {key!r} in this workspace")
    return row


async def add_mcp(
    db: AsyncSession,
    secret_key: str,
    workspace_id: uuid.UUID,
    data: McpInput,
    account_id: uuid.UUID | None = None,
) -> McpToolProvider:
    await _name_free(db, workspace_id, _check_name(data.name), McpToolProvider)
    taken = select(McpToolProvider.id).where(
        McpToolProvider.workspace_id == workspace_id,
        McpToolProvider.server_identifier == data.server_identifier.strip(),
    )
    if (await db.execute(taken)).first() is not None:
        raise ProviderExists(f"an MCP server {data.server_identifier!r} already exists")
    row = McpToolProvider(id=uuid.uuid4(), workspace_id=workspace_id, created_by=account_id)
    _fill_mcp(row, data, secret_key)
    db.add(row)
    await db.flush()
    return row


async def update_mcp(
    db: AsyncSession, secret_key: str, workspace_id: uuid.UUID, key: str, data: McpInput
) -> McpToolProvider:
    row = await get_mcp(db, workspace_id, key)
    if _check_name(data.name) != row.name:
        await _name_free(db, workspace_id, data.name.strip(), McpToolProvider)
    headers = kept(data.headers, mcp_headers(secret_key, row))
    _fill_mcp(row, McpInput(**{**data.__dict__, "headers": headers}), secret_key)
    row.updated_at = datetime.now(UTC)
    return row


async def delete_mcp(db: AsyncSession, workspace_id: uuid.UUID, key: str) -> None:
    await db.delete(await get_mcp(db, workspace_id, key))


async def list_mcp(db: AsyncSession, workspace_id: uuid.UUID) -> list[McpToolProvider]:
    query = select(McpToolProvider).where(McpToolProvider.workspace_id == workspace_id)
    return list((await db.execute(query.order_by(McpToolProvider.name))).scalars())


def mcp_headers(secret_key: str, row: McpToolProvider) -> dict[str, str]:
    return _unseal(secret_key, row.workspace_id, f"mcp:{row.id}", row.encrypted_config)


def mcp_server(secret_key: str, row: McpToolProvider) -> McpServer:
    transport: Any = row.transport
    headers = mcp_headers(secret_key, row)
    env = headers if transport == "stdio" else {}
    return McpServer(
        row.server_url, transport, {} if env else headers, row.timeout, row.sse_read_timeout, env
    )


def mcp_tools(row: McpToolProvider) -> list[McpToolSpec]:
    return [McpToolSpec.of_json(raw) for raw in row.tools or []]


def keep_mcp_tools(row: McpToolProvider, specs: Sequence[McpToolSpec]) -> None:
    row.tools = [spec.as_json() for spec in specs]
    row.tools_updated_at = datetime.now(UTC)


# --- built-in provider credentials ---------------------------------------------------------------


async def save_builtin_credentials(
    db: AsyncSession,
    secret_key: str,
    workspace_id: uuid.UUID,
    provider: str,
    values: Mapping[str, Any],
) -> None:
    old = await load_builtin_credentials(db, secret_key, workspace_id, provider)
    blob = _seal(secret_key, workspace_id, f"builtin:{provider}", kept(values, old))
    statement = insert(BuiltinToolCredential).values(
        workspace_id=workspace_id, provider=provider, encrypted_config=blob
    )
    await db.execute(
        statement.on_conflict_do_update(
            index_elements=["workspace_id", "provider"],
            set_={"encrypted_config": blob, "updated_at": datetime.now(UTC)},
        )
    )


async def load_builtin_credentials(
    db: AsyncSession, secret_key: str, workspace_id: uuid.UUID, provider: str
) -> dict[str, str]:
    row = await db.get(BuiltinToolCredential, (workspace_id, provider))
    if row is None:
        return {}
    return _unseal(secret_key, workspace_id, f"builtin:{provider}", row.encrypted_config)


async def delete_builtin_credentials(
    db: AsyncSession, workspace_id: uuid.UUID, provider: str
) -> None:
    await db.execute(
        delete(BuiltinToolCredential).where(
            BuiltinToolCredential.workspace_id == workspace_id,
            BuiltinToolCredential.provider == provider,
        )
    )


# --- key rotation ------------------------------------------------------------------------------


def _reseal(old: str, new: str, workspace_id: uuid.UUID, scope: str, blob: bytes) -> bytes:
    try:
        values = _unseal(old, workspace_id, scope, blob)
    except crypto.DecryptionFailed:
        raise RotationFailed(
            f"the tool secrets {scope!r} of workspace {workspace_id} do not decrypt with the old "
            "key; nothing was changed"
        ) from None
    return _seal(new, workspace_id, scope, values)


async def rotate(db: AsyncSession, old_key: str, new_key: str) -> int:
    """Re-encrypt every tool secret under `new_key`, in the caller's transaction."""
    count = 0
    for api in (await db.execute(select(ApiToolProvider).with_for_update())).scalars():
        api.encrypted_credentials = _reseal(
            old_key, new_key, api.workspace_id, f"api:{api.id}", api.encrypted_credentials
        )
        count += 1
    for mcp in (await db.execute(select(McpToolProvider).with_for_update())).scalars():
        mcp.encrypted_config = _reseal(
            old_key, new_key, mcp.workspace_id, f"mcp:{mcp.id}", mcp.encrypted_config
        )
        count += 1
    for cred in (await db.execute(select(BuiltinToolCredential).with_for_update())).scalars():
        scope = f"builtin:{cred.provider}"
        cred.encrypted_config = _reseal(
            old_key, new_key, cred.workspace_id, scope, cred.encrypted_config
        )
        count += 1
    return count
