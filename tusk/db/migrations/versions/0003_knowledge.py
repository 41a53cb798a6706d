"""Knowledge: halfvec embeddings, chunk generations for atomic swaps, trigram search.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import HALFVEC
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SEGMENTS = "document_segments"


def upgrade() -> None:
    # No segment holds an embedding yet: the knowledge engine arrives with this revision.
    op.drop_column(SEGMENTS, "embedding")
    op.add_column(SEGMENTS, sa.Column("embedding", HALFVEC(), nullable=True))
    op.add_column(
        SEGMENTS, sa.Column("generation", sa.Integer(), server_default="0", nullable=False)
    )
    op.add_column(
        SEGMENTS, sa.Column("kind", sa.String(16), server_default="chunk", nullable=False)
    )
    op.add_column(
        SEGMENTS,
        sa.Column("searchable", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.add_column(SEGMENTS, sa.Column("embedding_model", sa.String(255), nullable=True))
    op.add_column(
        SEGMENTS,
        sa.Column("doc_metadata", JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False),
    )
    op.drop_index(op.f("ix_document_segments_document_id_position"), table_name=SEGMENTS)
    op.create_index(
        op.f("ix_document_segments_document_id_generation_position"),
        SEGMENTS,
        ["document_id", "generation", "position"],
    )
    op.create_index(
        "ix_document_segments_content_trgm",
        SEGMENTS,
        ["content"],
        postgresql_using="gin",
        postgresql_ops={"content": "gin_trgm_ops"},
    )
    op.add_column(
        "documents", sa.Column("generation", sa.Integer(), server_default="0", nullable=False)
    )
    op.add_column("documents", sa.Column("file_id", sa.UUID(), nullable=True))
    op.create_foreign_key(
        op.f("fk_documents_file_id_upload_files"),
        "documents",
        "upload_files",
        ["file_id"],
        ["id"],
        ondelete="SET NULL",
    )


def downgrade() -> None:
    raise NotImplementedError("restore a backup to go back before the knowledge engine")
