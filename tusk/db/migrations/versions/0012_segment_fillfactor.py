"""Room on each page of document_segments, so that counting a chunk's hits is an update that
leaves the indexes alone (a heap-only update) instead of inserting into every index, the HNSW
graphs included: it made each search spend most of its time on the count.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Pages written from now on keep 10% free; existing ones gain room as they are rewritten.
    op.execute("ALTER TABLE document_segments SET (fillfactor = 90)")


def downgrade() -> None:
    op.execute("ALTER TABLE document_segments RESET (fillfactor)")
