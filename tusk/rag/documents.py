"""Documents of a knowledge base: added from text or a file, then indexed by a job that is
enqueued in the same transaction as the document's row (so no document waits for a job that
does not exist)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import procrastinate
from sqlalchemy import ColumnElement, and_, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from tusk import storage
from tusk.db.kv import Db
from tusk.db.models import Dataset, Document, DocumentSegment, UploadFile
from tusk.db.paging import Page, paginate
from tusk.errors import InvalidParam, NotFound
from tusk.queue import enqueue
from tusk.rag.clean import CleaningRules
from tusk.rag.split import SplitRules
from tusk.uploads import Uploader, save_upload

DOC_FORMS = ("text_model", "hierarchical_model")
IN_PROGRESS = ("waiting", "parsing", "cleaning", "splitting", "indexing")
# Dify's `display_status`, from the indexing status and the enabled/archived flags.
DISPLAY_FILTERS: dict[str, ColumnElement[bool]] = {
    "queuing": Document.indexing_status == "waiting",
    "indexing": Document.indexing_status.in_(("parsing", "cleaning", "splitting", "indexing")),
    "paused": Document.indexing_status == "paused",
    "error": Document.indexing_status == "error",
    "available": and_(
        Document.indexing_status == "completed", Document.enabled, Document.archived.is_(False)
    ),
    "disabled": and_(
        Document.indexing_status == "completed",
        Document.enabled.is_(False),
        Document.archived.is_(False),
    ),
    "archived": and_(Document.indexing_status == "completed", Document.archived),
}


STATUS_ACTIONS: dict[str, dict[str, Any]] = {
    "enable": {"enabled": True, "disabled_at": None},
    "disable": {"enabled": False, "disabled_at": func.now()},
    "archive": {"archived": True},
    "un_archive": {"archived": False},
}


def display_status(document: Document) -> str:
    status = document.indexing_status
    if status == "waiting":
        return "queuing"
    if status in IN_PROGRESS:
        return "indexing"
    if status != "completed":
        return status
    if document.archived:
        return "archived"
    return "available" if document.enabled else "disabled"


def new_batch() -> str:
    """A batch id as Dify makes them: a timestamp and random digits."""
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S") + f"{secrets.randbelow(10**6):06d}"


@dataclass(frozen=True)
class DocumentInput:
    name: str
    process_rule: Mapping[str, Any] | None = None
    doc_form: str = "text_model"
    doc_language: str | None = None
    metadata: Mapping[str, Any] | None = None

    def check(self) -> None:
        if not 1 <= len(self.name.strip()) <= 255:
            raise InvalidParam("name must be between 1 and 255 characters", params="name")
        if self.doc_form not in DOC_FORMS:
            raise InvalidParam(f"doc_form must be one of {', '.join(DOC_FORMS)}", params="doc_form")
        rules = SplitRules.from_dify(self.process_rule)  # checked now, used by the job
        if (rules.mode == "hierarchical") != (self.doc_form == "hierarchical_model"):
            raise InvalidParam(
                "hierarchical chunking goes with doc_form hierarchical_model", params="doc_form"
            )
        CleaningRules.from_dify(_rules(self.process_rule).get("pre_processing_rules"))


def _rules(process_rule: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (process_rule or {}).get("rules") or {}


@dataclass(frozen=True)
class Source:
    """What a document is made from: a file's name, type and bytes."""

    filename: str
    mime_type: str | None
    chunks: AsyncIterable[bytes]


def text_source(name: str, body: str) -> Source:
    filename = name if name.lower().endswith((".txt", ".md")) else f"{name}.txt"
    return Source(filename, "text/plain", storage.iter_bytes(body.encode()))


async def _next_position(db: AsyncSession, dataset_id: uuid.UUID) -> int:
    query = select(func.coalesce(func.max(Document.position), 0)).where(
        Document.dataset_id == dataset_id
    )
    return int((await db.execute(query)).scalar_one()) + 1


async def _store(
    db: AsyncSession,
    store: storage.Storage,
    dataset: Dataset,
    source: Source,
    max_bytes: int,
    by: uuid.UUID | None,
) -> UploadFile:
    return await save_upload(
        db,
        store,
        Uploader(dataset.workspace_id, "account", by),
        filename=source.filename,
        mime_type=source.mime_type,
        chunks=source.chunks,
        max_bytes=max_bytes,
    )


async def schedule_indexing(db: AsyncSession, queue: procrastinate.App, document: Document) -> None:
    """Index the document in the same transaction as its change; one job per document at a time."""
    await enqueue(
        db,
        queue,
        "rag:index_document",
        options={"lock": f"document:{document.id}"},
        document_id=str(document.id),
    )


async def add_document(
    db: AsyncSession,
    store: storage.Storage,
    queue: procrastinate.App,
    dataset: Dataset,
    new: DocumentInput,
    source: Source,
    *,
    max_bytes: int,
    created_by: uuid.UUID | None,
    batch: str | None = None,
) -> Document:
    new.check()
    upload = await _store(db, store, dataset, source, max_bytes, created_by)
    document = Document(
        workspace_id=dataset.workspace_id,
        dataset_id=dataset.id,
        position=await _next_position(db, dataset.id),
        name=new.name.strip(),
        batch=batch or new_batch(),
        data_source_type="upload_file",
        data_source_info={"upload_file_id": str(upload.id)},
        process_rule=dict(new.process_rule or {"mode": "automatic"}),
        created_from="api",
        doc_form=new.doc_form,
        doc_language=new.doc_language,
        doc_metadata=dict(new.metadata or {}),
        file_id=upload.id,
        created_by=created_by,
    )
    db.add(document)
    await db.flush()
    await schedule_indexing(db, queue, document)
    await db.refresh(document)
    return document


