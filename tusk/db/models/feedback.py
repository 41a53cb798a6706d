"""Feedback on messages: one rating per message from its end user, and one from the console."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tusk.db.models.base import (
    Base,
    account_ref,
    app_fk,
    created_at,
    one_of,
    updated_at,
    uuid_pk,
    workspace_fk,
)

RATINGS = ("like", "dislike")
FEEDBACK_SOURCES = ("user", "admin")  # Dify's from_source: the end user, or a console account


class MessageFeedback(Base):
    __tablename__ = "message_feedbacks"
    __table_args__ = (
        CheckConstraint(one_of("rating", RATINGS), name="rating"),
        CheckConstraint(one_of("from_source", FEEDBACK_SOURCES), name="from_source"),
        UniqueConstraint("message_id", "from_source"),
        Index(None, "app_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    workspace_id: Mapped[uuid.UUID] = workspace_fk()
    app_id: Mapped[uuid.UUID] = app_fk(index=False)
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    message_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    rating: Mapped[str] = mapped_column(String(16))
    content: Mapped[str | None] = mapped_column(Text)
    from_source: Mapped[str] = mapped_column(String(16))
    from_end_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("end_users.id", ondelete="SET NULL")
    )
    from_account_id: Mapped[uuid.UUID | None] = account_ref()
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()
