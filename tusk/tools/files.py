"""Files a tool gives back (an MCP image, a blob), kept as uploads of the workspace and handed on
as a run's file values."""

from __future__ import annotations

import base64
import binascii
import mimetypes
from typing import Any

from tusk import storage
from tusk.tools.base import ToolContext, ToolError
from tusk.uploads import Uploader, save_upload
from tusk.workflow.files import file_value

MAX_FILE_BYTES = 15 * 1024 * 1024


def decoded(data: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ToolError("the tool returned a file whose data is not valid base64") from None


async def save_file(context: ToolContext, data: bytes, name: str, mime_type: str) -> dict[str, Any]:
    if not name.rpartition(".")[2] or "." not in name:
        name += mimetypes.guess_extension(mime_type) or ""
    resources = context.resources
    uploader = Uploader(context.workspace_id, "end_user", None)
    async with resources.sessions.begin() as db:
        row = await save_upload(
            db,
            resources.storage,
            uploader,
            filename=name,
            mime_type=mime_type,
            chunks=storage.iter_bytes(data),
            max_bytes=MAX_FILE_BYTES,
        )
    return file_value(row, transfer_method="tool_file")
