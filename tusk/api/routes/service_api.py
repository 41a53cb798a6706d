"""The Service API's first endpoints; the app runtime adds the rest under the same prefix."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from tusk import __version__
from tusk.api.deps import AppCallerDep, ServicesDep
from tusk.db.models import Account

router = APIRouter(prefix="/v1", tags=["service"])


@router.get("/")
async def welcome() -> dict[str, Any]:
    return {"welcome": "Tusk OpenAPI", "api_version": "v1", "server_version": __version__}


@router.get("/info")
async def info(caller: AppCallerDep, services: ServicesDep) -> dict[str, Any]:
    app = caller.app
    async with services.transaction() as db:
        author = await db.get(Account, app.created_by) if app.created_by else None
    return {
        "name": app.name,
        "description": app.description,
        "tags": [],
        "mode": app.mode,
        "author_name": author.name if author else "",
    }
