"""Declarative base and the column shapes every table shares."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import DateTime, ForeignKey, MetaData, func, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Deterministic constraint names, so that migrations written by hand match the models.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSONB,
        list[Any]: JSONB,
        uuid.UUID: UUID(as_uuid=True),
        datetime: DateTime(timezone=True),
    }


def uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(primary_key=True, server_default=text("gen_random_uuid()"))


def created_at() -> Mapped[datetime]:
    return mapped_column(server_default=func.now())


def updated_at() -> Mapped[datetime]:
    return mapped_column(server_default=func.now(), onupdate=func.now())


def workspace_fk() -> Mapped[uuid.UUID]:
    """Every tenant-owned row carries its workspace; every query filters on it."""
    return mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)


def app_fk(*, index: bool = True) -> Mapped[uuid.UUID]:
    return mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=index)


def account_ref() -> Mapped[uuid.UUID | None]:
    """The account that made or changed a row; kept as NULL when the account is deleted."""
    return mapped_column(ForeignKey("accounts.id", ondelete="SET NULL"))


def jsonb(default: str = "{}") -> Mapped[Any]:
    return mapped_column(JSONB, server_default=text(f"'{default}'::jsonb"))


def one_of(column: str, values: tuple[str, ...]) -> str:
    """A CHECK expression that keeps a status-like column to its known values."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"
