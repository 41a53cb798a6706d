"""Model providers, credentials, default models and usage in the console (Dify's paths, plus
custom OpenAI-compatible endpoints and usage reports)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from tusk.api.deps import ConsoleUserDep, ServicesDep
from tusk.errors import InvalidParam
from tusk.models import admin
from tusk.models.types import ModelType
from tusk.models.usage import daily_usage
from tusk.services import Services

router = APIRouter(prefix="/console/api/workspaces/current", tags=["console"])
PROVIDERS = "/model-providers"


class CredentialsBody(BaseModel):
    credentials: dict[str, Any]


class CustomModel(BaseModel):
    model: str
    model_type: ModelType = "llm"


class CustomEndpointBody(BaseModel):
    name: str
    base_url: str
    api_key: str = ""
    models: list[CustomModel] = Field(min_length=1)


class ModelSetting(BaseModel):
    model_type: ModelType
    provider: str
    model: str


class DefaultModelBody(BaseModel):
    model_settings: list[ModelSetting]


@router.get(PROVIDERS)
async def list_providers(user: ConsoleUserDep, services: ServicesDep) -> dict[str, Any]:
    views = await admin.list_providers(services.models, user.workspace_id)
    return {"data": [view.as_json() for view in views]}


@router.get(PROVIDERS + "/{provider}/models")
async def provider_models(
    provider: str, user: ConsoleUserDep, services: ServicesDep
) -> dict[str, Any]:
    views = await admin.list_providers(services.models, user.workspace_id)
    found = next((v for v in views if v.name == provider), None)
    if found is None:
        raise InvalidParam(f"no provider named {provider!r}", params="provider")
    return {"data": [admin.model_json(m) for m in found.models]}


@router.get(PROVIDERS + "/{provider}/credentials")
async def get_credentials(
    provider: str, user: ConsoleUserDep, services: ServicesDep
) -> dict[str, Any]:
    user.require_admin()
    views = await admin.list_providers(services.models, user.workspace_id)
    found = next((v for v in views if v.name == provider), None)
    return {"credentials": found.credentials if found and found.source == "workspace" else None}


@router.post(PROVIDERS + "/{provider}/credentials")
async def set_credentials(
    provider: str, body: CredentialsBody, user: ConsoleUserDep, services: ServicesDep
) -> dict[str, Any]:
    user.require_admin()
    async with services.transaction() as db:
        await admin.set_credentials(
            db, services.models, user.workspace_id, provider, body.credentials
        )
    return {"result": "success"}


@router.post(PROVIDERS + "/{provider}/credentials/validate")
async def validate_credentials(
    provider: str, body: CredentialsBody, user: ConsoleUserDep, services: ServicesDep
) -> dict[str, Any]:
    user.require_admin()
    error = await admin.validate_credentials(services.models, provider, body.credentials)
    return {"result": "success"} if error is None else {"result": "error", "error": error}


@router.delete(PROVIDERS + "/{provider}/credentials", status_code=204)
async def remove_credentials(
    provider: str, user: ConsoleUserDep, services: ServicesDep
) -> Response:
    user.require_admin()
    async with services.transaction() as db:
        await admin.remove_credentials(db, services.models, user.workspace_id, provider)
    return Response(status_code=204)


@router.post(PROVIDERS + "/custom", status_code=201)
async def add_custom_endpoint(
    body: CustomEndpointBody, user: ConsoleUserDep, services: ServicesDep
) -> dict[str, Any]:
    user.require_admin()
    endpoint = admin.CustomEndpoint(
        body.name, body.base_url, body.api_key, [m.model_dump() for m in body.models]
    )
    async with services.transaction() as db:
        await admin.add_custom_endpoint(db, services.models, user.workspace_id, endpoint)
    return {"result": "success", "provider": body.name}


@router.get("/models/model-types/{model_type}")
async def models_of_type(
    model_type: ModelType, user: ConsoleUserDep, services: ServicesDep
) -> dict[str, Any]:
    return await models_by_type(services, user.workspace_id, model_type)


async def models_by_type(
    services: Services, workspace_id: uuid.UUID, model_type: ModelType
) -> dict[str, Any]:
    """The providers serving a model type, with their models (also on the Knowledge API)."""
    views = await admin.list_providers(services.models, workspace_id)
    data = [
        {
            "provider": view.name,
            "label": view.label,
            "status": "active" if view.source else "no-configure",
            "models": [admin.model_json(m) for m in view.models if m.type == model_type],
        }
        for view in views
        if model_type in view.model_types
    ]
    return {"data": data}


@router.get("/default-model")
async def get_default_model(
    user: ConsoleUserDep, services: ServicesDep, model_type: ModelType = "llm"
) -> dict[str, Any]:
    name = await admin.default_model(services.models, user.workspace_id, model_type)
    if name is None:
        return {"data": None}
    provider, _, model = name.partition(":")
    return {"data": {"model": model, "model_type": model_type, "provider": {"provider": provider}}}


@router.post("/default-model")
async def set_default_model(
    body: DefaultModelBody, user: ConsoleUserDep, services: ServicesDep
) -> dict[str, Any]:
    user.require_admin()
    async with services.transaction() as db:
        for setting in body.model_settings:
            full_name = f"{setting.provider}:{setting.model}"
            await admin.set_default_model(
                db, services.models, user.workspace_id, setting.model_type, full_name
            )
    return {"result": "success"}


@router.get("/model-usage")
async def model_usage(
    user: ConsoleUserDep,
    services: ServicesDep,
    start: date | None = None,
    end: date | None = None,
    group_by: Literal["app", "workspace"] = "app",
    app_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """Calls, errors, tokens and cost per UTC day and model (default: the last 30 days)."""
    end = end or datetime.now(UTC).date()
    start = start or end - timedelta(days=29)
    if start > end:
        raise InvalidParam("start must not be after end", params="start")
    async with services.transaction() as db:
        rows = await daily_usage(
            db,
            user.workspace_id,
            start,
            end,
            by_app=group_by == "app",
            app_id=app_id,
        )
    return {"start": start.isoformat(), "end": end.isoformat(), "data": [r.as_json() for r in rows]}
