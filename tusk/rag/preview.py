"""What a document would be cut into, before it is indexed: the first chunks and their count."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tusk.db.models import UploadFile
from tusk.errors import InvalidParam, NotFound
from tusk.rag.extract import ExtractionError
from tusk.rag.indexing import chunk_text
from tusk.rag.split import Chunk
from tusk.storage import Storage

PREVIEW_CHUNKS = 10


@dataclass(frozen=True)
class Preview:
    total: int
    first: list[Chunk]


async def _sources(
    db: AsyncSession, store: Storage, workspace_id: uuid.UUID, file_ids: Sequence[uuid.UUID]
) -> list[tuple[bytes, str, str | None]]:
    rows = await db.execute(
        select(UploadFile).where(
            UploadFile.id.in_(file_ids), UploadFile.workspace_id == workspace_id
        )
    )
    files = {row.id: row for row in rows.scalars()}
    missing = [str(i) for i in file_ids if i not in files]
    if missing:
        raise NotFound(f"no uploaded file {', '.join(missing)}")
    sources = []
    for file_id in file_ids:
        row = files[file_id]
        data = b"".join([part async for part in await store.open(row.key)])
        sources.append((data, row.name, row.mime_type))
    return sources


async def preview(
    db: AsyncSession,
    store: Storage,
    workspace_id: uuid.UUID,
    *,
    file_ids: Sequence[uuid.UUID] = (),
    text: str | None = None,
    process_rule: Mapping[str, Any] | None = None,
) -> Preview:
    sources = await _sources(db, store, workspace_id, file_ids)
    if text is not None:
        sources.append((text.encode(), "text.txt", "text/plain"))
    if not sources:
        raise InvalidParam("give file_ids or text to preview", params="info_list")
    chunks: list[Chunk] = []
    for data, name, mime in sources:
        try:
            chunks += await asyncio.to_thread(
                chunk_text, data, name, mime, dict(process_rule or {})
            )
        except ExtractionError as error:
            raise InvalidParam(f"{name}: {error}", params="info_list") from None
    return Preview(len(chunks), chunks[:PREVIEW_CHUNKS])