async def replace_source(
    db: AsyncSession,
    store: storage.Storage,
    queue: procrastinate.App,
    document: Document,
    dataset: Dataset,
    changes: DocumentInput,
    source: Source | None,
    *,
    max_bytes: int,
    by: uuid.UUID | None,
) -> Document:
    """New text, file or rules for a document: it is indexed again, and its old chunks stay
    searchable until the new ones replace them all at once."""
    changes.check()
    if source is not None:
        upload = await _store(db, store, dataset, source, max_bytes, by)
        document.file_id = upload.id
        document.data_source_info = {"upload_file_id": str(upload.id)}
    document.name = changes.name.strip()
    if changes.process_rule is not None:
        document.process_rule = dict(changes.process_rule)
    document.doc_form = changes.doc_form
    _reset_progress(document)
    await db.flush()
    await schedule_indexing(db, queue, document)
    await db.refresh(document)
    return document


def _reset_progress(document: Document) -> None:
    document.indexing_status = "waiting"
    document.error = None
    document.completed_segments = 0
    document.total_segments = 0
    for step in ("processing_started_at", "parsing_completed_at", "cleaning_completed_at"):
        setattr(document, step, None)
    for step in ("splitting_completed_at", "completed_at", "paused_at", "stopped_at"):
        setattr(document, step, None)


async def get_document(
    db: AsyncSession, dataset: Dataset, document_id: uuid.UUID, *, for_update: bool = False
) -> Document:
    query = select(Document).where(Document.id == document_id, Document.dataset_id == dataset.id)
    if for_update:
        query = query.with_for_update()
    document = (await db.execute(query)).scalar_one_or_none()
    if document is None:
        raise NotFound("Document not found.")
    return document


async def list_documents(
    db: AsyncSession,
    dataset: Dataset,
    *,
    page: int,
    limit: int,
    keyword: str | None = None,
    status: str | None = None,
) -> Page[Document]:
    query = select(Document).where(Document.dataset_id == dataset.id)
    if keyword:
        query = query.where(Document.name.icontains(keyword, autoescape=True))
    if status:
        if status not in DISPLAY_FILTERS:
            raise InvalidParam(
                f"status must be one of {', '.join(DISPLAY_FILTERS)}", params="status"
            )
        query = query.where(DISPLAY_FILTERS[status])
    return await paginate(db, query.order_by(Document.position.desc(), Document.id), page, limit)


async def batch_documents(db: AsyncSession, dataset: Dataset, batch: str) -> list[Document]:
    query = (
        select(Document)
        .where(Document.dataset_id == dataset.id, Document.batch == batch)
        .order_by(Document.position)
    )
    documents = list((await db.execute(query)).scalars())
    if not documents:
        raise NotFound("Documents not found.")
    return documents


async def delete_document(
    db: AsyncSession, store: storage.Storage, dataset: Dataset, document_id: uuid.UUID
) -> None:
    document = await get_document(db, dataset, document_id, for_update=True)
    file_id = document.file_id
    await db.delete(document)  # its chunks cascade
    if file_id is not None:
        key = (
            await db.execute(
                delete(UploadFile).where(UploadFile.id == file_id).returning(UploadFile.key)
            )
        ).scalar()
        if key:
            await store.delete(key)


async def set_enabled(
    db: AsyncSession, dataset: Dataset, document_ids: list[uuid.UUID], action: str
) -> None:
    """Dify's enable/disable/archive/un_archive: the chunks' searchability follows at once."""
    if action not in STATUS_ACTIONS:
        raise InvalidParam(f"unknown action {action!r}", params="action")
    await db.execute(
        update(Document)
        .where(Document.dataset_id == dataset.id, Document.id.in_(document_ids))
        .values(**STATUS_ACTIONS[action])
    )
    await refresh_searchable(db, document_ids)


async def refresh_searchable(db: Db, document_ids: list[uuid.UUID]) -> None:
    """A chunk is searchable when it is enabled, of its document's current generation, and the
    document is completed, enabled and not archived."""
    live = and_(
        DocumentSegment.enabled,
        DocumentSegment.generation == Document.generation,
        Document.indexing_status == "completed",
        Document.enabled,
        Document.archived.is_(False),
        DocumentSegment.kind != "parent",  # parents are found through their children
    )
    await db.execute(
        update(DocumentSegment)
        .where(DocumentSegment.document_id == Document.id, Document.id.in_(document_ids))
        .values(searchable=live)
    )


async def pause(db: AsyncSession, dataset: Dataset, document_id: uuid.UUID) -> Document:
    """Stop indexing after the batch in progress; the chunks written so far are kept."""
    document = await get_document(db, dataset, document_id, for_update=True)
    if document.indexing_status not in IN_PROGRESS:
        raise InvalidParam("Only a document being indexed can be paused.", params="document_id")
    document.indexing_status = "paused"
    document.paused_at = func.now()
    await db.flush()
    await db.refresh(document)
    return document


async def resume(
    db: AsyncSession, queue: procrastinate.App, dataset: Dataset, document_id: uuid.UUID
) -> Document:
    """Go on from where the paused run stopped."""
    document = await get_document(db, dataset, document_id, for_update=True)
    if document.indexing_status != "paused":
        raise InvalidParam("The document is not paused.", params="document_id")
    document.indexing_status = "parsing"  # a resumed run keeps the batches already written
    document.paused_at = None
    await db.flush()
    await schedule_indexing(db, queue, document)
    await db.refresh(document)
    return document
