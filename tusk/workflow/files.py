"""Files as a run sees them: Dify's file objects, made from the workspace's uploads or from URLs
given with the inputs. The bytes stay in storage; the value carries the storage key. Also how
image files become image parts of a model's message (LLM nodes and chat apps alike)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tusk.db.models import UploadFile
from tusk.errors import InvalidParam
from tusk.models.types import ImagePart
from tusk.storage.base import Storage, StorageError
from tusk.workflow.nodes.base import NodeError
from tusk.workflow.nodes.flow import StartVariable
from tusk.workflow.values import FILE_IDENTITY, file_attribute

MAX_IMAGE_BYTES = 20 * 1024 * 1024

EXTENSIONS = {
    "image": frozenset({"jpg", "jpeg", "png", "webp", "gif", "svg"}),
    "document": frozenset(
        {"txt", "md", "markdown", "mdx", "pdf", "html", "htm", "xlsx", "xls", "doc", "docx", "csv",
         "eml", "msg", "pptx", "ppt", "xml", "epub", "json", "vtt", "properties"}
    ),
    "audio": frozenset({"mp3", "m4a", "wav", "amr", "mpga", "webm"}),
    "video": frozenset({"mp4", "mov", "mpeg", "webm"}),
}  # fmt: skip


def file_type_of(extension: str, mime_type: str | None = None) -> str:
    """Dify's file type (image, document, audio, video, custom) of an extension."""
    extension = extension.lower().lstrip(".")
    found = next((kind for kind, known in EXTENSIONS.items() if extension in known), None)
    main_type = (mime_type or "").split("/")[0]
    return found or (main_type if main_type in ("image", "audio", "video") else "custom")


def file_value(
    row: UploadFile, *, file_type: str | None = None, transfer_method: str = "local_file"
) -> dict[str, Any]:
    """A file kept in `upload_files` as a run's value (Dify's serialised File)."""
    return {
        "dify_model_identity": FILE_IDENTITY,
        "id": None,
        "tenant_id": str(row.workspace_id),
        "type": file_type or file_type_of(row.extension, row.mime_type),
        "transfer_method": transfer_method,
        "remote_url": None,
        "related_id": str(row.id),
        "filename": row.name,
        "extension": f".{row.extension}" if row.extension else "",
        "mime_type": row.mime_type,
        "size": row.size,
        "storage_key": row.key,
        "url": None,
    }


def remote_file_value(url: str, file_type: str) -> dict[str, Any]:
    name = url.rsplit("/", 1)[-1].split("?", 1)[0]
    extension = name.rsplit(".", 1)[-1] if "." in name else ""
    return {
        "dify_model_identity": FILE_IDENTITY,
        "id": None,
        "type": file_type or file_type_of(extension),
        "transfer_method": "remote_url",
        "remote_url": url,
        "related_id": None,
        "filename": name,
        "extension": f".{extension}" if extension else "",
        "mime_type": None,
        "size": -1,
        "storage_key": None,
        "url": url,
    }


class UploadResolver:
    """Turns the file objects of a request (`upload_file_id` or `url`) into file values, finding
    uploads only in the caller's workspace."""

    def __init__(
        self, db: AsyncSession, workspace_id: uuid.UUID, *, where: str = "in input form"
    ) -> None:
        self.db = db
        self.workspace_id = workspace_id
        self.where = where  # how errors place the file: "x in input form refers to ..."

    async def __call__(self, given: Mapping[str, Any], field: StartVariable) -> dict[str, Any]:
        method = given.get("transfer_method", "local_file")
        file_type = str(given.get("type") or "")
        if method == "remote_url":
            url = given.get("url") or given.get("remote_url")
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise _bad(field, "needs an http(s) url for a remote_url file", self.where)
            value = remote_file_value(url, file_type)
        elif method == "local_file":
            value = file_value(await self._upload(given, field), file_type=file_type or None)
        else:
            raise _bad(field, f"has an unknown transfer_method {method!r}", self.where)
        _check_allowed(field, value, self.where)
        return value

    async def _upload(self, given: Mapping[str, Any], field: StartVariable) -> UploadFile:
        raw_id = given.get("upload_file_id") or given.get("related_id")
        try:
            file_id = uuid.UUID(str(raw_id))
        except ValueError:
            raise _bad(field, "needs the upload_file_id of an uploaded file", self.where) from None
        query = select(UploadFile).where(
            UploadFile.id == file_id, UploadFile.workspace_id == self.workspace_id
        )
        row = (await self.db.execute(query)).scalar_one_or_none()
        if row is None:
            raise _bad(field, f"refers to a file that does not exist: {file_id}", self.where)
        return row


def _bad(field: StartVariable, problem: str, where: str = "in input form") -> InvalidParam:
    message = " ".join(part for part in (field.variable, where, problem) if part)
    return InvalidParam(message, params=field.variable)


def _check_allowed(field: StartVariable, value: Mapping[str, Any], where: str) -> None:
    kinds = [kind for kind in field.allowed_file_types if kind != "custom"]
    extensions = {e.lower().lstrip(".") for e in field.allowed_file_extensions}
    extension = str(value["extension"]).lower().lstrip(".")
    if "custom" in field.allowed_file_types and extension in extensions:
        return
    if kinds and value["type"] not in kinds and not (extensions and extension in extensions):
        raise _bad(field, f"accepts only {', '.join(field.allowed_file_types)} files", where)
    methods = field.allowed_file_upload_methods
    if methods and value["transfer_method"] not in methods:
        raise _bad(field, f"accepts only files sent as {', '.join(methods)}", where)


# --- reading stored files ------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkspaceFiles:
    """Where the bytes of a workspace's uploaded files are read from."""

    sessions: async_sessionmaker[AsyncSession]
    storage: Storage
    workspace_id: uuid.UUID

    async def upload(self, file: Mapping[str, Any]) -> UploadFile | None:
        """The upload a file value refers to, when it is one of this workspace's."""
        try:
            file_id = uuid.UUID(str(file.get("related_id") or file.get("upload_file_id")))
        except ValueError:
            return None
        async with self.sessions() as db:
            query = select(UploadFile).where(
                UploadFile.id == file_id, UploadFile.workspace_id == self.workspace_id
            )
            return (await db.execute(query)).scalar_one_or_none()

    async def stored_bytes(
        self, file: Mapping[str, Any], limit: int
    ) -> tuple[UploadFile, bytes] | None:
        """An uploaded file and its bytes, or None when it is missing or over `limit` bytes."""
        row = await self.upload(file)
        if row is None or row.size > limit:
            return None
        try:
            return row, b"".join([chunk async for chunk in await self.storage.open(row.key)])
        except StorageError:
            return None


async def _image_url(files: WorkspaceFiles, file: Mapping[str, Any]) -> str | None:
    """A remote image's URL, or an uploaded image as a data: URI."""
    url = file_attribute(file, "url")
    if url:
        return str(url)
    stored = await files.stored_bytes(file, MAX_IMAGE_BYTES)
    if stored is None:
        return None
    row, data = stored
    mime = row.mime_type or file.get("mime_type") or "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


async def image_parts(
    files: WorkspaceFiles,
    values: Iterable[Mapping[str, Any]],
    detail: Literal["auto", "low", "high"],
) -> list[ImagePart]:
    """The images among file values, as parts of a message to a model."""
    parts: list[ImagePart] = []
    for file in values:
        if file.get("type") != "image":
            continue
        url = await _image_url(files, file)
        if not url:
            raise NodeError(f"the image {file.get('filename') or ''!r} cannot be read")
        parts.append(ImagePart(url, detail))
    return parts
