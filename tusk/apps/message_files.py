"""Files sent with a chat or completion message (the `files` of Dify's request bodies): checked
against the app's `file_upload` settings, resolved to the workspace's uploads or to URLs, kept
as message files, and given to the model.

Images go to the model as image parts of the user's message. Documents are read as text (with
the knowledge engine's extractors) and added to the query, each between <document> tags, so that
any chat model can use them. Audio, video and other files are kept with the message only."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tusk.db.models import Message, UploadFile
from tusk.db.models.message_files import MessageFile
from tusk.errors import InvalidParam, TuskError
from tusk.models.types import Message as ChatMessage
from tusk.net.ssrf import AllowList, guarded_client, read_limited, send
from tusk.workflow.context import Resources
from tusk.workflow.files import UploadResolver, WorkspaceFiles, file_type_of, image_parts
from tusk.workflow.nodes.base import NodeError
from tusk.workflow.nodes.document_extractor import text_of
from tusk.workflow.nodes.flow import StartVariable
from tusk.workflow.nodes.prompts import with_images

FILE_TYPES = ("image", "document", "audio", "video", "custom")
TRANSFER_METHODS = ("local_file", "remote_url")
DEFAULT_IMAGE_LIMIT = 3  # Dify's number_limits for the older `image` settings
MAX_DOCUMENT_CHARS = 100_000  # of all documents of one message, as given to the model
REMOTE_TIMEOUT = 30.0
Detail = Literal["low", "high"]


# --- the app's settings --------------------------------------------------------------------------


@dataclass(frozen=True)
class FileRules:
    """What an app accepts, from its `file_upload` settings (Dify's FileUploadConfig)."""

    allowed_file_types: tuple[str, ...] = ()
    allowed_file_extensions: frozenset[str] = frozenset()  # lower case, without the dot
    allowed_file_upload_methods: tuple[str, ...] = ()
    number_limits: int = 0  # 0: no limit on all files together
    image_number_limits: int = 1
    image_transfer_methods: tuple[str, ...] = ()
    detail: Detail = "high"


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(item) for item in value) if isinstance(value, list) else ()


