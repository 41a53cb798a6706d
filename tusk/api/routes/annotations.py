"""Annotation reply at Dify's paths: the Service API's (`/v1/apps/annotation-reply/...`,
`/v1/apps/annotations`) and the console's (`/console/api/apps/{app_id}/annotation...`)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response

from tusk.api.deps import AppCallerDep, ConsoleUserDep, ServicesDep
from tusk.apps import annotations as annotation_reply
from tusk.apps import store
from tusk.db.models import App
from tusk.db.paging import Page
from tusk.services import Services

router = APIRouter(tags=["annotations"])
JsonBody = Annotated[Any, Body()]
SERVICE = "/v1/apps"
CONSOLE = "/console/api/apps/{app_id}"


def _page_json(page: Page[Any], shape: Any) -> dict[str, Any]:
    return page.as_json([shape(row) for row in page.items])


# --- shared by both APIs -----------------------------------------------------------------------


async def _switch(
    services: Services, app: App, action: str, body: Any, by: uuid.UUID | None
) -> dict[str, Any]:
    if annotation_reply.check_action(action) == "enable":
        wanted = annotation_reply.reply_settings(body)
        return await annotation_reply.enable(services.sessions, services.models, app, wanted, by)
    async with services.transaction() as db:
        return await annotation_reply.disable(db, app, by)


async def _status(services: Services, app: App, action: str, job_id: str) -> dict[str, Any]:
    async with services.transaction() as db:
        return await annotation_reply.job_status(db, app, action, job_id)


async def _list(
    services: Services, app: App, page: int, limit: int, keyword: str
) -> dict[str, Any]:
    async with services.transaction() as db:
        found = await annotation_reply.list_annotations(
            db, app, page=page, limit=limit, keyword=keyword
        )
        return _page_json(found, annotation_reply.annotation_json)


async def _update(services: Services, app: App, annotation_id: str, body: Any) -> dict[str, Any]:
    body = body if isinstance(body, dict) else {}
    new = annotation_reply.written(body.get("question"), body.get("answer"))
    async with services.transaction() as db:
        row = await annotation_reply.update_annotation(db, services.models, app, annotation_id, new)
        return annotation_reply.annotation_json(row)


async def _delete(services: Services, app: App, annotation_id: str) -> Response:
    async with services.transaction() as db:
        await annotation_reply.delete_annotation(db, app, annotation_id)
    return Response(status_code=204)


# --- Service API -------------------------------------------------------------------------------


@router.post(SERVICE + "/annotation-reply/{action}")
async def service_switch(
    action: str, caller: AppCallerDep, services: ServicesDep, body: JsonBody = None
) -> dict[str, Any]:
    async with services.transaction() as db:
        owner = await annotation_reply.workspace_owner(db, caller.app)
    return await _switch(services, caller.app, action, body, owner)


@router.get(SERVICE + "/annotation-reply/{action}/status/{job_id}")
async def service_status(
    action: str, job_id: str, caller: AppCallerDep, services: ServicesDep
) -> dict[str, Any]:
    return await _status(services, caller.app, action, job_id)


@router.get(SERVICE + "/annotations")
async def service_list(
    caller: AppCallerDep, services: ServicesDep, page: int = 1, limit: int = 20, keyword: str = ""
) -> dict[str, Any]:
    return await _list(services, caller.app, page, limit, keyword)


@router.post(SERVICE + "/annotations", status_code=201)
async def service_create(
    caller: AppCallerDep, services: ServicesDep, body: JsonBody = None
) -> dict[str, Any]:
    body = body if isinstance(body, dict) else {}
    new = annotation_reply.written(body.get("question"), body.get("answer"))
    async with services.transaction() as db:
        owner = await annotation_reply.workspace_owner(db, caller.app)
        row = await annotation_reply.create_annotation(db, services.models, caller.app, new, owner)
        return annotation_reply.annotation_json(row)


@router.put(SERVICE + "/annotations/{annotation_id}")
async def service_update(
    annotation_id: str, caller: AppCallerDep, services: ServicesDep, body: JsonBody = None
) -> dict[str, Any]:
    return await _update(services, caller.app, annotation_id, body)


@router.delete(SERVICE + "/annotations/{annotation_id}", status_code=204)
async def service_delete(
    annotation_id: str, caller: AppCallerDep, services: ServicesDep
) -> Response:
    return await _delete(services, caller.app, annotation_id)


# --- console -----------------------------------------------------------------------------------


async def _editable_app(services: Services, user: ConsoleUserDep, app_id: uuid.UUID) -> App:
    user.require_editor()
    async with services.transaction() as db:
        return await store.get_app(db, user.workspace_id, app_id)


@router.post(CONSOLE + "/annotation-reply/{action}")
async def console_switch(
    app_id: uuid.UUID,
    action: str,
    user: ConsoleUserDep,
    services: ServicesDep,
    body: JsonBody = None,
) -> dict[str, Any]:
    app = await _editable_app(services, user, app_id)
    return await _switch(services, app, action, body, user.account.id)


@router.get(CONSOLE + "/annotation-reply/{action}/status/{job_id}")
async def console_status(
    app_id: uuid.UUID, action: str, job_id: str, user: ConsoleUserDep, services: ServicesDep
) -> dict[str, Any]:
    app = await _editable_app(services, user, app_id)
    return await _status(services, app, action, job_id)


@router.get(CONSOLE + "/annotation-setting")
async def console_setting(
    app_id: uuid.UUID, user: ConsoleUserDep, services: ServicesDep
) -> dict[str, Any]:
    app = await _editable_app(services, user, app_id)
    async with services.transaction() as db:
        return annotation_reply.setting_json(await annotation_reply.setting_of(db, app))


@router.post(CONSOLE + "/annotation-settings/{setting_id}")
async def console_update_setting(
    app_id: uuid.UUID,
    setting_id: str,
    user: ConsoleUserDep,
    services: ServicesDep,
    body: JsonBody = None,
) -> dict[str, Any]:
    app = await _editable_app(services, user, app_id)
    threshold = body.get("score_threshold") if isinstance(body, dict) else None
    async with services.transaction() as db:
        setting = await annotation_reply.update_threshold(
            db, app, setting_id, threshold, user.account.id
        )
        return annotation_reply.setting_json(setting)


@router.get(CONSOLE + "/annotations")
async def console_list(
    app_id: uuid.UUID,
    user: ConsoleUserDep,
    services: ServicesDep,
    page: int = 1,
    limit: int = 20,
    keyword: str = "",
) -> dict[str, Any]:
    app = await _editable_app(services, user, app_id)
    return await _list(services, app, page, limit, keyword)


@router.post(CONSOLE + "/annotations")
async def console_create(
    app_id: uuid.UUID, user: ConsoleUserDep, services: ServicesDep, body: JsonBody = None
) -> dict[str, Any]:
    """A new annotation; with `message_id`, the annotation of that message (Dify's console
    annotates a message this way)."""
    app = await _editable_app(services, user, app_id)
    body = body if isinstance(body, dict) else {}
    by = user.account.id
    async with services.transaction() as db:
        if body.get("message_id"):
            row = await annotation_reply.annotate_message(
                db, services.models, app, body["message_id"], body, by
            )
        else:
            new = annotation_reply.written(body.get("question"), body.get("answer"))
            row = await annotation_reply.create_annotation(db, services.models, app, new, by)
        return annotation_reply.annotation_json(row)


@router.delete(CONSOLE + "/annotations", status_code=204)
async def console_delete_many(
    app_id: uuid.UUID,
    user: ConsoleUserDep,
    services: ServicesDep,
    annotation_id: Annotated[list[str] | None, Query()] = None,
) -> Response:
    """The annotations named by `annotation_id` (repeated), or all of the app's."""
    app = await _editable_app(services, user, app_id)
    async with services.transaction() as db:
        await annotation_reply.delete_annotations(db, app, annotation_id)
    return Response(status_code=204)


