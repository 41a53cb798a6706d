"""Uploaded files: bytes to the configured storage, a row in `upload_files`, nothing half-kept."""

from __future__ import annotations

import hashlib
import mimetypes
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import PurePosixPath

from sqlalchemy.ext.asyncio import AsyncSession

from tusk import storage
from tusk.db.models import UploadFile
from tusk.errors import FileTooLarge, InvalidParam, TuskError

MAX_NAME_LENGTH = 200


@dataclass(frozen=True)
class Uploader:
    """Who uploads: an account of the console, or an end user of an app."""

    workspace_id: uuid.UUID
    role: str  # "account" | "end_user"
    id: uuid.UUID | None


def clean_name(filename: str | None) -> tuple[str, str]:
    """A file's display name and lower-case extension, from what the client sent."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name.strip()
    if not name:
        raise InvalidParam("The uploaded file has no name.", params="file")
    extension = PurePosixPath(name).suffix.lstrip(".").lower()[:32]
    return name[-MAX_NAME_LENGTH:], extension


class _Digest:
    """Counts and hashes bytes as they stream past."""

    def __init__(self, chunks: AsyncIterable[bytes]) -> None:
        self._chunks = chunks
        self.sha256 = hashlib.sha256()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            self.sha256.update(chunk)
            yield chunk


async def save_upload(
    db: AsyncSession,
    store: storage.Storage,
    uploader: Uploader,
    *,
    filename: str | None,
    mime_type: str | None,
    chunks: AsyncIterable[bytes],
    max_bytes: int,
) -> UploadFile:
    name, extension = clean_name(filename)
    key = f"upload_files/{uploader.workspace_id}/{uuid.uuid4()}" + (
        f".{extension}" if extension else ""
    )
    digest = _Digest(chunks)
    try:
        size = await store.put(key, digest, max_bytes=max_bytes)
    except storage.FileTooLarge:
        limit_mb = max_bytes / (1024 * 1024)
        raise FileTooLarge(f"File size exceeded. The limit is {limit_mb:g} MB.") from None
    row = UploadFile(
        workspace_id=uploader.workspace_id,
        storage_type=store.name,
        key=key,
        name=name,
        size=size,
        extension=extension,
        mime_type=mime_type or mimetypes.guess_type(name)[0],
        hash=digest.sha256.hexdigest(),
        created_by_role=uploader.role,
        created_by=uploader.id,
    )
    try:
        db.add(row)
        await db.flush()
        await db.refresh(row)
    except BaseException:
        await store.delete(key)  # the row failed: do not keep its bytes
        raise
    return row


class UploadNotFound(TuskError):
    code, status = "file_not_found", 404


async def find_upload(db: AsyncSession, workspace_id: uuid.UUID, file_id: object) -> UploadFile:
    """An uploaded file of this workspace; one of another workspace is not found."""
    try:
        wanted = uuid.UUID(str(file_id))
    except ValueError:
        raise UploadNotFound("File not found.") from None
    found = await db.get(UploadFile, wanted)
    if found is None or found.workspace_id != workspace_id:
        raise UploadNotFound("File not found.")
    return found
