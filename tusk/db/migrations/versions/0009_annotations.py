"""Annotation reply: annotations, each app's setting, and the history of their hits (Dify's
message_annotations, app_annotation_settings, app_annotation_hit_histories).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import HALFVEC

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

ANNOTATIONS = "message_annotations"
SETTINGS = "app_annotation_settings"
HITS = "app_annotation_hit_histories"


def _fk(table: str, column: str, target: str, ondelete: str) -> sa.ForeignKeyConstraint:
    referred = target.split(".")[0]
    name = op.f(f"fk_{table}_{column}_{referred}")
    return sa.ForeignKeyConstraint([column], [target], name=name, ondelete=ondelete)


def _timestamp(name: str) -> sa.Column[Any]:
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def _id() -> sa.Column[Any]:
    return sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False)


def _annotations() -> None:
    t = ANNOTATIONS
    op.create_table(
        t,
        _id(),
        sa.Column("workspace_id", sa.UUID(), nullable=False),
        sa.Column("app_id", sa.UUID(), nullable=False),
        sa.Column("conversation_id", sa.UUID(), nullable=True),
        sa.Column("message_id", sa.UUID(), nullable=True),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("hit_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("embedding_model", sa.String(255), nullable=True),
        sa.Column("embedding", HALFVEC(), nullable=True),
        sa.Column("created_by", sa.UUID(), nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{t}")),
        _fk(t, "workspace_id", "workspaces.id", "CASCADE"),
        _fk(t, "app_id", "apps.id", "CASCADE"),
        _fk(t, "conversation_id", "conversations.id", "SET NULL"),
        _fk(t, "message_id", "messages.id", "SET NULL"),
        _fk(t, "created_by", "accounts.id", "SET NULL"),
    )
    op.create_index(op.f(f"ix_{t}_workspace_id"), t, ["workspace_id"])
    op.create_index(op.f(f"ix_{t}_app_id_created_at"), t, ["app_id", "created_at"])


def _settings() -> None:
    t = SETTINGS
    op.create_table(
        t,
        _id(),
        sa.Column("workspace_id", sa.UUID(), nullable=False),
        sa.Column("app_id", sa.UUID(), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("score_threshold", sa.Float(), server_default="0", nullable=False),
        sa.Column("embedding_provider_name", sa.String(255), nullable=False),
        sa.Column("embedding_model_name", sa.String(255), nullable=False),
        sa.Column("created_by", sa.UUID(), nullable=True),
        sa.Column("updated_by", sa.UUID(), nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{t}")),
        sa.UniqueConstraint("app_id", name=op.f(f"uq_{t}_app_id")),
        _fk(t, "workspace_id", "workspaces.id", "CASCADE"),
        _fk(t, "app_id", "apps.id", "CASCADE"),
        _fk(t, "created_by", "accounts.id", "SET NULL"),
        _fk(t, "updated_by", "accounts.id", "SET NULL"),
    )
    op.create_index(op.f(f"ix_{t}_workspace_id"), t, ["workspace_id"])


def _hits() -> None:
    t = HITS
    op.create_table(
        t,
        _id(),
        sa.Column("workspace_id", sa.UUID(), nullable=False),
        sa.Column("app_id", sa.UUID(), nullable=False),
        sa.Column("annotation_id", sa.UUID(), nullable=False),
        sa.Column("message_id", sa.UUID(), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("annotation_question", sa.Text(), nullable=False),
        sa.Column("annotation_content", sa.Text(), nullable=False),
        sa.Column("end_user_id", sa.UUID(), nullable=True),
        sa.Column("account_id", sa.UUID(), nullable=True),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{t}")),
        sa.CheckConstraint("source IN ('api', 'console')", name=op.f(f"ck_{t}_source")),
        _fk(t, "workspace_id", "workspaces.id", "CASCADE"),
        _fk(t, "app_id", "apps.id", "CASCADE"),
        _fk(t, "annotation_id", "message_annotations.id", "CASCADE"),
        _fk(t, "message_id", "messages.id", "SET NULL"),
        _fk(t, "end_user_id", "end_users.id", "SET NULL"),
        _fk(t, "account_id", "accounts.id", "SET NULL"),
    )
    op.create_index(op.f(f"ix_{t}_workspace_id"), t, ["workspace_id"])
    op.create_index(op.f(f"ix_{t}_app_id"), t, ["app_id"])
    op.create_index(op.f(f"ix_{t}_annotation_id_created_at"), t, ["annotation_id", "created_at"])


def upgrade() -> None:
    _annotations()
    _settings()
    _hits()


def downgrade() -> None:
    op.drop_table(HITS)
    op.drop_table(SETTINGS)
    op.drop_table(ANNOTATIONS)
