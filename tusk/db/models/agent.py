"""Agent records: each round of an agent's answer (Dify's message_agent_thoughts) and the apps
served as MCP servers (Dify's app_mcp_servers)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
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

PRICE_UNIT = Decimal("0.000001")
MCP_SERVER_STATUSES = ("active", "inactive")


def _price_unit() -> Mapped[Decimal]:
    return mapped_column(Numeric(10, 7), server_default=str(PRICE_UNIT))


class MessageAgentThought(Base):
    """One round of an agent: its thought, the tools called (`a;b`), their inputs and
    observations as JSON text keyed by tool, and the round's tokens, prices and latency."""

    __tablename__ = "message_agent_thoughts"
    __table_args__ = (Index(None, "message_id", "position"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    workspace_id: Mapped[uuid.UUID] = workspace_fk()
    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=False
    )
    message_chain_id: Mapped[uuid.UUID | None]
    position: Mapped[int] = mapped_column(Integer)
    thought: Mapped[str | None] = mapped_column(Text)
    tool: Mapped[str | None] = mapped_column(Text)
    tool_labels_str: Mapped[str] = mapped_column(Text, server_default="{}")
    tool_meta_str: Mapped[str] = mapped_column(Text, server_default="{}")
    tool_input: Mapped[str | None] = mapped_column(Text)
    observation: Mapped[str | None] = mapped_column(Text)
    tool_process_data: Mapped[str | None] = mapped_column(Text)
    message: Mapped[str | None] = mapped_column(Text)
    message_token: Mapped[int | None] = mapped_column(Integer)
    message_unit_price: Mapped[Decimal | None] = mapped_column(Numeric)
    message_price_unit: Mapped[Decimal] = _price_unit()
    message_files: Mapped[str | None] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(Text)
    answer_token: Mapped[int | None] = mapped_column(Integer)
    answer_unit_price: Mapped[Decimal | None] = mapped_column(Numeric)
    answer_price_unit: Mapped[Decimal] = _price_unit()
    tokens: Mapped[int | None] = mapped_column(Integer)
    total_price: Mapped[Decimal | None] = mapped_column(Numeric)
    currency: Mapped[str | None] = mapped_column(String(8))
    latency: Mapped[float | None] = mapped_column(Float)
    created_by_role: Mapped[str] = mapped_column(String(32))
    created_by: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = created_at()


class AppMcpServer(Base):
    """An app served as an MCP tool at /mcp/server/{server_code}/mcp. `parameters` holds a
    description per input variable, for the tool's schema."""

    __tablename__ = "app_mcp_servers"
    __table_args__ = (
        CheckConstraint(one_of("status", MCP_SERVER_STATUSES), name="status"),
        UniqueConstraint("app_id"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    workspace_id: Mapped[uuid.UUID] = workspace_fk()
    app_id: Mapped[uuid.UUID] = app_fk(index=False)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, server_default="")
    server_code: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), server_default="active")
    parameters: Mapped[dict[str, Any]] = jsonb()
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()
