"""The Service API's first endpoints; the app runtime adds the rest under the same prefix."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from tusk import __version__
from tusk.api.deps import AppCallerDep, DatasetWorkspaceDep, ServicesDep
from tusk.api.routes.console_models import models_by_type
from tusk.db.models import Account
from tusk.models.types import ModelType

router = APIRouter(prefix="/v1", tags=["service"])


@router.get("/")
async def welcome() -> dict[str, Any]:
    return {"welcome": "Tusk OpenAPI", "api_version": "v1", "server_version": __version__}


@router.get("/workspaces/current/models/model-types/{model_type}")
async def models_of_type(
    model_type: ModelType, workspace_id: DatasetWorkspaceDep, services: ServicesDep
) -> dict[str, Any]:
    """Dify's Knowledge API lists the workspace's models with a dataset key."""
    return await models_by_type(services, workspace_id, model_type)


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
