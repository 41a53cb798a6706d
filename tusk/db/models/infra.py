"""What Redis holds elsewhere: a small expiring key-value table, and encrypted credentials."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import LargeBinary, String, Text, UniqueConstraint
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
    """A model provider's credentials, encrypted with a key derived from SECRET_KEY."""

    __tablename__ = "provider_credentials"
    __table_args__ = (UniqueConstraint("workspace_id", "provider", "name"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    workspace_id: Mapped[uuid.UUID] = workspace_fk()
    provider: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(255), server_default="default")
    encrypted_config: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()
