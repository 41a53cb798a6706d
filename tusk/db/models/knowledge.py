"""Knowledge bases (datasets), their documents and the searchable segments of those documents."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pgvector.sqlalchemy import HALFVEC
from sqlalchemy import CheckConstraint, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.dialects.postgresql import TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column

from tusk.db.models.base import (
    Base,
    account_ref,
    created_at,
    jsonb,
    one_of,
    updated_at,
    uuid_pk,
    workspace_fk,
)

INDEXING_STATUSES = (
    "waiting",
    "parsing",
    "cleaning",
    "splitting",
    "indexing",
    "completed",
    "error",
    "paused",
)


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (
        CheckConstraint(
            one_of("indexing_technique", ("high_quality", "economy")), name="technique"
        ),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    workspace_id: Mapped[uuid.UUID] = workspace_fk()
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, server_default="")
    provider: Mapped[str] = mapped_column(String(32), server_default="vendor")
    permission: Mapped[str] = mapped_column(String(32), server_default="only_me")
    data_source_type: Mapped[str | None] = mapped_column(String(32))
    indexing_technique: Mapped[str] = mapped_column(String(32), server_default="high_quality")
    embedding_model: Mapped[str | None] = mapped_column(String(255))
    embedding_model_provider: Mapped[str | None] = mapped_column(String(255))
    embedding_dimensions: Mapped[int | None]
    retrieval_model: Mapped[dict[str, Any]] = jsonb()
    text_search_config: Mapped[str] = mapped_column(String(64), server_default="simple")
    # The metadata fields its documents may carry: [{"id", "name", "type"}]
    metadata_fields: Mapped[Any] = jsonb("[]")
    doc_form: Mapped[str] = mapped_column(String(32), server_default="text_model")
    created_by: Mapped[uuid.UUID | None] = account_ref()
    updated_by: Mapped[uuid.UUID | None] = account_ref()
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (
        CheckConstraint(one_of("indexing_status", INDEXING_STATUSES), name="indexing_status"),
        Index(None, "dataset_id", "position"),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    workspace_id: Mapped[uuid.UUID] = workspace_fk()
    dataset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(255))
    batch: Mapped[str] = mapped_column(String(64), index=True)
    data_source_type: Mapped[str] = mapped_column(String(32))
    data_source_info: Mapped[dict[str, Any]] = jsonb()
    process_rule: Mapped[dict[str, Any]] = jsonb()
    created_from: Mapped[str] = mapped_column(String(32), server_default="api")
    doc_form: Mapped[str] = mapped_column(String(32), server_default="text_model")
    doc_language: Mapped[str | None] = mapped_column(String(32))
    doc_metadata: Mapped[dict[str, Any]] = jsonb()
    word_count: Mapped[int] = mapped_column(Integer, server_default="0")
    tokens: Mapped[int] = mapped_column(Integer, server_default="0")
    indexing_status: Mapped[str] = mapped_column(String(32), server_default="waiting")
    completed_segments: Mapped[int] = mapped_column(Integer, server_default="0")
    total_segments: Mapped[int] = mapped_column(Integer, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(server_default=text("true"))
    disabled_at: Mapped[datetime | None]
    archived: Mapped[bool] = mapped_column(server_default=text("false"))
    processing_started_at: Mapped[datetime | None]
    parsing_completed_at: Mapped[datetime | None]
    cleaning_completed_at: Mapped[datetime | None]
    splitting_completed_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    paused_at: Mapped[datetime | None]
    stopped_at: Mapped[datetime | None]
    indexing_latency: Mapped[float | None] = mapped_column(Float)
    generation: Mapped[int] = mapped_column(Integer, server_default="0")
    file_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("upload_files.id", ondelete="SET NULL")
    )
    created_by: Mapped[uuid.UUID | None] = account_ref()
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()


class DocumentSegment(Base):
    """A chunk of a document: its text, its embedding and its full-text vector.

    The embedding is a `halfvec` with no fixed dimension, as datasets use different models;
    each model in use gets an HNSW index on `embedding::halfvec(n)` for its rows. A document's
    chunks are written under a new `generation` and become `searchable` all at once.
    """

    __tablename__ = "document_segments"
    __table_args__ = (  # fillfactor 90 (migration 0012): hit counts update in place
        Index(None, "document_id", "generation", "position"),
        Index("ix_document_segments_content_tsv", "content_tsv", postgresql_using="gin"),
        Index(
            "ix_document_segments_content_trgm",
            "content",
            postgresql_using="gin",
            postgresql_ops={"content": "gin_trgm_ops"},
        ),
    )

    id: Mapped[uuid.UUID] = uuid_pk()
    workspace_id: Mapped[uuid.UUID] = workspace_fk()
    dataset_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), index=True
    )
    document_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("document_segments.id", ondelete="CASCADE")
    )
    position: Mapped[int] = mapped_column(Integer)
    content: Mapped[str] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(Text)
    word_count: Mapped[int] = mapped_column(Integer, server_default="0")
    tokens: Mapped[int] = mapped_column(Integer, server_default="0")
    keywords: Mapped[Any] = jsonb("[]")
    index_node_id: Mapped[str | None] = mapped_column(String(255))
    index_node_hash: Mapped[str | None] = mapped_column(String(255))
    hit_count: Mapped[int] = mapped_column(Integer, server_default="0")
    enabled: Mapped[bool] = mapped_column(server_default=text("true"))
    disabled_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(32), server_default="waiting")
    error: Mapped[str | None] = mapped_column(Text)
    generation: Mapped[int] = mapped_column(Integer, server_default="0")
    # "chunk"; or in hierarchical documents "parent" (returned) and "child" (matched)
    kind: Mapped[str] = mapped_column(String(16), server_default="chunk")
    searchable: Mapped[bool] = mapped_column(server_default=text("false"))
    embedding_model: Mapped[str | None] = mapped_column(String(255))
    embedding: Mapped[Any] = mapped_column(HALFVEC(), nullable=True)
    content_tsv: Mapped[Any] = mapped_column(TSVECTOR, nullable=True)
    doc_metadata: Mapped[dict[str, Any]] = jsonb()
    created_by: Mapped[uuid.UUID | None] = account_ref()
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()
    indexing_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
