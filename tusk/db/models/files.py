"""Uploaded files, and the blobs of the `postgres` storage backend."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, LargeBinary, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from tusk.db.models.base import Base, created_at, uuid_pk, workspace_fk


class UploadFile(Base):
    __tablename__ = "upload_files"

    id: Mapped[uuid.UUID] = uuid_pk()
    workspace_id: Mapped[uuid.UUID] = workspace_fk()
    storage_type: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(512))
    name: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    extension: Mapped[str] = mapped_column(String(32))
    mime_type: Mapped[str | None] = mapped_column(String(255))
    hash: Mapped[str | None] = mapped_column(String(64))
    created_by_role: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[uuid.UUID | None]
    source_url: Mapped[str] = mapped_column(Text, server_default="")
    used: Mapped[bool] = mapped_column(server_default=text("false"))
    used_by: Mapped[uuid.UUID | None]
    used_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = created_at()


class StorageObject(Base):
    """A file kept in the database; its bytes are in `storage_chunks`."""

    __tablename__ = "storage_objects"

    key: Mapped[str] = mapped_column(String(512), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = created_at()


class StorageChunk(Base):
    __tablename__ = "storage_chunks"

    key: Mapped[str] = mapped_column(
        ForeignKey("storage_objects.key", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
