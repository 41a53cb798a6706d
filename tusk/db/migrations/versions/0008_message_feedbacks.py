"""Feedback on messages (Dify's message_feedbacks).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TABLE = "message_feedbacks"


def _fk(column: str, target: str, ondelete: str) -> sa.ForeignKeyConstraint:
    table = target.split(".")[0]
    name = op.f(f"fk_{TABLE}_{column}_{table}")
    return sa.ForeignKeyConstraint([column], [target], name=name, ondelete=ondelete)


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("workspace_id", sa.UUID(), nullable=False),
        sa.Column("app_id", sa.UUID(), nullable=False),
        sa.Column("conversation_id", sa.UUID(), nullable=False),
        sa.Column("message_id", sa.UUID(), nullable=False),
        sa.Column("rating", sa.String(16), nullable=False),
        sa.Column("content", sa.Text(), nullable=True),
        sa.Column("from_source", sa.String(16), nullable=False),
        sa.Column("from_end_user_id", sa.UUID(), nullable=True),
        sa.Column("from_account_id", sa.UUID(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{TABLE}")),
        sa.CheckConstraint("rating IN ('like', 'dislike')", name=op.f(f"ck_{TABLE}_rating")),
        sa.CheckConstraint(
            "from_source IN ('user', 'admin')", name=op.f(f"ck_{TABLE}_from_source")
        ),
        sa.UniqueConstraint(
            "message_id", "from_source", name=op.f(f"uq_{TABLE}_message_id_from_source")
        ),
        _fk("workspace_id", "workspaces.id", "CASCADE"),
        _fk("app_id", "apps.id", "CASCADE"),
        _fk("conversation_id", "conversations.id", "CASCADE"),
        _fk("message_id", "messages.id", "CASCADE"),
        _fk("from_end_user_id", "end_users.id", "SET NULL"),
        _fk("from_account_id", "accounts.id", "SET NULL"),
    )  # fmt: skip
    op.create_index(op.f(f"ix_{TABLE}_workspace_id"), TABLE, ["workspace_id"])
    op.create_index(op.f(f"ix_{TABLE}_app_id_created_at"), TABLE, ["app_id", "created_at"])


def downgrade() -> None:
    op.drop_table(TABLE)
