"""The workspace's `dataset-` keys for the Knowledge API (Dify's console paths)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Response

from tusk.accounts import api_keys
from tusk.api import serialize
from tusk.api.deps import ConsoleUserDep, ServicesDep

router = APIRouter(prefix="/console/api/datasets/api-keys", tags=["console"])


@router.get("")
async def list_dataset_keys(user: ConsoleUserDep, services: ServicesDep) -> dict[str, Any]:
    async with services.transaction() as db:
        keys = await api_keys.list_keys(db, user.workspace_id, "dataset")
    return {"data": [serialize.api_key(key) for key in keys]}


@router.post("", status_code=201)
async def create_dataset_key(user: ConsoleUserDep, services: ServicesDep) -> dict[str, Any]:
    user.require_editor()
    async with services.transaction() as db:
        new = await api_keys.create_key(
            db, user.workspace_id, "dataset", created_by=user.account.id
        )
    return serialize.api_key(new.key, new.token)


@router.delete("/{key_id}", status_code=204)
async def revoke_dataset_key(
    key_id: uuid.UUID, user: ConsoleUserDep, services: ServicesDep
) -> Response:
    user.require_editor()
    async with services.transaction() as db:
        await api_keys.revoke_key(db, user.workspace_id, key_id, "dataset")
    return Response(status_code=204)
