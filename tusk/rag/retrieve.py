"""Retrieval: one function for the API, apps, workflow nodes and agents.

Semantic search walks the model's HNSW index with pgvector's iterative scan, so that filters
(datasets, metadata, searchability) still leave `top_k` results. Full-text search ranks a
bounded set of matching candidates, so that a common word stays cheap. Hybrid search runs both
in one statement and fuses the two lists by weighted scores or reciprocal rank. Scores are in
[0, 1]: cosine similarity, `ts_rank_cd` normalised as rank/(rank+1), trigram word similarity.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tusk.db.models import Dataset
from tusk.errors import InvalidParam
from tusk.models.runtime import ModelRuntime
from tusk.rag.datasets import TRIGRAM, full_model_name, tsvector_config
from tusk.rag.filters import Condition, metadata_condition
from tusk.rag.indexing import halfvec_literal
from tusk.rag.settings import RetrievalSettings

CANDIDATES = 1000  # full-text matches ranked per query, at most
OVERSAMPLE = 4  # each list of a hybrid search holds top_k x this
RRF_K = 60
MAX_QUERY_CHARS = 1000


@dataclass(frozen=True)
class Hit:
    segment_id: uuid.UUID
    score: float


@dataclass(frozen=True)
class Record:
    """A retrieved chunk with its document and dataset. For hierarchical documents the chunk is
    the parent, and `child_chunks` the children that matched."""

    segment: dict[str, Any]
    score: float
    document_id: uuid.UUID
    document_name: str
    dataset_id: uuid.UUID
    dataset_name: str
    position: int
    child_chunks: list[dict[str, Any]] = field(default_factory=list)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def semantic_sql(model: str, dimensions: int, condition: Condition) -> str:
    """Nearest chunks of one embedding model; the expression matches the model's index."""
    vector = f"(s.embedding::halfvec({int(dimensions)}))"
    query = f"CAST(:vector AS halfvec({int(dimensions)}))"
    return f"""
        SELECT id, score, row_number() OVER (ORDER BY score DESC) AS rank FROM (
            SELECT s.id, 1 - ({vector} <=> {query}) AS score FROM document_segments s
            WHERE s.embedding_model = {_quote(model)} AND s.searchable
              AND s.dataset_id = ANY(:datasets){condition.and_sql()}
            ORDER BY {vector} <=> {query} LIMIT :limit
        ) nearest
    """  # noqa: S608 - model is quoted, dimensions is an int, values are bound


def full_text_sql(config: str, condition: Condition) -> str:
    """Chunks matching any of the query's words, the best `limit` of at most CANDIDATES."""
    if config == TRIGRAM:
        return f"""
            SELECT id, score, row_number() OVER (ORDER BY score DESC) AS rank FROM (
                SELECT s.id, word_similarity(:query, s.content) AS score FROM document_segments s
                WHERE :query <% s.content AND s.searchable AND s.dataset_id = ANY(:datasets)
                  {condition.and_sql()}
                LIMIT {CANDIDATES}
            ) found ORDER BY score DESC LIMIT :limit
        """  # noqa: S608
    return f"""
        SELECT id, score, row_number() OVER (ORDER BY score DESC) AS rank FROM (
            SELECT s.id, ts_rank_cd(s.content_tsv, q.tsq, 32) AS score
            FROM document_segments s,
                 (SELECT CAST(nullif(replace(CAST(plainto_tsquery(CAST(:config AS regconfig),
                     :query) AS text), '&', '|'), '') AS tsquery) AS tsq) q
            WHERE s.content_tsv @@ q.tsq AND s.searchable AND s.dataset_id = ANY(:datasets)
              {condition.and_sql()}
            LIMIT {CANDIDATES}
        ) found ORDER BY score DESC LIMIT :limit
    """  # noqa: S608


