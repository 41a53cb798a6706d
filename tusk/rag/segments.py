"""Chunks edited by hand: list, add, update (re-embedded at once), enable, disable, delete."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from tusk.db.models import Dataset, Document, DocumentSegment
from tusk.db.paging import Page, paginate
from tusk.errors import InvalidParam, NotFound
from tusk.models.runtime import ModelRuntime
from tusk.rag.datasets import full_model_name, tsvector_config
from tusk.rag.documents import refresh_searchable
from tusk.rag.indexing import halfvec_literal
from tusk.rag.tokens import count_tokens

MAX_CONTENT_CHARS = 100_000


@dataclass(frozen=True)
class SegmentInput:
    content: str
    answer: str | None = None
    keywords: Sequence[str] | None = None
    enabled: bool | None = None


def _content(value: str) -> str:
    content = value.strip()
    if not 1 <= len(content) <= MAX_CONTENT_CHARS:
        raise InvalidParam(
            f"content must have 1 to {MAX_CONTENT_CHARS} characters", params="content"
        )
    return content


def _ready(document: Document) -> None:
    if document.indexing_status != "completed":
        raise InvalidParam("The document is not completed.", params="document_id")


async def list_segments(
    db: AsyncSession,
    document: Document,
    *,
    page: int,
    limit: int,
    keyword: str | None = None,
    statuses: Sequence[str] = (),
) -> Page[DocumentSegment]:
    """The document's chunks (parents, for hierarchical ones), in order."""
    query = select(DocumentSegment).where(
        DocumentSegment.document_id == document.id,
        DocumentSegment.generation == document.generation,
        DocumentSegment.kind != "child",
    )
    if keyword:
        query = query.where(DocumentSegment.content.icontains(keyword, autoescape=True))
    if statuses:
        query = query.where(DocumentSegment.status.in_(statuses))
    return await paginate(db, query.order_by(DocumentSegment.position), page, limit)


async def children_of(
    db: AsyncSession, parent_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[DocumentSegment]]:
    rows = await db.execute(
        select(DocumentSegment)
        .where(DocumentSegment.parent_id.in_(parent_ids))
        .order_by(DocumentSegment.position)
    )
    found: dict[uuid.UUID, list[DocumentSegment]] = {}
    for child in rows.scalars():
        assert child.parent_id is not None
        found.setdefault(child.parent_id, []).append(child)
    return found


async def get_segment(
    db: AsyncSession, document: Document, segment_id: uuid.UUID
) -> DocumentSegment:
    query = select(DocumentSegment).where(
        DocumentSegment.id == segment_id,
        DocumentSegment.document_id == document.id,
        DocumentSegment.generation == document.generation,
    )
    segment = (await db.execute(query)).scalar_one_or_none()
    if segment is None:
        raise NotFound("Segment not found.")
    return segment


async def _embed(
    models: ModelRuntime, dataset: Dataset, texts: list[str]
) -> tuple[str | None, list[str | None]]:
    """The model and the vectors (as halfvec literals) of texts, or none for economy datasets."""
    model_name = full_model_name(dataset) if dataset.indexing_technique == "high_quality" else None
    if model_name is None:
        return None, [None] * len(texts)
    model = await models.embedding(dataset.workspace_id, model_name)
    return model_name, [halfvec_literal(v) for v in await model.embed(texts, "document")]


async def add_segments(
    db: AsyncSession,
    models: ModelRuntime,
    dataset: Dataset,
    document: Document,
    new: Sequence[SegmentInput],
    created_by: uuid.UUID | None,
) -> list[DocumentSegment]:
    _ready(document)
    if document.doc_form == "hierarchical_model":
        raise InvalidParam(
            "chunks of a hierarchical document are made by its rules", params="segments"
        )
    contents = [_content(s.content) for s in new]
    if not contents:
        raise InvalidParam("segments must not be empty", params="segments")
    model_name, vectors = await _embed(models, dataset, contents)
    start = await _next_position(db, document)
    ids: list[uuid.UUID] = []
    for offset, (item, content, tokens, vector) in enumerate(
        zip(new, contents, count_tokens(contents), vectors, strict=True)
    ):
        segment_id = uuid.uuid4()
        ids.append(segment_id)
        await _insert(
            db,
            dataset,
            document,
            segment_id,
            start + offset,
            item,
            content,
            tokens,
            model_name,
            vector,
            created_by,
        )
    await refresh_searchable(db, [document.id])
    rows = await db.execute(
        select(DocumentSegment)
        .where(DocumentSegment.id.in_(ids))
        .order_by(DocumentSegment.position)
    )
    return list(rows.scalars())


