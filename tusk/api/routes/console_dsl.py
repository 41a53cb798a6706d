"""Importing and exporting apps as Dify DSL files, at Dify's console paths."""

from __future__ import annotations

import uuid
from typing import Any, Literal

import httpx
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from tusk.api.deps import ConsoleUserDep, ServicesDep
from tusk.apps import store as app_store
from tusk.apps.dsl_transfer import Importer, confirm_import, export_dsl, import_dsl
from tusk.errors import InvalidParam
from tusk.net import ssrf
from tusk.workflow.dsl import MAX_DSL_BYTES
from tusk.workflow.store import env_key

router = APIRouter(prefix="/console/api/apps", tags=["console"])
STATUS_CODES = {"completed": 200, "completed-with-warnings": 200, "pending": 202, "failed": 400}


class ImportBody(BaseModel):
    mode: Literal["yaml-content", "yaml-url"]
    yaml_content: str | None = None
    yaml_url: str | None = None
    name: str | None = None
    description: str | None = None


async def _fetch(url: str, allowed_hosts: str) -> str:
    allow = ssrf.AllowList.parse(allowed_hosts)
    try:
        async with ssrf.guarded_client(allow) as client:
            response = await ssrf.send(client, client.build_request("GET", url))
            try:
                if response.status_code != 200:
                    raise InvalidParam(f"yaml_url answered HTTP {response.status_code}.")
                body = await ssrf.read_limited(response, MAX_DSL_BYTES, "DSL file")
            finally:
                await response.aclose()
    except httpx.HTTPError as exc:
        raise InvalidParam(f"yaml_url cannot be fetched: {exc}", params="yaml_url") from None
    return body.decode("utf-8", errors="replace")


async def _content(body: ImportBody, services: ServicesDep) -> str:
    if body.mode == "yaml-content":
        if not body.yaml_content:
            raise InvalidParam("yaml_content is required when mode is yaml-content.")
        return body.yaml_content
    if not body.yaml_url:
        raise InvalidParam("yaml_url is required when mode is yaml-url.")
    return await _fetch(body.yaml_url, services.settings.ssrf_allowed_hosts)


def _importer(user: ConsoleUserDep, services: ServicesDep) -> Importer:
    return Importer(user.workspace_id, user.account.id, env_key(services.runtime.secret_key))


@router.post("/imports")
async def import_app(body: ImportBody, user: ConsoleUserDep, services: ServicesDep) -> Any:
    user.require_editor()
    text = await _content(body, services)
    async with services.transaction() as db:
        result = await import_dsl(
            db, _importer(user, services), text, name=body.name, description=body.description
        )
    return JSONResponse(result.as_json(), status_code=STATUS_CODES[result.status])


@router.post("/imports/{import_id}/confirm")
async def confirm(import_id: str, user: ConsoleUserDep, services: ServicesDep) -> dict[str, Any]:
    user.require_editor()
    async with services.transaction() as db:
        result = await confirm_import(db, _importer(user, services), import_id)
    return result.as_json()


@router.get("/{app_id}/export")
async def export_app(
    app_id: uuid.UUID, user: ConsoleUserDep, services: ServicesDep, include_secret: bool = False
) -> dict[str, str]:
    if include_secret:
        user.require_editor()
    async with services.transaction() as db:
        app = await app_store.get_app(db, user.workspace_id, app_id)
        text = await export_dsl(
            db, app, env_key(services.runtime.secret_key), include_secret=include_secret
        )
    return {"data": text}