def hybrid_sql(semantic: str, full_text: str, settings: RetrievalSettings) -> str:
    """Both lists in one statement, fused."""
    if settings.fusion == "rrf":
        # Normalised so that a chunk first in both lists scores 1.
        fused = (
            f"(coalesce(1.0 / ({RRF_K} + v.rank), 0) + coalesce(1.0 / ({RRF_K} + k.rank), 0))"
            f" * {(RRF_K + 1) / 2}"
        )
    else:
        fused = "(:vector_weight * coalesce(v.score, 0) + :keyword_weight * coalesce(k.score, 0))"
    return f"""
        WITH v AS ({semantic}), k AS ({full_text})
        SELECT coalesce(v.id, k.id) AS id, {fused} AS score
        FROM v FULL JOIN k ON v.id = k.id ORDER BY score DESC LIMIT :top_k
    """  # noqa: S608


@dataclass(frozen=True)
class Group:
    """Datasets searched together: same embedding model and full-text configuration."""

    datasets: tuple[uuid.UUID, ...]
    model: str | None
    dimensions: int | None
    config: str


def groups(datasets: Sequence[Dataset]) -> list[Group]:
    by_key: dict[tuple[str | None, int | None, str], list[uuid.UUID]] = defaultdict(list)
    for dataset in datasets:
        model = full_model_name(dataset) if dataset.indexing_technique == "high_quality" else None
        dims = dataset.embedding_dimensions if model else None
        by_key[(model, dims, dataset.text_search_config)].append(dataset.id)
    return [Group(tuple(ids), model, dims, config) for (model, dims, config), ids in by_key.items()]


