"""Agents: each round of an agent's answer (Dify's message_agent_thoughts) and apps served as MCP
servers (Dify's app_mcp_servers).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

NOW = sa.text("now()")
THOUGHTS = "message_agent_thoughts"
SERVERS = "app_mcp_servers"


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    name = op.f(f"fk_{table}_{column}_{target.split('.')[0]}")
    return sa.ForeignKeyConstraint([column], [target], name=name, ondelete="CASCADE")


def _text(name: str) -> sa.Column[Any]:
    return sa.Column(name, sa.Text(), nullable=True)


def _price_unit(name: str) -> sa.Column[Any]:
    return sa.Column(name, sa.Numeric(10, 7), server_default="0.000001", nullable=False)


def _thoughts() -> None:
    op.create_table(
        THOUGHTS,
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("workspace_id", sa.UUID(), nullable=False),
        sa.Column("message_id", sa.UUID(), nullable=False),
        sa.Column("message_chain_id", sa.UUID(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        _text("thought"),
        _text("tool"),
        sa.Column("tool_labels_str", sa.Text(), server_default="{}", nullable=False),
        sa.Column("tool_meta_str", sa.Text(), server_default="{}", nullable=False),
        _text("tool_input"),
        _text("observation"),
        _text("tool_process_data"),
        _text("message"),
        sa.Column("message_token", sa.Integer(), nullable=True),
        sa.Column("message_unit_price", sa.Numeric(), nullable=True),
        _price_unit("message_price_unit"),
        _text("message_files"),
        _text("answer"),
        sa.Column("answer_token", sa.Integer(), nullable=True),
        sa.Column("answer_unit_price", sa.Numeric(), nullable=True),
        _price_unit("answer_price_unit"),
        sa.Column("tokens", sa.Integer(), nullable=True),
        sa.Column("total_price", sa.Numeric(), nullable=True),
        sa.Column("currency", sa.String(8), nullable=True),
        sa.Column("latency", sa.Float(), nullable=True),
        sa.Column("created_by_role", sa.String(32), nullable=False),
        sa.Column("created_by", sa.UUID(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{THOUGHTS}")),
        _fk(THOUGHTS, "workspace_id", "workspaces.id"),
        _fk(THOUGHTS, "message_id", "messages.id"),
    )
    op.create_index(op.f(f"ix_{THOUGHTS}_workspace_id"), THOUGHTS, ["workspace_id"])
    by_message = op.f(f"ix_{THOUGHTS}_message_id_position")
    op.create_index(by_message, THOUGHTS, ["message_id", "position"])


def _servers() -> None:
    op.create_table(
        SERVERS,
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("workspace_id", sa.UUID(), nullable=False),
        sa.Column("app_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("server_code", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), server_default="active", nullable=False),
        sa.Column("parameters", JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{SERVERS}")),
        sa.CheckConstraint("status IN ('active', 'inactive')", name=op.f(f"ck_{SERVERS}_status")),
        sa.UniqueConstraint("app_id", name=op.f(f"uq_{SERVERS}_app_id")),
        sa.UniqueConstraint("server_code", name=op.f(f"uq_{SERVERS}_server_code")),
        _fk(SERVERS, "workspace_id", "workspaces.id"),
        _fk(SERVERS, "app_id", "apps.id"),
    )
    op.create_index(op.f(f"ix_{SERVERS}_workspace_id"), SERVERS, ["workspace_id"])


def upgrade() -> None:
    _thoughts()
    _servers()


def downgrade() -> None:
    op.drop_table(SERVERS)
    op.drop_table(THOUGHTS)
