"""Document extractor: the text of a file, or of each file of an array, with the knowledge
engine's extractors (`tusk.rag.extract`). Outputs `text`: a string for a file, an array of
strings for an array of files.

Also where a workflow reads a file value's bytes (`read_file`): uploaded and generated files from
the workspace's storage, remote files through the SSRF guard."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath
from typing import Any

import httpx
from sqlalchemy import select

from tusk.db.models import UploadFile
from tusk.errors import TuskError
from tusk.net.ssrf import AllowList, guarded_client, read_limited, send
from tusk.rag.extract import EMPTY, ExtractionError, extract
from tusk.storage import ObjectNotFound
from tusk.workflow.graph import NodeSpec
from tusk.workflow.nodes.base import Config, Node, NodeContext, NodeError, NodeResult, parse_config
from tusk.workflow.values import is_file, type_of
from tusk.workflow.variables import Selector

STORED = frozenset({"local_file", "tool_file"})  # bytes in the workspace's storage
REMOTE_TIMEOUT = 30.0


class DocumentExtractorConfig(Config):
    variable_selector: list[str] = []


class FileReadError(NodeError):
    pass


class TextExtractionError(NodeError):
    pass


# --- reading a file value's bytes --------------------------------------------------------------


def file_label(file: Mapping[str, Any]) -> str:
    return repr(file.get("filename") or file.get("related_id") or file.get("remote_url") or "")


def _related_id(file: Mapping[str, Any]) -> uuid.UUID:
    try:
        return uuid.UUID(str(file.get("related_id")))
    except ValueError:
        raise FileReadError(f"the file {file_label(file)} has no valid stored file id") from None


async def _read_stored(ctx: NodeContext, file: Mapping[str, Any], limit: int) -> bytes:
    resources = ctx.run.resources
    async with resources.sessions() as db:
        row = await db.scalar(
            select(UploadFile).where(
                UploadFile.id == _related_id(file),
                UploadFile.workspace_id == ctx.run.workspace_id,
            )
        )
    if row is None:
        raise FileReadError(f"the file {file_label(file)} no longer exists")
    if row.size > limit:
        raise FileReadError(f"the file {file_label(file)} is over {limit} bytes")
    try:
        return b"".join([chunk async for chunk in await resources.storage.open(row.key)])
    except ObjectNotFound:
        raise FileReadError(f"the bytes of the file {file_label(file)} are missing") from None


async def _read_remote(ctx: NodeContext, file: Mapping[str, Any], limit: int) -> bytes:
    url = file.get("remote_url") or file.get("url")
    if not url:
        raise FileReadError(f"the remote file {file_label(file)} has no URL")
    allow = AllowList.from_settings(ctx.run.resources.settings)
    try:
        async with guarded_client(allow, timeout=REMOTE_TIMEOUT) as client:
            response = await send(client, client.build_request("GET", str(url)))
            try:
                response.raise_for_status()
                return await read_limited(response, limit, "remote file")
            finally:
                await response.aclose()
    except (TuskError, httpx.HTTPError) as exc:
        raise FileReadError(f"cannot download {url}: {exc}") from None


async def read_file(ctx: NodeContext, file: Mapping[str, Any]) -> bytes:
    """The bytes of a file value, at most the upload size limit."""
    limit = ctx.run.resources.settings.upload_limit_bytes
    method = file.get("transfer_method")
    if method in STORED:
        return await _read_stored(ctx, file, limit)
    if method == "remote_url":
        return await _read_remote(ctx, file, limit)
    raise FileReadError(f"the file {file_label(file)} has an unknown transfer method {method!r}")


# --- extracting text ---------------------------------------------------------------------------


def extraction_name(file: Mapping[str, Any]) -> str:
    """A file name whose extension says the format (the value's extension wins)."""
    name = str(file.get("filename") or "document")
    extension = str(file.get("extension") or "").lstrip(".")
    if extension and PurePosixPath(name).suffix.lstrip(".").lower() != extension.lower():
        return f"{name}.{extension}"
    return name


def text_of(data: bytes, file: Mapping[str, Any]) -> str:
    try:
        return extract(data, extraction_name(file), file.get("mime_type")).text
    except ExtractionError as exc:
        if str(exc) == EMPTY:
            return ""
        raise TextExtractionError(f"cannot extract text from {file_label(file)}: {exc}") from None


async def extract_file(ctx: NodeContext, file: Mapping[str, Any]) -> str:
    data = await read_file(ctx, file)
    return await asyncio.to_thread(text_of, data, file)


class DocumentExtractorNode(Node):
    type = "document-extractor"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.config = parse_config(DocumentExtractorConfig, spec)

    def reads(self) -> Iterable[Selector]:
        return [self.config.variable_selector] if self.config.variable_selector else []

    def output_names(self) -> frozenset[str]:
        return frozenset({"text"})

    async def run(self, ctx: NodeContext) -> NodeResult:
        selector = self.config.variable_selector
        if not ctx.pool.has(selector):
            raise NodeError(f"no file variable at {'.'.join(selector) or '(none)'}")
        value = ctx.pool.get(selector)
        inputs = {"variable_selector": list(selector)}
        if isinstance(value, list):
            files = [item for item in value if item]
            if not all(is_file(item) for item in files):
                raise NodeError(f"{'.'.join(selector)} is {type_of(value)}, not an array of files")
            texts = [await extract_file(ctx, file) for file in files]
            return NodeResult({"text": texts}, inputs, {"documents": files})
        if value is None:
            return NodeResult({"text": []}, inputs, {"documents": []})
        if not is_file(value):
            raise NodeError(f"{'.'.join(selector)} is {type_of(value)}, not a file")
        text = await extract_file(ctx, value)
        return NodeResult({"text": text}, inputs, {"documents": [value]})
