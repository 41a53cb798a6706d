"""Tool sources of a workspace: OpenAPI specs, MCP servers, and the credentials of built-in tool
providers. Secrets (API keys, auth headers) are encrypted like model provider credentials."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Float,
    ForeignKey,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from tusk.db.models.base import (
    Base,
    account_ref,
    created_at,
    jsonb,
    one_of,
    updated_at,
    uuid_pk,
    workspace_fk,
)

MCP_TRANSPORTS = ("streamable_http", "sse", "stdio")


class ApiToolProvider(Base):
    """An OpenAPI 3.x spec whose operations are tools, with its auth (`encrypted_credentials`)."""

    __tablename__ = "tool_api_providers"
    __table_args__ = (UniqueConstraint("workspace_id", "name"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    workspace_id: Mapped[uuid.UUID] = workspace_fk()
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, server_default="")
    icon: Mapped[Any] = jsonb()
    schema_type: Mapped[str] = mapped_column(String(32), server_default="openapi")
    schema: Mapped[str] = mapped_column(Text)
    encrypted_credentials: Mapped[bytes] = mapped_column(LargeBinary)
    privacy_policy: Mapped[str] = mapped_column(Text, server_default="")
    custom_disclaimer: Mapped[str] = mapped_column(Text, server_default="")
    created_by: Mapped[uuid.UUID | None] = account_ref()
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()


class McpToolProvider(Base):
    """An MCP server and the tools it listed when last refreshed. `encrypted_config` holds its
    auth headers (and, for stdio, environment variables)."""

    __tablename__ = "tool_mcp_providers"
    __table_args__ = (
        UniqueConstraint("workspace_id", "server_identifier"),
        UniqueConstraint("workspace_id", "name"),
        CheckConstraint(one_of("transport", MCP_TRANSPORTS), name="transport"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    workspace_id: Mapped[uuid.UUID] = workspace_fk()
    name: Mapped[str] = mapped_column(String(255))
    server_identifier: Mapped[str] = mapped_column(String(64))
    server_url: Mapped[str] = mapped_column(Text)  # for stdio, the command line
    transport: Mapped[str] = mapped_column(String(16), server_default="streamable_http")
    encrypted_config: Mapped[bytes] = mapped_column(LargeBinary)
    timeout: Mapped[float] = mapped_column(Float, server_default="30")
    sse_read_timeout: Mapped[float] = mapped_column(Float, server_default="300")
    icon: Mapped[Any] = jsonb()
    tools: Mapped[Any] = jsonb("[]")
    tools_updated_at: Mapped[datetime | None] = mapped_column()
    created_by: Mapped[uuid.UUID | None] = account_ref()
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()


class BuiltinToolCredential(Base):
    """A workspace's credentials for one built-in tool provider."""

    __tablename__ = "tool_builtin_credentials"

    workspace_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    provider: Mapped[str] = mapped_column(String(255), primary_key=True)
    encrypted_config: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = updated_at()
