"""Files attached to chat messages (Dify's message_files).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TABLE = "message_files"


def _fk(column: str, target: str, ondelete: str) -> sa.ForeignKeyConstraint:
    name = op.f(f"fk_{TABLE}_{column}_{target.split('.')[0]}")
    return sa.ForeignKeyConstraint([column], [target], name=name, ondelete=ondelete)


def _check(column: str, values: tuple[str, ...]) -> sa.CheckConstraint:
    allowed = ", ".join(repr(value) for value in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=op.f(f"ck_{TABLE}_{column}"))


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("workspace_id", sa.UUID(), nullable=False),
        sa.Column("message_id", sa.UUID(), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("transfer_method", sa.String(16), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("belongs_to", sa.String(16), nullable=False),
        sa.Column("upload_file_id", sa.UUID(), nullable=True),
        sa.Column("created_by_role", sa.String(16), nullable=False),
        sa.Column("created_by", sa.UUID(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{TABLE}")),
        _check("type", ("image", "document", "audio", "video", "custom")),
        _check("transfer_method", ("local_file", "remote_url", "tool_file")),
        _check("belongs_to", ("user", "assistant")),
        _check("created_by_role", ("account", "end_user")),
        _fk("workspace_id", "workspaces.id", "CASCADE"),
        _fk("message_id", "messages.id", "CASCADE"),
        _fk("upload_file_id", "upload_files.id", "SET NULL"),
    )  # fmt: skip
    op.create_index(op.f(f"ix_{TABLE}_workspace_id"), TABLE, ["workspace_id"])
    op.create_index(op.f(f"ix_{TABLE}_message_id"), TABLE, ["message_id"])


def downgrade() -> None:
    op.drop_table(TABLE)
