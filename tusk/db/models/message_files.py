"""Files attached to chat messages (Dify's message_files): those a user sent with a query, and
those an answer produced."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tusk.db.models.base import Base, created_at, one_of, uuid_pk, workspace_fk

FILE_TYPES = ("image", "document", "audio", "video", "custom")
TRANSFER_METHODS = ("local_file", "remote_url", "tool_file")
BELONGS_TO = ("user", "assistant")
CREATOR_ROLES = ("account", "end_user")


class MessageFile(Base):
    __tablename__ = "message_files"
    __table_args__ = (
        CheckConstraint(one_of("type", FILE_TYPES), name="type"),
        CheckConstraint(one_of("transfer_method", TRANSFER_METHODS), name="transfer_method"),
        CheckConstraint(one_of("belongs_to", BELONGS_TO), name="belongs_to"),
        CheckConstraint(one_of("created_by_role", CREATOR_ROLES), name="created_by_role"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    workspace_id: Mapped[uuid.UUID] = workspace_fk()
    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    type: Mapped[str] = mapped_column(String(16))
    transfer_method: Mapped[str] = mapped_column(String(16))
    url: Mapped[str | None] = mapped_column(Text)  # remote files
    belongs_to: Mapped[str] = mapped_column(String(16))
    # The upload of a local file; kept as NULL when the upload is deleted.
    upload_file_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("upload_files.id", ondelete="SET NULL")
    )
    created_by_role: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[uuid.UUID | None]
    created_at: Mapped[datetime] = created_at()
