"""What Redis holds elsewhere: a small expiring key-value table, and encrypted credentials."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from tusk.db.models.base import Base, created_at, updated_at, uuid_pk, workspace_fk


class KeyValue(Base):
    """Caches, rate-limit counters and short-lived tokens; a NULL `expires_at` never expires."""

    __tablename__ = "kv_store"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[Any] = mapped_column(JSONB)
    expires_at: Mapped[datetime | None] = mapped_column(index=True)


class ProviderCredential(Base):
    """A model provider's credentials, encrypted with a key derived from SECRET_KEY.

    A custom endpoint (an OpenAI-compatible server under a name of its own) is a row whose
    `provider` is that name and whose `base_provider` is the provider that speaks to it.
    """

    __tablename__ = "provider_credentials"
    __table_args__ = (UniqueConstraint("workspace_id", "provider", "name"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    workspace_id: Mapped[uuid.UUID] = workspace_fk()
    provider: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(255), server_default="default")
    base_provider: Mapped[str | None] = mapped_column(String(64))
    models: Mapped[Any] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    encrypted_config: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()


class DefaultModel(Base):
    """A workspace's choice of model for a type (llm, text-embedding, rerank)."""

    __tablename__ = "default_models"

    workspace_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    model_type: Mapped[str] = mapped_column(String(32), primary_key=True)
    model: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[datetime] = updated_at()


class ModelUsage(Base):
    """One model call: who made it, what it cost, how fast it was."""

    __tablename__ = "model_usage"
    __table_args__ = (
        Index(None, "workspace_id", "created_at"),
        Index(None, "app_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    workspace_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    app_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("apps.id", ondelete="SET NULL"))
    provider: Mapped[str] = mapped_column(String(255))
    model: Mapped[str] = mapped_column(String(255))
    model_type: Mapped[str] = mapped_column(String(32))
    prompt_tokens: Mapped[int] = mapped_column(Integer, server_default="0")
    completion_tokens: Mapped[int] = mapped_column(Integer, server_default="0")
    latency_ms: Mapped[float] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    cost: Mapped[Decimal] = mapped_column(Numeric(14, 7), server_default="0")
    currency: Mapped[str] = mapped_column(String(8), server_default="USD")
    created_at: Mapped[datetime] = created_at()
