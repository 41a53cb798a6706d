"""Annotation reply (Dify's): stored question/answer pairs of an app, the app's setting that turns
matching on, and a history of the questions each annotation answered."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pgvector.sqlalchemy import HALFVEC
from sqlalchemy import CheckConstraint, Float, ForeignKey, Index, Integer, String, Text, text
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

HIT_SOURCES = ("api", "console")  # Dify's from_source of the message that hit


class MessageAnnotation(Base):
    """A question and the answer (Dify's `content`) to give without calling the model.

    The question's embedding is kept with the name of the model that made it, so that a
    change of the app's embedding model can tell which ones to embed again. It is a `halfvec`
    with no fixed dimension; annotations are searched per app, a scan too small for an index.
    """

    __tablename__ = "message_annotations"
    __table_args__ = (Index(None, "app_id", "created_at"),)

    id: Mapped[uuid.UUID] = uuid_pk()
    workspace_id: Mapped[uuid.UUID] = workspace_fk()
    app_id: Mapped[uuid.UUID] = app_fk(index=False)
    conversation_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("conversations.id", ondelete="SET NULL")
    )
    message_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("messages.id", ondelete="SET NULL")
    )
    question: Mapped[str] = mapped_column(Text)
    content: Mapped[str] = mapped_column(Text)
    hit_count: Mapped[int] = mapped_column(Integer, server_default="0")
    embedding_model: Mapped[str | None] = mapped_column(String(255))
    embedding: Mapped[Any] = mapped_column(HALFVEC(), nullable=True)
    created_by: Mapped[uuid.UUID | None] = account_ref()
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()


class AppAnnotationSetting(Base):
    """Whether an app answers from its annotations, how close a question must be, and the
    embedding model that compares them. One row per app, kept (disabled) when turned off."""

    __tablename__ = "app_annotation_settings"

    id: Mapped[uuid.UUID] = uuid_pk()
    workspace_id: Mapped[uuid.UUID] = workspace_fk()
    app_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("apps.id", ondelete="CASCADE"), unique=True
    )
    enabled: Mapped[bool] = mapped_column(server_default=text("true"))
    score_threshold: Mapped[float] = mapped_column(Float, server_default="0")
    embedding_provider_name: Mapped[str] = mapped_column(String(255))
    embedding_model_name: Mapped[str] = mapped_column(String(255))
    created_by: Mapped[uuid.UUID | None] = account_ref()
    updated_by: Mapped[uuid.UUID | None] = account_ref()
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()


class AppAnnotationHitHistory(Base):
    """One question answered by an annotation: the query, its score, and the annotation as it
    was then."""

    __tablename__ = "app_annotation_hit_histories"
    __table_args__ = (
        CheckConstraint(one_of("source", HIT_SOURCES), name="source"),
        Index(None, "annotation_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    workspace_id: Mapped[uuid.UUID] = workspace_fk()
    app_id: Mapped[uuid.UUID] = app_fk()
    annotation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("message_annotations.id", ondelete="CASCADE")
    )
    message_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("messages.id", ondelete="SET NULL")
    )
    source: Mapped[str] = mapped_column(String(16))
    question: Mapped[str] = mapped_column(Text)
    score: Mapped[float] = mapped_column(Float)
    annotation_question: Mapped[str] = mapped_column(Text)
    annotation_content: Mapped[str] = mapped_column(Text)
    end_user_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("end_users.id", ondelete="SET NULL")
    )
    account_id: Mapped[uuid.UUID | None] = account_ref()
    created_at: Mapped[datetime] = created_at()