def _number(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _detail(image: Mapping[str, Any]) -> Detail:
    return "low" if image.get("detail") == "low" else "high"


def file_rules(document: Mapping[str, Any] | None) -> FileRules | None:
    """The rules of an app's `file_upload` settings, or None when it accepts no files. The
    current form (`enabled`, `allowed_file_types`, ...) wins; the older `image` block alone
    allows images only."""
    settings = (document or {}).get("file_upload")
    if not isinstance(settings, Mapping):
        return None
    raw_image = settings.get("image")
    image: Mapping[str, Any] = raw_image if isinstance(raw_image, Mapping) else {}
    if settings.get("enabled"):
        methods = _strings(settings.get("allowed_file_upload_methods"))
        extensions = _strings(settings.get("allowed_file_extensions"))
        return FileRules(
            allowed_file_types=_strings(settings.get("allowed_file_types")),
            allowed_file_extensions=frozenset(e.lower().lstrip(".") for e in extensions),
            allowed_file_upload_methods=methods,
            number_limits=_number(settings.get("number_limits"), 0),
            image_number_limits=_number(settings.get("number_limits"), 1),
            image_transfer_methods=methods,
            detail=_detail(image),
        )
    if image.get("enabled"):
        limit = _number(image.get("number_limits"), DEFAULT_IMAGE_LIMIT)
        methods = _strings(image.get("transfer_methods")) or TRANSFER_METHODS
        return FileRules(("image",), frozenset(), methods, limit, limit, methods, _detail(image))
    return None


# --- checking and resolving a request's files ----------------------------------------------------


def _bad(problem: str) -> InvalidParam:
    return InvalidParam(problem, params="files")


def _mappings(given: Any) -> list[Mapping[str, Any]]:
    if not isinstance(given, list) or not all(isinstance(item, Mapping) for item in given):
        raise _bad("files must be a list of file objects")
    for index, item in enumerate(given):
        if item.get("type") not in FILE_TYPES:
            raise _bad(f"files[{index}].type must be one of {', '.join(FILE_TYPES)}")
        if item.get("transfer_method", "local_file") not in TRANSFER_METHODS:
            raise _bad(f"files[{index}].transfer_method must be local_file or remote_url")
    return list(given)


def _check_counts(rules: FileRules, mappings: Sequence[Mapping[str, Any]]) -> None:
    images = sum(1 for item in mappings if item.get("type") == "image")
    if images > rules.image_number_limits:
        raise _bad(
            f"files: at most {rules.image_number_limits} image(s) can be sent with a message, "
            f"not {images}"
        )
    if rules.number_limits and len(mappings) > rules.number_limits:
        raise _bad(
            f"files: at most {rules.number_limits} file(s) can be sent with a message, "
            f"not {len(mappings)}"
        )


def _check_file(rules: FileRules, index: int, value: Mapping[str, Any]) -> None:
    """Dify's rules: the type must be allowed (a custom file by its extension), and the way it
    is sent (images by the image transfer methods)."""
    kind, method = str(value["type"]), str(value["transfer_method"])
    extension = str(value.get("extension") or "").lower().lstrip(".")
    where = f"files[{index}]"
    if rules.allowed_file_types and kind not in rules.allowed_file_types and kind != "custom":
        allowed = ", ".join(rules.allowed_file_types)
        raise _bad(f"{where}: {kind} files are not accepted by this app (allowed: {allowed})")
    if kind == "custom" and extension not in rules.allowed_file_extensions:
        raise _bad(f"{where}: files with the extension {extension or '(none)'!r} are not accepted")
    methods = rules.image_transfer_methods if kind == "image" else ()
    methods = methods or rules.allowed_file_upload_methods
    if methods and method not in methods:
        raise _bad(f"{where}: files sent as {method} are not accepted (allowed: "
                   f"{', '.join(methods)})")  # fmt: skip


def _check_type(index: int, value: Mapping[str, Any]) -> None:
    """A file sent as one type must not be known as another (a PDF sent as an image)."""
    found = file_type_of(str(value.get("extension") or ""), value.get("mime_type"))
    if value["type"] != "custom" and found != "custom" and found != value["type"]:
        name = value.get("filename") or ""
        raise _bad(f"files[{index}] is sent as {value['type']}, but {name!r} is a {found} file")


async def request_files(
    db: AsyncSession, workspace_id: uuid.UUID, rules: FileRules | None, given: Any
) -> list[dict[str, Any]]:
    """The files of a request as file values, checked against the app's rules (400
    `invalid_param` naming the problem); uploads are looked up in the workspace only."""
    if not given:
        return []
    mappings = _mappings(given)
    if rules is None:
        raise _bad("files: this app does not accept files (file_upload is not enabled)")
    _check_counts(rules, mappings)
    resolve = UploadResolver(db, workspace_id, where="")
    values = []
    for index, mapping in enumerate(mappings):
        value = await resolve(mapping, StartVariable(variable=f"files[{index}]", type="file"))
        _check_type(index, value)
        _check_file(rules, index, value)
        values.append(value)
    return values


# --- message files -------------------------------------------------------------------------------


def _creator(message: Message) -> tuple[str, uuid.UUID | None]:
    if message.from_end_user_id is not None:
        return "end_user", message.from_end_user_id
    return "account", message.from_account_id


def _upload_id(value: Mapping[str, Any]) -> uuid.UUID | None:
    if value.get("transfer_method") == "remote_url" or not value.get("related_id"):
        return None
    return uuid.UUID(str(value["related_id"]))


def file_rows(
    message: Message, values: Sequence[Mapping[str, Any]], belongs_to: str = "user"
) -> tuple[list[MessageFile], list[dict[str, Any]]]:
    """The rows of the message's files, and the files as Dify shows message files."""
    role, creator = _creator(message)
    # Ids in ascending order: listed by (created_at, id), the files keep the order they were sent.
    ids = sorted(uuid.uuid4() for _ in values)
    rows, shown = [], []
    for file_id, value in zip(ids, values, strict=True):
        row = MessageFile(
            id=file_id,
            workspace_id=message.workspace_id,
            message_id=message.id,
            type=str(value.get("type") or "custom"),
            transfer_method=str(value.get("transfer_method") or "local_file"),
            url=value.get("remote_url"),
            belongs_to=belongs_to,
            upload_file_id=_upload_id(value),
            created_by_role=role,
            created_by=creator,
        )
        rows.append(row)
        shown.append(file_json(row, value.get("filename"), value.get("mime_type"), value["size"]))
    return rows, shown


def preview_url(upload_file_id: uuid.UUID) -> str:
    return f"/v1/files/{upload_file_id}/preview"


def file_json(
    row: MessageFile, filename: str | None, mime_type: str | None, size: int | None
) -> dict[str, Any]:
    """A message file with Dify's keys; an uploaded file's url is its preview path."""
    upload = row.upload_file_id
    url = row.url or (preview_url(upload) if upload else None)
    if filename is None and row.url:
        filename = row.url.rsplit("/", 1)[-1].split("?", 1)[0]
    return {
        "id": str(row.id),
        "filename": filename or "",
        "type": row.type,
        "url": url,
        "mime_type": mime_type,
        "size": size if size is not None else -1,
        "transfer_method": row.transfer_method,
        "belongs_to": row.belongs_to,
        "upload_file_id": str(upload) if upload else None,
    }


async def message_files(
    db: AsyncSession, workspace_id: uuid.UUID, message_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[dict[str, Any]]]:
    """The files of each message, in the order they were sent."""
    if not message_ids:
        return {}
    query = (
        select(MessageFile, UploadFile)
        .outerjoin(UploadFile, UploadFile.id == MessageFile.upload_file_id)
        .where(MessageFile.workspace_id == workspace_id, MessageFile.message_id.in_(message_ids))
        .order_by(MessageFile.created_at, MessageFile.id)
    )
    found: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for row, upload in (await db.execute(query)).all():
        shown = (
            file_json(row, upload.name, upload.mime_type, upload.size)
            if upload is not None
            else file_json(row, None, None, None)
        )
        found.setdefault(row.message_id, []).append(shown)
    return found


# --- the files as the model gets them ------------------------------------------------------------


@dataclass(frozen=True)
class ChatFiles:
    """The files of one message: their values, how images are detailed, and how they are shown
    (in `message_end`)."""

    values: list[dict[str, Any]] = field(default_factory=list)
    detail: Detail = "high"
    shown: list[dict[str, Any]] = field(default_factory=list)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [value for value in self.values if value.get("type") == kind]


NO_FILES = ChatFiles()


def _reader(resources: Resources | None, workspace_id: uuid.UUID) -> WorkspaceFiles:
    if resources is None:
        raise NodeError("files sent with a message cannot be read here")
    return WorkspaceFiles(resources.sessions, resources.storage, workspace_id)


async def with_image_parts(
    resources: Resources | None,
    workspace_id: uuid.UUID,
    files: ChatFiles,
    messages: list[ChatMessage],
) -> list[ChatMessage]:
    """The prompt with the message's images added to its last user message."""
    images = files.of_type("image")
    if not images:
        return messages
    parts = await image_parts(_reader(resources, workspace_id), images, files.detail)
    return with_images(messages, parts)


async def _remote_bytes(resources: Resources, url: str) -> bytes:
    allow = AllowList.from_settings(resources.settings)
    limit = resources.settings.upload_limit_bytes
    try:
        async with guarded_client(allow, timeout=REMOTE_TIMEOUT) as client:
            response = await send(client, client.build_request("GET", url))
            try:
                response.raise_for_status()
                return await read_limited(response, limit, "remote file")
            finally:
                await response.aclose()
    except (TuskError, httpx.HTTPError) as exc:
        raise NodeError(f"cannot download {url}: {exc}") from None


async def _document_text(
    resources: Resources, reader: WorkspaceFiles, value: Mapping[str, Any]
) -> str:
    name = value.get("filename") or ""
    if value.get("transfer_method") == "remote_url":
        data = await _remote_bytes(resources, str(value.get("remote_url") or ""))
    else:
        stored = await reader.stored_bytes(value, resources.settings.upload_limit_bytes)
        if stored is None:
            raise NodeError(f"the document {name!r} cannot be read")
        data = stored[1]
    return await asyncio.to_thread(text_of, data, value)


def documents_block(documents: Sequence[tuple[str, str]]) -> str:
    """The documents' text as it follows the query, cut at MAX_DOCUMENT_CHARS in all."""
    blocks, room = [], MAX_DOCUMENT_CHARS
    for name, raw in documents:
        if room <= 0:
            break
        text = raw.strip()
        body = text if len(text) <= room else text[:room] + "\n[...]"
        room -= len(text)
        blocks.append(f'<document name="{name}">\n{body}\n</document>')
    return "\n\n".join(blocks)


async def query_with_documents(
    resources: Resources | None, workspace_id: uuid.UUID, files: ChatFiles, query: str
) -> str:
    """The query as the model gets it: followed by the text of the message's documents."""
    documents = files.of_type("document")
    if not documents:
        return query
    reader = _reader(resources, workspace_id)
    assert resources is not None  # _reader refuses None
    texts = [
        (str(value.get("filename") or ""), await _document_text(resources, reader, value))
        for value in documents
    ]
    block = documents_block(texts)
    return f"{query}\n\n{block}" if query else block