@router.get(CONSOLE + "/annotations/export")
async def console_export(
    app_id: uuid.UUID, user: ConsoleUserDep, services: ServicesDep
) -> dict[str, Any]:
    app = await _editable_app(services, user, app_id)
    async with services.transaction() as db:
        rows = await annotation_reply.all_annotations(db, app)
        return {"data": [annotation_reply.annotation_json(row) for row in rows]}


@router.post(CONSOLE + "/annotations/{annotation_id}")
async def console_update(
    app_id: uuid.UUID,
    annotation_id: str,
    user: ConsoleUserDep,
    services: ServicesDep,
    body: JsonBody = None,
) -> dict[str, Any]:
    app = await _editable_app(services, user, app_id)
    return await _update(services, app, annotation_id, body)


@router.delete(CONSOLE + "/annotations/{annotation_id}", status_code=204)
async def console_delete(
    app_id: uuid.UUID, annotation_id: str, user: ConsoleUserDep, services: ServicesDep
) -> Response:
    app = await _editable_app(services, user, app_id)
    return await _delete(services, app, annotation_id)


@router.get(CONSOLE + "/annotations/{annotation_id}/hit-histories")
async def console_hits(
    app_id: uuid.UUID,
    annotation_id: str,
    user: ConsoleUserDep,
    services: ServicesDep,
    page: int = 1,
    limit: int = 20,
) -> dict[str, Any]:
    app = await _editable_app(services, user, app_id)
    async with services.transaction() as db:
        found = await annotation_reply.hit_histories(db, app, annotation_id, page=page, limit=limit)
        return _page_json(found, annotation_reply.hit_json)
