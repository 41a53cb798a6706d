"""`POST /console/api/apps/{app_id}/model-config` (Dify's path): the configuration of a chat,
agent-chat or completion app, checked, stored as a new version, and made the app's current one.
Conversations already started keep the version they started with."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body

from tusk.api.deps import ConsoleUserDep, ServicesDep
from tusk.apps import store
from tusk.apps.easy_config import AppUnavailable, checked_config
from tusk.db.models import AppModelConfig

router = APIRouter(prefix="/console/api/apps", tags=["console"])
CONFIGURED_MODES = ("chat", "agent-chat", "completion")


@router.post("/{app_id}/model-config")
async def save_model_config(
    app_id: uuid.UUID,
    user: ConsoleUserDep,
    services: ServicesDep,
    document: Annotated[Any, Body()] = None,
) -> dict[str, str]:
    user.require_editor()
    config = checked_config(document)
    async with services.transaction() as db:
        app = await store.get_app(db, user.workspace_id, app_id)
        if app.mode not in CONFIGURED_MODES:
            raise AppUnavailable("App mode is not in the supported list.")
        row = AppModelConfig(
            workspace_id=app.workspace_id, app_id=app.id, config=config, created_by=user.account.id
        )
        db.add(row)
        await db.flush()
        app.app_model_config_id = row.id
        app.updated_by = user.account.id
    return {"result": "success"}
