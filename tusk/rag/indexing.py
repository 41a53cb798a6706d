"""Indexing a document: read -> extract -> clean -> split -> embed -> write, transactionally.

The chunks of a run are written under the next `generation` of the document, in batches: a
batch's rows (text, vector, tsvector) and the document's progress commit together. Chunk ids
are derived from (document, generation, position), so a run that a dead worker left half-done
is resumed by the next attempt without a duplicate and without a gap. When every chunk is
written, one transaction makes the new generation searchable, deletes the old one and marks the
document completed: searches see the old chunks or the new ones, never a mix. A failure marks
the document `error` with a reason and removes the unfinished generation.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tusk.models.errors import ModelError
from tusk.models.runtime import ModelRuntime
from tusk.rag.clean import CleaningRules, clean
from tusk.rag.datasets import tsvector_config
from tusk.rag.documents import refresh_searchable
from tusk.rag.extract import ExtractionError, extract
from tusk.rag.split import Chunk, SplitRules, split
from tusk.rag.tokens import count_tokens
from tusk.storage import Storage

log = logging.getLogger(__name__)

EMBED_BATCH = 32
RESUMABLE = ("parsing", "cleaning", "splitting", "indexing")
SEGMENT_IDS = uuid.UUID("6f1c2b4e-8f7a-4d2e-9a51-3c0e7d9b5a10")


@dataclass(frozen=True)
class Planned:
    """A chunk as it will be stored."""

    id: uuid.UUID
    kind: str  # "chunk", "parent" or "child"
    position: int
    parent_id: uuid.UUID | None
    text: str
    tokens: int

    @property
    def embedded(self) -> bool:
        return self.kind != "parent"


def segment_id(
    document_id: uuid.UUID, generation: int, position: int, child: int | None
) -> uuid.UUID:
    return uuid.uuid5(SEGMENT_IDS, f"{document_id}/{generation}/{position}/{child}")


def plan(document_id: uuid.UUID, generation: int, chunks: Sequence[Chunk]) -> list[Planned]:
    """Rows for the chunks: plain chunks, or parents each followed by their children."""
    planned: list[Planned] = []
    for chunk in chunks:
        own_id = segment_id(document_id, generation, chunk.position, None)
        kind = "parent" if chunk.children else "chunk"
        planned.append(Planned(own_id, kind, chunk.position, None, chunk.text, chunk.tokens))
        for child in chunk.children:
            child_id = segment_id(document_id, generation, chunk.position, child.position)
            planned.append(
                Planned(child_id, "child", child.position, own_id, child.text, child.tokens)
            )
    return planned


def chunk_text(
    raw: bytes, filename: str, mime_type: str | None, rule: dict[str, Any]
) -> list[Chunk]:
    """Extract, clean and split: the CPU part of indexing, run in a thread."""
    extracted = extract(raw, filename, mime_type)
    rules = (rule or {}).get("rules") or {}
    cleaned = clean(extracted.text, CleaningRules.from_dify(rules.get("pre_processing_rules")))
    chunks = split(cleaned, SplitRules.from_dify(rule), count_tokens)
    if not chunks:
        raise ExtractionError("no text is left after cleaning; check the document and its rules")
    return chunks


def batches(items: Sequence[Planned], size: int) -> Iterator[list[Planned]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def halfvec_literal(vector: Sequence[float]) -> str:
    return "[" + ",".join(f"{value:.6g}" for value in vector) + "]"


@dataclass(frozen=True)
class Target:
    """What a run knows of its document and dataset when it starts."""

    document_id: uuid.UUID
    workspace_id: uuid.UUID
    generation: int  # the one being written
    model: str | None  # provider:model, None for economy datasets
    ts_config: str
    metadata: dict[str, Any]
    fresh: bool  # False when resuming a run a dead worker left


INSERT = text(
    """
    INSERT INTO document_segments (
        id, workspace_id, dataset_id, document_id, parent_id, kind, position, content,
        word_count, tokens, index_node_id, index_node_hash, status, generation, searchable,
        embedding_model, embedding, content_tsv, doc_metadata, indexing_at, completed_at)
    SELECT CAST(:id AS uuid), d.workspace_id, d.dataset_id, d.id, CAST(:parent_id AS uuid), :kind,
        :position, :content, :word_count, :tokens, :id, :hash, 'completed', :generation, false,
        :model, CAST(:embedding AS halfvec), to_tsvector(CAST(:config AS regconfig), :content),
        CAST(:metadata AS jsonb), now(), now()
    FROM documents d WHERE d.id = :document_id
    ON CONFLICT (id) DO NOTHING
    """
)


def _row(target: Target, item: Planned, vector: Sequence[float] | None) -> dict[str, Any]:
    return {
        "id": str(item.id),
        "parent_id": str(item.parent_id) if item.parent_id else None,
        "kind": item.kind,
        "position": item.position,
        "content": item.text,
        "word_count": len(item.text),
        "tokens": item.tokens,
        "hash": hashlib.sha256(item.text.encode()).hexdigest(),
        "generation": target.generation,
        "model": target.model if vector is not None else None,
        "embedding": halfvec_literal(vector) if vector is not None else None,
        "config": target.ts_config,
        "metadata": json.dumps(target.metadata),
        "document_id": target.document_id,
    }


class Stopped(Exception):
    """The document was deleted, paused or replaced while its run went on."""


class IndexingRun:
    def __init__(self, engine: AsyncEngine, models: ModelRuntime, store: Storage) -> None:
        self.engine = engine
        self.models = models
        self.store = store

    async def run(self, document_id: uuid.UUID, *, last_attempt: bool = True) -> str:
        """Index the document; returns its final status ("completed", "error", or "skipped")."""
        started = time.perf_counter()
        target_and_source = await self._begin(document_id)
        if target_and_source is None:
            return "skipped"
        target, source = target_and_source
        try:
            chunks = await asyncio.to_thread(chunk_text, *source)
            planned = plan(document_id, target.generation, chunks)
            await self._progress(target, "indexing", "splitting_completed_at", total=planned)
            await self._write(target, planned)
            await self._swap(target, planned, time.perf_counter() - started)
        except Stopped:
            return "skipped"
        except ExtractionError as error:
            return await self._fail(target, str(error))
        except ModelError as error:
            if error.retryable and not last_attempt:
                raise  # the queue retries the job later; written batches are kept
            return await self._fail(target, f"the embedding model failed: {error.message}")
        return "completed"

    async def _begin(
        self, document_id: uuid.UUID
    ) -> tuple[Target, tuple[bytes, str, str | None, dict[str, Any]]] | None:
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT d.*, ds.indexing_technique, ds.embedding_model AS model_name, "
                        "ds.embedding_model_provider, ds.text_search_config "
                        "FROM documents d JOIN datasets ds ON ds.id = d.dataset_id "
                        "WHERE d.id = :id FOR UPDATE OF d"
                    ),
                    {"id": document_id},
                )
            ).first()
            if row is None or row.indexing_status not in ("waiting", *RESUMABLE):
                return None  # deleted, finished, failed or paused: nothing to do
            fresh = row.indexing_status == "waiting"
            target = _target(row, fresh)
            if fresh:  # a run stopped by a replacement may have left rows of this generation
                await conn.execute(
                    text(
                        "DELETE FROM document_segments WHERE document_id = :d AND generation > :g"
                    ),
                    {"d": document_id, "g": row.generation},
                )
            await conn.execute(
                text(
                    "UPDATE documents SET indexing_status = 'parsing', error = NULL, "
                    "processing_started_at = coalesce(processing_started_at, now()) WHERE id = :d"
                ),
                {"d": document_id},
            )
            upload = (
                await conn.execute(
                    text("SELECT * FROM upload_files WHERE id = :f"), {"f": row.file_id}
                )
            ).first()
        if upload is None:
            await self._fail(target, "the document's file is missing; upload it again")
            return None
        raw = await self._read(upload)
        await self._progress(target, "splitting", "parsing_completed_at")
        return target, (raw, upload.name, upload.mime_type, dict(row.process_rule or {}))

    async def _read(self, upload: Any) -> bytes:
        parts = [chunk async for chunk in await self.store.open(upload.key)]
        return b"".join(parts)

    async def _progress(
        self, target: Target, status: str, step: str, total: Sequence[Planned] | None = None
    ) -> None:
        total_segments = sum(1 for p in total if p.embedded) if total is not None else None
        async with self.engine.begin() as conn:
            await self._check_wanted(conn, target)
            await conn.execute(
                text(
                    f"UPDATE documents SET indexing_status = :status, {step} = now(), "  # noqa: S608
                    "total_segments = coalesce(:total, total_segments) WHERE id = :d"
                ),
                {"status": status, "total": total_segments, "d": target.document_id},
            )

    async def _check_wanted(self, conn: AsyncConnection, target: Target) -> None:
        """Lock the document's row; stop if the run is no longer wanted."""
        status = (
            await conn.execute(
                text("SELECT indexing_status FROM documents WHERE id = :d FOR UPDATE"),
                {"d": target.document_id},
            )
        ).scalar()
        if status not in RESUMABLE:
            raise Stopped

    async def _written(self, target: Target) -> set[uuid.UUID]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT id FROM document_segments WHERE document_id = :d AND generation = :g"),
                {"d": target.document_id, "g": target.generation},
            )
            return {row.id for row in rows}

    async def _write(self, target: Target, planned: list[Planned]) -> None:
        written = await self._written(target)
        pending = [p for p in planned if p.id not in written]
        model = (
            await self.models.embedding(target.workspace_id, target.model) if target.model else None
        )
        for batch in batches(pending, EMBED_BATCH):
            texts = [p.text for p in batch if p.embedded]
            vectors = iter(await model.embed(texts, "document") if model and texts else [])
            rows = [_row(target, p, next(vectors) if model and p.embedded else None) for p in batch]
            async with self.engine.begin() as conn:
                await self._check_wanted(conn, target)
                await conn.execute(INSERT, rows)
                await conn.execute(
                    text(
                        "UPDATE documents SET completed_segments = (SELECT count(*) FROM "
                        "document_segments WHERE document_id = :d AND generation = :g AND "
                        "kind <> 'parent') WHERE id = :d"
                    ),
                    {"d": target.document_id, "g": target.generation},
                )

    async def _swap(self, target: Target, planned: list[Planned], seconds: float) -> None:
        matched = [p for p in planned if p.embedded]
        async with self.engine.begin() as conn:
            await self._check_wanted(conn, target)
            await conn.execute(
                text("DELETE FROM document_segments WHERE document_id = :d AND generation <> :g"),
                {"d": target.document_id, "g": target.generation},
            )
            await conn.execute(
                text(
                    "UPDATE documents SET generation = :g, indexing_status = 'completed', "
                    "completed_at = now(), error = NULL, word_count = :words, tokens = :tokens, "
                    "indexing_latency = :seconds WHERE id = :d"
                ),
                {
                    "g": target.generation,
                    "words": sum(len(p.text) for p in matched),
                    "tokens": sum(p.tokens for p in matched),
                    "seconds": seconds,
                    "d": target.document_id,
                },
            )
            await refresh_searchable(conn, [target.document_id])

    async def _fail(self, target: Target, reason: str) -> str:
        log.info("document %s failed to index: %s", target.document_id, reason)
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    "DELETE FROM document_segments s USING documents d WHERE s.document_id = d.id "
                    "AND d.id = :d AND s.generation > d.generation"
                ),
                {"d": target.document_id},
            )
            await conn.execute(
                text(
                    "UPDATE documents SET indexing_status = 'error', error = :reason, "
                    "stopped_at = now() WHERE id = :d"
                ),
                {"reason": reason, "d": target.document_id},
            )
        return "error"


def _target(row: Any, fresh: bool) -> Target:
    model = None
    if row.indexing_technique == "high_quality" and row.model_name:
        model = f"{row.embedding_model_provider}:{row.model_name}"
    return Target(
        document_id=row.id,
        workspace_id=row.workspace_id,
        generation=row.generation + 1,
        model=model,
        ts_config=tsvector_config(row.text_search_config),
        metadata=dict(row.doc_metadata or {}),
        fresh=fresh,
    )
