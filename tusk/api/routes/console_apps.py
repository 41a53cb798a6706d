"""Apps and their `app-` keys in the console (Dify's paths)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from tusk.accounts import api_keys
from tusk.api import serialize
from tusk.api.deps import ConsoleUserDep, ServicesDep
from tusk.apps import store
from tusk.apps.dsl_transfer import Importer, copy_app
from tusk.workflow.store import env_key

router = APIRouter(prefix="/console/api/apps", tags=["console"])


@router.post("", status_code=201)
async def create_app(
    body: store.NewApp, user: ConsoleUserDep, services: ServicesDep
) -> dict[str, Any]:
    user.require_editor()
    async with services.transaction() as db:
        app = await store.create_app(db, user.workspace_id, body, user.account.id)
    return serialize.app(app)


@router.get("")
async def list_apps(
    user: ConsoleUserDep,
    services: ServicesDep,
    page: Annotated[int, Query(ge=1, le=99999)] = 1,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    name: str | None = None,
) -> dict[str, Any]:
    async with services.transaction() as db:
        found = await store.list_apps(db, user.workspace_id, page=page, limit=limit, name=name)
    return found.as_json([serialize.app(app) for app in found.items])


@router.get("/{app_id}")
async def get_app(app_id: uuid.UUID, user: ConsoleUserDep, services: ServicesDep) -> dict[str, Any]:
    async with services.transaction() as db:
        return serialize.app(await store.get_app(db, user.workspace_id, app_id))


class AppUpdate(BaseModel):
    name: str | None = Field(None, max_length=255)
    description: str | None = Field(None, max_length=4000)
    icon_type: str | None = None
    icon: str | None = None
    icon_background: str | None = None
    use_icon_as_answer_icon: bool | None = None
    max_active_requests: int | None = None
    finish_in_background: bool | None = None


@router.put("/{app_id}")
async def update_app(
    app_id: uuid.UUID, body: AppUpdate, user: ConsoleUserDep, services: ServicesDep
) -> dict[str, Any]:
    user.require_editor()
    changes = store.AppChanges(**body.model_dump())
    async with services.transaction() as db:
        app = await store.update_app(db, user.workspace_id, app_id, changes, user.account.id)
        return serialize.app(app)


class AppCopy(BaseModel):
    name: str | None = Field(None, max_length=255)
    description: str | None = Field(None, max_length=4000)


@router.post("/{app_id}/copy", status_code=201)
async def copy(
    app_id: uuid.UUID, user: ConsoleUserDep, services: ServicesDep, body: AppCopy | None = None
) -> dict[str, Any]:
    user.require_editor()
    given = body or AppCopy()
    who = Importer(user.workspace_id, user.account.id, env_key(services.runtime.secret_key))
    async with services.transaction() as db:
        source = await store.get_app(db, user.workspace_id, app_id)
        made = await copy_app(db, who, source, name=given.name, description=given.description)
        return serialize.app(made)


@router.delete("/{app_id}", status_code=204)
async def delete_app(app_id: uuid.UUID, user: ConsoleUserDep, services: ServicesDep) -> Response:
    user.require_editor()
    async with services.transaction() as db:
        await store.delete_app(db, user.workspace_id, app_id)
    return Response(status_code=204)


@router.get("/{app_id}/api-keys")
async def list_app_keys(
    app_id: uuid.UUID, user: ConsoleUserDep, services: ServicesDep
) -> dict[str, Any]:
    async with services.transaction() as db:
        await store.get_app(db, user.workspace_id, app_id)
        keys = await api_keys.list_keys(db, user.workspace_id, "app", app_id)
    return {"data": [serialize.api_key(key) for key in keys]}


@router.post("/{app_id}/api-keys", status_code=201)
async def create_app_key(
    app_id: uuid.UUID, user: ConsoleUserDep, services: ServicesDep
) -> dict[str, Any]:
    user.require_editor()
    async with services.transaction() as db:
        await store.get_app(db, user.workspace_id, app_id)
        new = await api_keys.create_key(
            db, user.workspace_id, "app", app_id=app_id, created_by=user.account.id
        )
    return serialize.api_key(new.key, new.token)


@router.delete("/{app_id}/api-keys/{key_id}", status_code=204)
async def revoke_app_key(
    app_id: uuid.UUID, key_id: uuid.UUID, user: ConsoleUserDep, services: ServicesDep
) -> Response:
    user.require_editor()
    async with services.transaction() as db:
        await api_keys.revoke_key(db, user.workspace_id, key_id, "app", app_id)
    return Response(status_code=204)
