"""Tools: OpenAPI tool providers, MCP servers and the credentials of built-in tool providers.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

NOW = sa.text("now()")


def _id() -> sa.Column[Any]:
    return sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False)


def _workspace(table: str) -> list[Any]:
    return [
        sa.Column("workspace_id", sa.UUID(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f(f"fk_{table}_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
    ]


def _created_by(table: str) -> list[Any]:
    return [
        sa.Column("created_by", sa.UUID(), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["accounts.id"],
            name=op.f(f"fk_{table}_created_by_accounts"),
            ondelete="SET NULL",
        ),
    ]


def _stamps() -> list[Any]:
    return [
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
    ]


def _text(name: str, default: str | None = "") -> sa.Column[Any]:
    return sa.Column(name, sa.Text(), server_default=default, nullable=False)


def _json(name: str, default: str) -> sa.Column[Any]:
    return sa.Column(name, JSONB(), server_default=sa.text(f"'{default}'::jsonb"), nullable=False)


def upgrade() -> None:
    table = "tool_api_providers"
    op.create_table(
        table,
        _id(),
        *_workspace(table),
        sa.Column("name", sa.String(255), nullable=False),
        _text("description"),
        _json("icon", "{}"),
        sa.Column("schema_type", sa.String(32), server_default="openapi", nullable=False),
        _text("schema", None),
        sa.Column("encrypted_credentials", sa.LargeBinary(), nullable=False),
        _text("privacy_policy"),
        _text("custom_disclaimer"),
        *_created_by(table),
        *_stamps(),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
        sa.UniqueConstraint("workspace_id", "name", name=op.f(f"uq_{table}_workspace_id_name")),
    )
    op.create_index(op.f(f"ix_{table}_workspace_id"), table, ["workspace_id"])

    table = "tool_mcp_providers"
    op.create_table(
        table,
        _id(),
        *_workspace(table),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("server_identifier", sa.String(64), nullable=False),
        _text("server_url", None),
        sa.Column("transport", sa.String(16), server_default="streamable_http", nullable=False),
        sa.Column("encrypted_config", sa.LargeBinary(), nullable=False),
        sa.Column("timeout", sa.Float(), server_default="30", nullable=False),
        sa.Column("sse_read_timeout", sa.Float(), server_default="300", nullable=False),
        _json("icon", "{}"),
        _json("tools", "[]"),
        sa.Column("tools_updated_at", sa.DateTime(timezone=True), nullable=True),
        *_created_by(table),
        *_stamps(),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
        sa.UniqueConstraint(
            "workspace_id",
            "server_identifier",
            name=op.f(f"uq_{table}_workspace_id_server_identifier"),
        ),
        sa.UniqueConstraint("workspace_id", "name", name=op.f(f"uq_{table}_workspace_id_name")),
        sa.CheckConstraint(
            "transport IN ('streamable_http', 'sse', 'stdio')", name=op.f(f"ck_{table}_transport")
        ),
    )
    op.create_index(op.f(f"ix_{table}_workspace_id"), table, ["workspace_id"])

    table = "tool_builtin_credentials"
    op.create_table(
        table,
        *_workspace(table),
        sa.Column("provider", sa.String(255), nullable=False),
        sa.Column("encrypted_config", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "provider", name=op.f(f"pk_{table}")),
    )


def downgrade() -> None:
    op.drop_table("tool_builtin_credentials")
    op.drop_table("tool_mcp_providers")
    op.drop_table("tool_api_providers")
