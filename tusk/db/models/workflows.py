"""Workflows (draft and published versions), their runs and node executions."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from tusk.db.models.base import (
    Base,
    app_fk,
    created_at,
    jsonb,
    one_of,
    updated_at,
    uuid_pk,
    workspace_fk,
)

RUN_STATUSES = ("running", "succeeded", "failed", "stopped", "partial-succeeded", "paused")
NODE_STATUSES = ("running", "succeeded", "failed", "exception", "retry", "stopped", "paused")


class Workflow(Base):
    __tablename__ = "workflows"
    __table_args__ = (
        CheckConstraint(one_of("type", ("workflow", "chat")), name="type"),
        Index(None, "app_id", "version"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    workspace_id: Mapped[uuid.UUID] = workspace_fk()
    app_id: Mapped[uuid.UUID] = app_fk(index=False)
    type: Mapped[str] = mapped_column(String(16))
    version: Mapped[str] = mapped_column(String(64))
    marked_name: Mapped[str] = mapped_column(String(255), server_default="")
    marked_comment: Mapped[str] = mapped_column(Text, server_default="")
    graph: Mapped[dict[str, Any]] = jsonb()
    features: Mapped[dict[str, Any]] = jsonb()
    environment_variables: Mapped[Any] = jsonb("[]")
    conversation_variables: Mapped[Any] = jsonb("[]")
    created_by: Mapped[uuid.UUID | None]
    updated_by: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()


class WorkflowRun(Base):
    __tablename__ = "workflow_runs"
    __table_args__ = (
        CheckConstraint(one_of("status", RUN_STATUSES), name="status"),
        Index(None, "app_id", "created_at"),
        # the sweeper looks for running runs whose process stopped beating
        Index(
            "ix_workflow_runs_running_heartbeat",
            "heartbeat_at",
            postgresql_where=text("status = 'running'"),
        ),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    workspace_id: Mapped[uuid.UUID] = workspace_fk()
    app_id: Mapped[uuid.UUID] = app_fk(index=False)
    workflow_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(16))
    triggered_from: Mapped[str] = mapped_column(String(32))
    version: Mapped[str] = mapped_column(String(64))
    graph: Mapped[dict[str, Any]] = jsonb()
    inputs: Mapped[dict[str, Any]] = jsonb()
    status: Mapped[str] = mapped_column(String(32), server_default="running")
    outputs: Mapped[dict[str, Any]] = jsonb()
    error: Mapped[str | None] = mapped_column(Text)
    elapsed_time: Mapped[float] = mapped_column(Float, server_default="0")
    total_tokens: Mapped[int] = mapped_column(BigInteger, server_default="0")
    total_steps: Mapped[int] = mapped_column(Integer, server_default="0")
    exceptions_count: Mapped[int] = mapped_column(Integer, server_default="0")
    created_by_role: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = created_at()
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime] = mapped_column(server_default=func.now())


class WorkflowNodeExecution(Base):
    __tablename__ = "workflow_node_executions"
    __table_args__ = (
        CheckConstraint(one_of("status", NODE_STATUSES), name="status"),
        Index(None, "workflow_run_id", "index"),
        Index(None, "workflow_id", "node_id", "created_at"),  # a node's last run
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    workspace_id: Mapped[uuid.UUID] = workspace_fk()
    app_id: Mapped[uuid.UUID] = app_fk()
    workflow_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"))
    workflow_run_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("workflow_runs.id", ondelete="CASCADE")
    )
    triggered_from: Mapped[str] = mapped_column(String(32))
    index: Mapped[int] = mapped_column(Integer)
    predecessor_node_id: Mapped[str | None] = mapped_column(String(255))
    node_execution_id: Mapped[str | None] = mapped_column(String(255))
    node_id: Mapped[str] = mapped_column(String(255))
    node_type: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(255))
    inputs: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    process_data: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    outputs: Mapped[dict[str, Any] | None] = mapped_column(nullable=True)
    status: Mapped[str] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    elapsed_time: Mapped[float] = mapped_column(Float, server_default="0")
    execution_metadata: Mapped[dict[str, Any]] = jsonb()
    created_by_role: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = created_at()
    finished_at: Mapped[datetime | None]
