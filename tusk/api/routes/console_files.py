"""File upload in the console (`/console/api/files/upload`, as Dify)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile as FormFile
from starlette.formparsers import MultiPartException

from tusk.api import serialize
from tusk.api.deps import ConsoleUserDep, ServicesDep
from tusk.errors import InvalidParam, NoFileUploaded, TooManyFiles
from tusk.storage import CHUNK_SIZE
from tusk.uploads import Uploader, save_upload

router = APIRouter(prefix="/console/api/files", tags=["console"])
UPLOAD_PATH = "/console/api/files/upload"


async def read_file(file: FormFile) -> AsyncIterator[bytes]:
    while chunk := await file.read(CHUNK_SIZE):
        yield chunk


async def single_file(request: Request) -> FormFile:
    """The one file of a multipart body, as Dify requires."""
    try:
        form = await request.form()
    except MultiPartException as exc:
        raise InvalidParam(f"The multipart body is malformed: {exc.message}") from None
    files = [value for _, value in form.multi_items() if isinstance(value, FormFile)]
    if not files:
        raise NoFileUploaded("Please upload your file.")
    if len(files) > 1:
        raise TooManyFiles("Only one file is allowed.")
    return files[0]


@router.get("/upload")
async def upload_limits(user: ConsoleUserDep, services: ServicesDep) -> dict[str, Any]:
    return {"file_size_limit": services.settings.upload_file_size_limit_mb, "batch_count_limit": 1}


@router.post("/upload", status_code=201)
async def upload(request: Request, user: ConsoleUserDep, services: ServicesDep) -> dict[str, Any]:
    file = await single_file(request)
    async with services.transaction() as db:
        row = await save_upload(
            db,
            services.storage,
            Uploader(user.workspace_id, "account", user.account.id),
            filename=file.filename,
            mime_type=file.content_type,
            chunks=read_file(file),
            max_bytes=services.settings.upload_limit_bytes,
        )
    return serialize.upload_file(row)
