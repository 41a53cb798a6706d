"""Apps, their configurations, end users, conversations and messages (Dify's shapes)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from tusk.db.models.base import (
    Base,
    account_ref,
    app_fk,
    created_at,
    jsonb,
    one_of,
    updated_at,
    uuid_pk,
    workspace_fk,
)

APP_MODES = ("completion", "chat", "agent-chat", "advanced-chat", "workflow")


class App(Base):
    __tablename__ = "apps"
    __table_args__ = (CheckConstraint(one_of("mode", APP_MODES), name="mode"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    workspace_id: Mapped[uuid.UUID] = workspace_fk()
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, server_default="")
    mode: Mapped[str] = mapped_column(String(32))
    icon_type: Mapped[str | None] = mapped_column(String(16))
    icon: Mapped[str | None] = mapped_column(String(255))
    icon_background: Mapped[str | None] = mapped_column(String(32))
    app_model_config_id: Mapped[uuid.UUID | None]
    workflow_id: Mapped[uuid.UUID | None]
    status: Mapped[str] = mapped_column(String(32), server_default="normal")
    enable_site: Mapped[bool] = mapped_column(server_default=text("true"))
    enable_api: Mapped[bool] = mapped_column(server_default=text("true"))
    max_active_requests: Mapped[int | None]
    use_icon_as_answer_icon: Mapped[bool] = mapped_column(server_default=text("false"))
    # A generation whose client disconnects finishes and is recorded instead of stopping.
    finish_in_background: Mapped[bool] = mapped_column(server_default=text("false"))
    created_by: Mapped[uuid.UUID | None] = account_ref()
    updated_by: Mapped[uuid.UUID | None] = account_ref()
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()


class AppModelConfig(Base):
    """The configuration of chat, completion and agent apps: Dify's `model_config` as a document."""

    __tablename__ = "app_model_configs"

    id: Mapped[uuid.UUID] = uuid_pk()
    workspace_id: Mapped[uuid.UUID] = workspace_fk()
    app_id: Mapped[uuid.UUID] = app_fk()
    config: Mapped[dict[str, Any]] = jsonb()
    created_by: Mapped[uuid.UUID | None] = account_ref()
    created_at: Mapped[datetime] = created_at()


class EndUser(Base):
    """The `user` of Service API calls, scoped to one app."""

    __tablename__ = "end_users"
    __table_args__ = (UniqueConstraint("app_id", "session_id"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    workspace_id: Mapped[uuid.UUID] = workspace_fk()
    app_id: Mapped[uuid.UUID] = app_fk(index=False)
    type: Mapped[str] = mapped_column(String(32), server_default="service-api")
    external_user_id: Mapped[str | None] = mapped_column(String(255))
    session_id: Mapped[str] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(255))
    is_anonymous: Mapped[bool] = mapped_column(server_default=text("false"))
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (Index(None, "app_id", "from_end_user_id", "updated_at"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    workspace_id: Mapped[uuid.UUID] = workspace_fk()
    app_id: Mapped[uuid.UUID] = app_fk(index=False)
    app_model_config_id: Mapped[uuid.UUID | None]
    mode: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(255), server_default="")
    inputs: Mapped[dict[str, Any]] = jsonb()
    introduction: Mapped[str] = mapped_column(Text, server_default="")
    status: Mapped[str] = mapped_column(String(32), server_default="normal")
    from_source: Mapped[str] = mapped_column(String(32))
    from_end_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("end_users.id", ondelete="SET NULL")
    )
    from_account_id: Mapped[uuid.UUID | None] = account_ref()
    dialogue_count: Mapped[int] = mapped_column(Integer, server_default="0")
    variables: Mapped[dict[str, Any]] = jsonb()  # chatflow conversation variables, by name
    is_deleted: Mapped[bool] = mapped_column(server_default=text("false"))
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (Index(None, "conversation_id", "created_at"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    workspace_id: Mapped[uuid.UUID] = workspace_fk()
    app_id: Mapped[uuid.UUID] = app_fk()
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    parent_message_id: Mapped[uuid.UUID | None]
    inputs: Mapped[dict[str, Any]] = jsonb()
    query: Mapped[str] = mapped_column(Text, server_default="")
    answer: Mapped[str] = mapped_column(Text, server_default="")
    message: Mapped[Any] = jsonb("[]")
    message_tokens: Mapped[int] = mapped_column(Integer, server_default="0")
    answer_tokens: Mapped[int] = mapped_column(Integer, server_default="0")
    total_tokens: Mapped[int] = mapped_column(BigInteger, server_default="0")
    total_price: Mapped[Decimal] = mapped_column(Numeric(12, 7), server_default="0")
    currency: Mapped[str] = mapped_column(String(8), server_default="USD")
    provider_response_latency: Mapped[float] = mapped_column(Float, server_default="0")
    status: Mapped[str] = mapped_column(String(32), server_default="normal")
    error: Mapped[str | None] = mapped_column(Text)
    message_metadata: Mapped[dict[str, Any]] = jsonb()
    from_source: Mapped[str] = mapped_column(String(32))
    from_end_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("end_users.id", ondelete="SET NULL")
    )
    from_account_id: Mapped[uuid.UUID | None] = account_ref()
    workflow_run_id: Mapped[uuid.UUID | None]
    agent_based: Mapped[bool] = mapped_column(server_default=text("false"))
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()
