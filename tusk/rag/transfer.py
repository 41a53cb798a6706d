"""Moving a knowledge base between Tusk instances without re-embedding it.

The export is JSON Lines: a header with the dataset's settings, then each document with its
file (base64), then each searchable-generation chunk with its vector. The import gives every
row a new id, stores the files, then writes the dataset, documents and chunks in the caller's
single transaction; if that fails, the files it stored are removed again.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import procrastinate
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tusk import storage
from tusk.db.models import Dataset
from tusk.errors import InvalidParam
from tusk.models.runtime import ModelRuntime
from tusk.queue import enqueue
from tusk.rag.datasets import full_model_name, get_dataset

FORMAT = "tusk-knowledge-base"
VERSION = 1
DATASET_FIELDS = (
    "name",
    "description",
    "indexing_technique",
    "permission",
    "embedding_model",
    "embedding_model_provider",
    "embedding_dimensions",
    "retrieval_model",
    "text_search_config",
    "doc_form",
)
DOCUMENT_FIELDS = (
    "id",
    "position",
    "name",
    "batch",
    "data_source_type",
    "process_rule",
    "created_from",
    "doc_form",
    "doc_language",
    "doc_metadata",
    "word_count",
    "tokens",
    "enabled",
    "archived",
    "completed_segments",
    "total_segments",
)
SEGMENT_FIELDS = (
    "id",
    "document_id",
    "parent_id",
    "kind",
    "position",
    "content",
    "answer",
    "keywords",
    "word_count",
    "tokens",
    "index_node_hash",
    "hit_count",
    "enabled",
    "embedding_model",
    "doc_metadata",
)


class ImportError_(InvalidParam):
    """The file is not a Tusk knowledge base this version can read."""


def _line(record: Mapping[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, default=str) + "\n"


async def export_lines(
    db: AsyncSession, store: storage.Storage, workspace_id: uuid.UUID, dataset_id: uuid.UUID
) -> AsyncIterator[str]:
    dataset = await get_dataset(db, workspace_id, dataset_id)
    header = {field: getattr(dataset, field) for field in DATASET_FIELDS}
    yield _line({"record": "header", "format": FORMAT, "version": VERSION, "dataset": header})
    documents = await db.execute(
        text(
            "SELECT d.*, f.name AS file_name, f.mime_type AS file_mime, f.key AS file_key "
            "FROM documents d LEFT JOIN upload_files f ON f.id = d.file_id "
            "WHERE d.dataset_id = :ds AND d.indexing_status = 'completed' ORDER BY d.position"
        ),
        {"ds": dataset.id},
    )
    for row in documents:
        record: dict[str, Any] = {f: getattr(row, f) for f in DOCUMENT_FIELDS}
        if row.file_key:
            data = b"".join([part async for part in await store.open(row.file_key)])
            record["file"] = {
                "name": row.file_name,
                "mime_type": row.file_mime,
                "data": base64.b64encode(data).decode(),
            }
        yield _line({"record": "document", **record})
    segments = await db.stream(
        text(
            "SELECT s.*, s.embedding::text AS vector FROM document_segments s "
            "JOIN documents d ON d.id = s.document_id AND s.generation = d.generation "
            "WHERE d.dataset_id = :ds AND d.indexing_status = 'completed' "
            "ORDER BY s.document_id, (s.kind = 'child'), s.position"
        ),
        {"ds": dataset.id},
    )
    async for row in segments:
        segment = {f: getattr(row, f) for f in SEGMENT_FIELDS}
        yield _line({"record": "segment", **segment, "embedding": row.vector})


@dataclass
class _Imported:
    dataset_id: uuid.UUID
    documents: dict[str, uuid.UUID] = field(default_factory=dict)
    segments: dict[str, uuid.UUID] = field(default_factory=dict)
    stored_keys: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {"documents": 0, "segments": 0})


def _header(first: str) -> dict[str, Any]:
    try:
        header = json.loads(first)
    except ValueError:
        header = {}
    if header.get("format") != FORMAT:
        raise ImportError_("this is not a Tusk knowledge base export", params="file")
    if header.get("version") != VERSION:
        raise ImportError_(
            f"export version {header.get('version')} is not supported", params="file"
        )
    dataset: dict[str, Any] = header["dataset"]
    return dataset


async def _free_name(db: AsyncSession, workspace_id: uuid.UUID, name: str) -> str:
    taken = {
        row[0]
        for row in await db.execute(
            text("SELECT name FROM datasets WHERE workspace_id = :w"), {"w": workspace_id}
        )
    }
    candidate, number = name, 2
    while candidate in taken:
        suffix = f" ({number})"
        candidate, number = name[: 40 - len(suffix)] + suffix, number + 1
    return candidate


async def _create_dataset(
    db: AsyncSession,
    models: ModelRuntime,
    queue: procrastinate.App,
    workspace_id: uuid.UUID,
    settings: dict[str, Any],
) -> Dataset:
    dataset = Dataset(workspace_id=workspace_id, **{k: settings.get(k) for k in DATASET_FIELDS})
    dataset.name = await _free_name(db, workspace_id, str(settings["name"]))
    model = full_model_name(dataset)
    if dataset.indexing_technique == "high_quality" and model:
        await models.embedding(workspace_id, model)  # the model must exist here too
        await enqueue(
            db,
            queue,
            "rag:ensure_vector_index",
            options={"queueing_lock": f"vector-index:{model}"},
            model=model,
            dimensions=dataset.embedding_dimensions,
        )
    db.add(dataset)
    await db.flush()
    return dataset


async def _document(
    db: AsyncSession,
    store: storage.Storage,
    state: _Imported,
    workspace_id: uuid.UUID,
    record: dict[str, Any],
) -> None:
    new_id = uuid.uuid4()
    state.documents[str(record["id"])] = new_id
    file_id = None
    if record.get("file"):
        file_id = await _file(db, store, state, workspace_id, record["file"])
    values = {f: record.get(f) for f in DOCUMENT_FIELDS if f != "id"}
    for name in ("process_rule", "doc_metadata"):
        values[name] = json.dumps(values[name] or {})
    await db.execute(
        text(
            "INSERT INTO documents (id, workspace_id, dataset_id, position, name, batch, "
            "data_source_type, process_rule, created_from, doc_form, doc_language, doc_metadata, "
            "word_count, tokens, enabled, archived, completed_segments, total_segments, "
            "indexing_status, generation, file_id, data_source_info, completed_at) "
            "VALUES (:id, :ws, :ds, :position, :name, :batch, :data_source_type, "
            "CAST(:process_rule AS jsonb), :created_from, :doc_form, :doc_language, "
            "CAST(:doc_metadata AS jsonb), :word_count, :tokens, :enabled, :archived, "
            ":completed_segments, :total_segments, 'completed', 1, :file_id, "
            "CAST(:source AS jsonb), now())"
        ),
        {
            **values,
            "id": new_id,
            "ws": workspace_id,
            "ds": state.dataset_id,
            "file_id": file_id,
            "source": json.dumps({"upload_file_id": str(file_id)} if file_id else {}),
        },
    )
    state.counts["documents"] += 1


async def _file(
    db: AsyncSession,
    store: storage.Storage,
    state: _Imported,
    workspace_id: uuid.UUID,
    info: dict[str, Any],
) -> uuid.UUID:
    data = base64.b64decode(info["data"])
    file_id = uuid.uuid4()
    extension = str(info["name"]).rsplit(".", 1)[-1].lower() if "." in info["name"] else ""
    key = f"upload_files/{workspace_id}/{file_id}" + (f".{extension}" if extension else "")
    await store.put(key, storage.iter_bytes(data))
    state.stored_keys.append(key)
    await db.execute(
        text(
            "INSERT INTO upload_files (id, workspace_id, storage_type, key, name, size, extension, "
            "mime_type, created_by_role, used) VALUES (:id, :ws, :type, :key, :name, :size, :ext, "
            ":mime, 'account', true)"
        ),
        {
            "id": file_id,
            "ws": workspace_id,
            "type": store.name,
            "key": key,
            "name": info["name"],
            "size": len(data),
            "ext": extension,
            "mime": info.get("mime_type"),
        },
    )
    return file_id


async def _segment(
    db: AsyncSession, state: _Imported, workspace_id: uuid.UUID, record: dict[str, Any]
) -> None:
    new_id = uuid.uuid4()
    state.segments[str(record["id"])] = new_id
    parent = state.segments.get(str(record["parent_id"])) if record.get("parent_id") else None
    values = {
        f: record.get(f) for f in SEGMENT_FIELDS if f not in ("id", "document_id", "parent_id")
    }
    values["keywords"] = json.dumps(values["keywords"] or [])
    values["doc_metadata"] = json.dumps(values["doc_metadata"] or {})
    await db.execute(
        text(
            "INSERT INTO document_segments (id, workspace_id, dataset_id, document_id, parent_id, "
            "kind, position, content, answer, keywords, word_count, tokens, index_node_id, "
            "index_node_hash, hit_count, enabled, embedding_model, embedding, content_tsv, "
            "doc_metadata, generation, status, completed_at) SELECT :id, :ws, :ds, :doc, :parent, "
            ":kind, :position, :content, :answer, CAST(:keywords AS jsonb), :word_count, :tokens, "
            "CAST(:id AS text), :index_node_hash, :hit_count, :enabled, :embedding_model, "
            "CAST(:embedding AS halfvec), to_tsvector(CAST(CASE WHEN ds.text_search_config = "
            "'trigram' THEN 'simple' ELSE ds.text_search_config END AS regconfig), :content), "
            "CAST(:doc_metadata AS jsonb), 1, 'completed', now() FROM datasets ds WHERE ds.id = :ds"
        ),
        {
            **values,
            "id": new_id,
            "ws": workspace_id,
            "ds": state.dataset_id,
            "doc": _known(state.documents, record.get("document_id")),
            "parent": parent,
            "embedding": record.get("embedding"),
        },
    )
    state.counts["segments"] += 1


async def import_lines(
    db: AsyncSession,
    store: storage.Storage,
    models: ModelRuntime,
    queue: procrastinate.App,
    workspace_id: uuid.UUID,
    lines: Iterable[str],
) -> tuple[Dataset, dict[str, int]]:
    """Import in the caller's transaction; the files stored are removed if anything fails."""
    records = iter(lines)
    dataset = await _create_dataset(db, models, queue, workspace_id, _header(next(records, "")))
    state = _Imported(dataset.id)
    try:
        for number, line in enumerate(records, start=2):
            if line.strip():
                await _record(db, store, state, workspace_id, _parsed(line, number))
        await db.execute(
            text(
                "UPDATE document_segments s SET searchable = (s.enabled AND s.kind <> 'parent' "
                "AND d.enabled AND NOT d.archived) FROM documents d "
                "WHERE d.id = s.document_id AND d.dataset_id = :ds"
            ),
            {"ds": dataset.id},
        )
    except BaseException:
        for key in state.stored_keys:
            await store.delete(key)
        raise
    return dataset, state.counts


def _known(ids: dict[str, uuid.UUID], old: Any) -> uuid.UUID:
    try:
        return ids[str(old)]
    except KeyError:
        raise ImportError_(
            f"a chunk refers to document {old}, which the file does not hold", params="file"
        ) from None


def _parsed(line: str, number: int) -> dict[str, Any]:
    try:
        record: dict[str, Any] = json.loads(line)
    except ValueError:
        raise ImportError_(
            f"line {number} is not JSON; is the file complete?", params="file"
        ) from None
    return record


async def _record(
    db: AsyncSession,
    store: storage.Storage,
    state: _Imported,
    workspace_id: uuid.UUID,
    record: dict[str, Any],
) -> None:
    if record.get("record") == "document":
        await _document(db, store, state, workspace_id, record)
    elif record.get("record") == "segment":
        await _segment(db, state, workspace_id, record)
    else:
        raise ImportError_(f"unknown record {record.get('record')!r}", params="file")