class Retriever:
    def __init__(self, db: AsyncSession, models: ModelRuntime, workspace_id: uuid.UUID) -> None:
        self.db = db
        self.models = models
        self.workspace_id = workspace_id

    async def search(
        self, datasets: Sequence[Dataset], query: str, settings: RetrievalSettings
    ) -> list[Record]:
        query = query.strip()
        if not query or len(query) > MAX_QUERY_CHARS:
            raise InvalidParam(
                f"the query must have 1 to {MAX_QUERY_CHARS} characters", params="query"
            )
        condition = metadata_condition(settings.filters)
        hits: list[Hit] = []
        for group in groups(datasets):
            hits += await self._group(group, query, settings, condition)
        hits = await self._rerank(hits, query, settings)
        if settings.score_threshold is not None:
            hits = [h for h in hits if h.score >= settings.score_threshold]
        return await self._records(datasets, hits)

    async def _group(
        self, group: Group, query: str, settings: RetrievalSettings, condition: Condition
    ) -> list[Hit]:
        method = settings.search_method if group.model else "full_text_search"
        limit = settings.top_k * (
            OVERSAMPLE if method == "hybrid_search" or settings.reranking_model else 1
        )
        params: dict[str, Any] = {
            **condition.params,
            "datasets": list(group.datasets),
            "query": query,
            "config": tsvector_config(group.config),
            "limit": limit,
            "top_k": limit if settings.reranking_model else settings.top_k,
            "vector_weight": settings.vector_weight,
            "keyword_weight": settings.keyword_weight,
        }
        full_text = full_text_sql(group.config, condition)
        sql = full_text
        if method != "full_text_search":
            assert group.model is not None
            assert group.dimensions is not None
            model = await self.models.embedding(self.workspace_id, group.model)
            params["vector"] = halfvec_literal((await model.embed([query], "query"))[0])
            sql = semantic_sql(group.model, group.dimensions, condition)
            if method == "hybrid_search":
                sql = hybrid_sql(sql, full_text, settings)
        await self._tune(limit)
        rows = await self.db.execute(text(sql), params)
        return [Hit(row.id, float(row.score)) for row in rows]

    async def _tune(self, limit: int) -> None:
        """Let the HNSW scan go on past filtered-out chunks and look at enough candidates; and
        commit the hit counts without waiting for the disk (a count lost in a crash is fine).
        One round trip for all of it."""
        ef_search = max(40, min(limit * 2, 1000))  # an int of ours: safe in the statement
        await self.db.execute(
            text(
                "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), "
                f"set_config('hnsw.ef_search', '{ef_search}', true), "
                "set_config('pg_trgm.word_similarity_threshold', '0.3', true), "
                "set_config('synchronous_commit', 'off', true)"
            )
        )

    async def _rerank(self, hits: list[Hit], query: str, settings: RetrievalSettings) -> list[Hit]:
        hits = sorted(hits, key=lambda h: h.score, reverse=True)
        if not settings.reranking_model or not hits:
            return hits[: settings.top_k]
        contents = await self._contents([h.segment_id for h in hits])
        model = await self.models.rerank(self.workspace_id, settings.reranking_model)
        ranked = await model.rerank(query, [contents[h.segment_id] for h in hits], settings.top_k)
        return [replace(hits[r.index], score=r.score) for r in ranked]

    async def _contents(self, ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
        rows = await self.db.execute(
            text("SELECT id, content FROM document_segments WHERE id = ANY(:ids)"), {"ids": ids}
        )
        return {row.id: row.content for row in rows}

    async def _records(self, datasets: Sequence[Dataset], hits: list[Hit]) -> list[Record]:
        if not hits:
            return []
        ids = [h.segment_id for h in hits]
        rows = await self.db.execute(
            text(
                "SELECT s.*, d.name AS document_name FROM document_segments s "
                "JOIN documents d ON d.id = s.document_id "
                # one array of the hits and their parents: a primary-key lookup, where an OR
                # of the two conditions made PostgreSQL scan the whole table
                "WHERE s.id = ANY(CAST(:ids AS uuid[]) || ARRAY(SELECT parent_id "
                "FROM document_segments WHERE id = ANY(:ids) AND parent_id IS NOT NULL))"
            ),
            {"ids": ids},
        )
        by_id = {row.id: row for row in rows}
        await self.db.execute(
            text("UPDATE document_segments SET hit_count = hit_count + 1 WHERE id = ANY(:ids)"),
            {"ids": ids},
        )
        names = {d.id: d.name for d in datasets}
        return _assemble(hits, by_id, names)


def _assemble(
    hits: list[Hit], rows: dict[uuid.UUID, Any], names: dict[uuid.UUID, str]
) -> list[Record]:
    """Records in score order; children fold into their parent, which keeps its best score."""
    records: dict[uuid.UUID, Record] = {}
    for hit in hits:
        row = rows[hit.segment_id]
        shown = rows.get(row.parent_id, row) if row.kind == "child" else row
        record = records.get(shown.id)
        if record is None:
            record = Record(
                segment=segment_json(shown),
                score=hit.score,
                document_id=shown.document_id,
                document_name=shown.document_name,
                dataset_id=shown.dataset_id,
                dataset_name=names.get(shown.dataset_id, ""),
                position=shown.position,
            )
            records[shown.id] = record
        if row.kind == "child":
            record.child_chunks.append({**_child_json(row), "score": hit.score})
    return list(records.values())


def _ts(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value else None


def _child_json(row: Any) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "segment_id": str(row.parent_id),
        "content": row.content,
        "position": row.position,
        "word_count": row.word_count,
        "created_at": _ts(row.created_at),
    }


def segment_json(row: Any) -> dict[str, Any]:
    """A chunk in Dify's segment shape."""
    return {
        "id": str(row.id),
        "position": row.position,
        "document_id": str(row.document_id),
        "content": row.content,
        "sign_content": row.content,
        "answer": row.answer,
        "word_count": row.word_count,
        "tokens": row.tokens,
        "keywords": row.keywords or [],
        "index_node_id": row.index_node_id,
        "index_node_hash": row.index_node_hash,
        "hit_count": row.hit_count,
        "enabled": row.enabled,
        "disabled_at": _ts(row.disabled_at),
        "disabled_by": None,
        "status": row.status,
        "created_by": str(row.created_by) if row.created_by else None,
        "created_at": _ts(row.created_at),
        "updated_at": _ts(row.updated_at),
        "indexing_at": _ts(row.indexing_at),
        "completed_at": _ts(row.completed_at),
        "error": row.error,
        "stopped_at": None,
    }