async def _next_position(db: AsyncSession, document: Document) -> int:
    query = select(func.coalesce(func.max(DocumentSegment.position), -1)).where(
        DocumentSegment.document_id == document.id,
        DocumentSegment.generation == document.generation,
        DocumentSegment.kind != "child",
    )
    return int((await db.execute(query)).scalar_one()) + 1


async def _insert(
    db: AsyncSession,
    dataset: Dataset,
    document: Document,
    segment_id: uuid.UUID,
    position: int,
    item: SegmentInput,
    content: str,
    tokens: int,
    model: str | None,
    vector: str | None,
    created_by: uuid.UUID | None,
) -> None:
    await db.execute(
        text(
            "INSERT INTO document_segments (id, workspace_id, dataset_id, document_id, kind, "
            "position, content, answer, keywords, word_count, tokens, index_node_id, "
            "index_node_hash, status, generation, embedding_model, embedding, content_tsv, "
            "doc_metadata, created_by, indexing_at, completed_at, enabled) VALUES (:id, :ws, :ds, "
            ":doc, 'chunk', :position, :content, :answer, CAST(:keywords AS jsonb), :words, "
            ":tokens, :node, :hash, 'completed', :generation, :model, CAST(:vector AS halfvec), "
            "to_tsvector(CAST(:config AS regconfig), :content), CAST(:metadata AS jsonb), "
            ":by, now(), now(), :enabled)"
        ),
        {
            "id": segment_id,
            "ws": dataset.workspace_id,
            "ds": dataset.id,
            "doc": document.id,
            "position": position,
            "content": content,
            "answer": item.answer,
            "keywords": json.dumps(list(item.keywords or [])),
            "words": len(content),
            "tokens": tokens,
            "node": str(segment_id),
            "hash": hashlib.sha256(content.encode()).hexdigest(),
            "generation": document.generation,
            "model": model,
            "vector": vector,
            "config": tsvector_config(dataset.text_search_config),
            "metadata": json.dumps(document.doc_metadata or {}),
            "by": created_by,
            "enabled": item.enabled is not False,
        },
    )


async def update_segment(
    db: AsyncSession,
    models: ModelRuntime,
    dataset: Dataset,
    document: Document,
    segment_id: uuid.UUID,
    change: Mapping[str, Any],
) -> DocumentSegment:
    """New content is re-embedded and re-indexed for full text in this same transaction."""
    segment = await get_segment(db, document, segment_id)
    if "content" in change and change["content"] is not None:
        content = _content(str(change["content"]))
        model_name, vectors = await _embed(models, dataset, [content])
        await db.execute(
            text(
                "UPDATE document_segments SET content = :content, word_count = :words, "
                "tokens = :tokens, index_node_hash = :hash, embedding = CAST(:vector AS halfvec), "
                "embedding_model = :model, content_tsv = to_tsvector(CAST(:config AS regconfig), "
                ":content), updated_at = now() WHERE id = :id"
            ),
            {
                "content": content,
                "words": len(content),
                "tokens": count_tokens([content])[0],
                "hash": hashlib.sha256(content.encode()).hexdigest(),
                "vector": vectors[0],
                "model": model_name,
                "config": tsvector_config(dataset.text_search_config),
                "id": segment.id,
            },
        )
    if change.get("answer") is not None:
        segment.answer = str(change["answer"])
    if change.get("keywords") is not None:
        segment.keywords = list(change["keywords"])
    if change.get("enabled") is not None:
        segment.enabled = bool(change["enabled"])
        segment.disabled_at = None if segment.enabled else func.now()
    await db.flush()
    await refresh_searchable(db, [document.id])
    await db.refresh(segment)
    return segment


async def delete_segment(db: AsyncSession, document: Document, segment_id: uuid.UUID) -> None:
    segment = await get_segment(db, document, segment_id)
    await db.delete(segment)
