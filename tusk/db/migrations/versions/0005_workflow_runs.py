"""Workflow runs: a heartbeat so that runs of a dead process can be found and ended, and the
indexes that finding them and a node's last run need.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "workflow_runs",
        sa.Column(
            "heartbeat_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.create_index(
        "ix_workflow_runs_running_heartbeat",
        "workflow_runs",
        ["heartbeat_at"],
        postgresql_where=sa.text("status = 'running'"),
    )
    op.create_index(
        "ix_workflow_node_executions_workflow_id_node_id_created_at",
        "workflow_node_executions",
        ["workflow_id", "node_id", "created_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_workflow_node_executions_workflow_id_node_id_created_at")
    op.drop_index("ix_workflow_runs_running_heartbeat")
    op.drop_column("workflow_runs", "heartbeat_at")
