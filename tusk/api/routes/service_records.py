"""The Service API's read and record endpoints around apps, at Dify's paths: conversations,
messages, feedback, suggested questions, app parameters, meta and site, end users, workflow logs,
and file upload and preview."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from tusk.agent.records import agent_thoughts
from tusk.api import serialize
from tusk.api.deps import AppCallerDep, ServicesDep
from tusk.api.routes.console_files import read_file, single_file
from tusk.apps import app_parameters, feedback, records, suggestions
from tusk.apps.conversations import Speaker
from tusk.apps.end_users import end_user, user_param
from tusk.apps.message_files import message_files
from tusk.db.models import Conversation, EndUser, Message, MessageFeedback, UploadFile
from tusk.errors import InvalidParam
from tusk.services import Services
from tusk.storage import ObjectNotFound
from tusk.uploads import Uploader, UploadNotFound, find_upload, save_upload

router = APIRouter(prefix="/v1", tags=["service"])
ts = serialize.ts


async def _speaker(services: Services, caller: AppCallerDep, user: object, **kw: bool) -> Speaker:
    async with services.transaction() as db:
        who = await end_user(db, caller.app, user_param(user, **kw))
    return Speaker(end_user_id=who.id)


# --- shapes --------------------------------------------------------------------------------------


def conversation_json(row: Conversation) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "name": row.name,
        "inputs": row.inputs,
        "status": row.status,
        "introduction": row.introduction,
        "created_at": ts(row.created_at),
        "updated_at": ts(row.updated_at),
    }


def message_json(
    row: Message,
    rating: str | None,
    thoughts: list[dict[str, Any]] | None = None,
    files: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "conversation_id": str(row.conversation_id),
        "parent_message_id": str(row.parent_message_id) if row.parent_message_id else None,
        "inputs": row.inputs,
        "query": row.query,
        "answer": row.answer,
        "feedback": {"rating": rating} if rating else None,
        "retriever_resources": records.retriever_resources(row),
        "created_at": ts(row.created_at),
        "agent_thoughts": thoughts or [],
        "message_files": files or [],
        "status": row.status,
        "error": row.error,
        "extra_contents": [],
    }


def shown_value(value: Any) -> str | None:
    """Dify returns a variable's value as a string; JSON for anything that is not one."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def variable_json(row: records.ConversationVariable) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "value_type": row.value_type,
        "value": shown_value(row.value),
        "description": row.description,
        "created_at": ts(row.created_at),
        "updated_at": ts(row.updated_at),
    }


def feedback_json(row: MessageFeedback) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "app_id": str(row.app_id),
        "conversation_id": str(row.conversation_id),
        "message_id": str(row.message_id),
        "rating": row.rating,
        "content": row.content,
        "from_source": row.from_source,
        "from_end_user_id": str(row.from_end_user_id) if row.from_end_user_id else None,
        "from_account_id": str(row.from_account_id) if row.from_account_id else None,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


def simple_end_user(row: EndUser | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "id": str(row.id),
        "type": row.type,
        "is_anonymous": row.is_anonymous,
        "session_id": row.session_id,
    }


def run_log_json(log: records.RunLog) -> dict[str, Any]:
    run = log.run
    account = log.account
    return {
        "id": str(run.id),
        "workflow_run": {
            "id": str(run.id),
            "version": run.version,
            "status": run.status,
            "triggered_from": run.triggered_from,
            "error": run.error,
            "elapsed_time": run.elapsed_time,
            "total_tokens": run.total_tokens,
            "total_steps": run.total_steps,
            "created_at": ts(run.created_at),
            "finished_at": ts(run.finished_at),
            "exceptions_count": run.exceptions_count,
        },
        "details": None,
        "created_from": "service-api" if run.created_by_role == "end_user" else "web-app",
        "created_by_role": run.created_by_role,
        "created_by_account": (
            {"id": str(account.id), "name": account.name, "email": account.email}
            if account is not None
            else None
        ),
        "created_by_end_user": simple_end_user(log.end_user),
        "created_at": ts(run.created_at),
    }


def scroll_json(page: records.Scroll[Any], items: list[Any]) -> dict[str, Any]:
    return {"limit": page.limit, "has_more": page.has_more, "data": items}


# --- conversations -------------------------------------------------------------------------------


@router.get("/conversations")
async def list_conversations(
    caller: AppCallerDep,
    services: ServicesDep,
    user: str | None = None,
    last_id: str | None = None,
    limit: int = 20,
    sort_by: str = "-updated_at",
) -> dict[str, Any]:
    speaker = await _speaker(services, caller, user, required=False)
    async with services.transaction() as db:
        page = await records.list_conversations(
            db, caller.app, speaker, last_id=last_id, limit=limit, sort_by=sort_by
        )
    return scroll_json(page, [conversation_json(c) for c in page.items])


class RenameBody(BaseModel):
    name: str | None = None
    auto_generate: bool = False
    user: str | None = None


@router.post("/conversations/{conversation_id}/name")
async def rename_conversation(
    conversation_id: str, body: RenameBody, caller: AppCallerDep, services: ServicesDep
) -> dict[str, Any]:
    speaker = await _speaker(services, caller, body.user, required=False)
    if body.auto_generate:
        app, models = caller.app, services.models
        row = await records.auto_rename(services.sessions, models, app, speaker, conversation_id)
        return conversation_json(row)
    async with services.transaction() as db:
        row = await records.rename_conversation(db, caller.app, speaker, conversation_id, body.name)
        return conversation_json(row)


class UserBody(BaseModel):
    user: str | None = None


@router.delete("/conversations/{conversation_id}", status_code=204)
async def delete_conversation(
    conversation_id: str, caller: AppCallerDep, services: ServicesDep, body: UserBody | None = None
) -> Response:
    speaker = await _speaker(services, caller, body.user if body else None, required=False)
    async with services.transaction() as db:
        await records.delete_conversation(db, caller.app, speaker, conversation_id)
    return Response(status_code=204)


@router.get("/conversations/{conversation_id}/variables")
async def conversation_variables(
    conversation_id: str,
    caller: AppCallerDep,
    services: ServicesDep,
    user: str | None = None,
    last_id: str | None = None,
    limit: int = 20,
    variable_name: str | None = None,
) -> dict[str, Any]:
    speaker = await _speaker(services, caller, user, required=False)
    async with services.transaction() as db:
        row = await records.chat_conversation(db, caller.app, speaker, conversation_id)
        page = await records.list_variables(
            db, caller.app, row, last_id=last_id, limit=limit, variable_name=variable_name
        )
    return scroll_json(page, [variable_json(v) for v in page.items])


class VariableBody(BaseModel):
    value: Any = None
    user: str | None = None


@router.put("/conversations/{conversation_id}/variables/{variable_id}")
async def update_conversation_variable(
    conversation_id: str,
    variable_id: str,
    body: VariableBody,
    caller: AppCallerDep,
    services: ServicesDep,
) -> dict[str, Any]:
    speaker = await _speaker(services, caller, body.user, required=False)
    async with services.transaction() as db:
        row = await records.chat_conversation(db, caller.app, speaker, conversation_id, lock=True)
        variable = await records.update_variable(db, caller.app, row, variable_id, body.value)
    return variable_json(variable)


# --- messages and feedback -----------------------------------------------------------------------


@router.get("/messages")
async def list_messages(
    caller: AppCallerDep,
    services: ServicesDep,
    conversation_id: str | None = None,
    first_id: str | None = None,
    limit: int = 20,
    user: str | None = None,
) -> dict[str, Any]:
    if not conversation_id:
        raise InvalidParam("conversation_id is required", params="conversation_id")
    speaker = await _speaker(services, caller, user, required=False)
    async with services.transaction() as db:
        row = await records.chat_conversation(db, caller.app, speaker, conversation_id)
        page = await records.list_messages(db, caller.app, row, first_id=first_id, limit=limit)
        ids = [m.id for m in page.items]
        rated = await feedback.ratings(db, ids)
        thoughts = await agent_thoughts(db, caller.workspace_id, ids)
        files = await message_files(db, caller.workspace_id, ids)
    shown = [
        message_json(m, rated.get(m.id), thoughts.get(m.id), files.get(m.id)) for m in page.items
    ]
    return scroll_json(page, shown)


class FeedbackBody(BaseModel):
    rating: str | None = None
    content: str | None = None
    user: str | None = None


@router.post("/messages/{message_id}/feedbacks")
async def message_feedback(
    message_id: str, body: FeedbackBody, caller: AppCallerDep, services: ServicesDep
) -> dict[str, str]:
    rating = feedback.rating_param(body.rating)
    speaker = await _speaker(services, caller, body.user)
    async with services.transaction() as db:
        message = await records.message_of(db, caller.app, speaker, message_id)
        await feedback.give_feedback(
            db, message, rating=rating, content=body.content, end_user_id=speaker.end_user_id
        )
    return {"result": "success"}


@router.get("/app/feedbacks")
async def app_feedbacks(
    caller: AppCallerDep, services: ServicesDep, page: int = 1, limit: int = 20
) -> dict[str, Any]:
    async with services.transaction() as db:
        rows = await feedback.app_feedbacks(db, caller.app, page=page, limit=limit)
    return {"data": [feedback_json(row) for row in rows]}


@router.get("/messages/{message_id}/suggested")
async def suggested_questions(
    message_id: str, caller: AppCallerDep, services: ServicesDep, user: str | None = None
) -> dict[str, Any]:
    speaker = await _speaker(services, caller, user)
    records.require_chat_app(caller.app)
    async with services.transaction() as db:
        message = await records.message_of(db, caller.app, speaker, message_id)
    questions = await suggestions.suggested_questions(
        services.sessions, services.models, caller.app, message
    )
    return {"result": "success", "data": questions}


# --- app metadata --------------------------------------------------------------------------------


@router.get("/parameters")
async def parameters(caller: AppCallerDep, services: ServicesDep) -> dict[str, Any]:
    async with services.transaction() as db:
        return await app_parameters.app_parameters(db, caller.app, services.settings)


@router.get("/meta")
async def meta(caller: AppCallerDep) -> dict[str, Any]:
    return {"tool_icons": {}}


@router.get("/site")
async def site(caller: AppCallerDep) -> dict[str, Any]:
    return app_parameters.site(caller.app)


@router.get("/end-users/{end_user_id}")
async def get_end_user(
    end_user_id: str, caller: AppCallerDep, services: ServicesDep
) -> dict[str, Any]:
    async with services.transaction() as db:
        row = await app_parameters.find_end_user(db, caller.app, end_user_id)
    return {
        "id": str(row.id),
        "tenant_id": str(row.workspace_id),
        "app_id": str(row.app_id),
        "type": row.type,
        "external_user_id": row.external_user_id,
        "name": row.name,
        "is_anonymous": row.is_anonymous,
        "session_id": row.session_id,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
    }


# --- workflow logs -------------------------------------------------------------------------------


def iso_time(value: str | None, param: str) -> datetime | None:
    """An ISO 8601 time; one without a zone is taken as UTC."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidParam(f"{param} must be an ISO 8601 time.", params=param) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def log_page(page: Any, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "page": page.page,
        "limit": page.limit,
        "total": page.total,
        "has_more": page.has_more,
        "data": items,
    }


@router.get("/workflows/logs")
async def workflow_logs(
    caller: AppCallerDep,
    services: ServicesDep,
    keyword: str | None = None,
    status: str | None = None,
    created_at__before: str | None = None,
    created_at__after: str | None = None,
    created_by_end_user_session_id: str | None = None,
    created_by_account: str | None = None,
    page: int = 1,
    limit: int = 20,
) -> dict[str, Any]:
    filters = records.LogFilter(
        keyword=keyword,
        status=status,
        created_before=iso_time(created_at__before, "created_at__before"),
        created_after=iso_time(created_at__after, "created_at__after"),
        end_user_session_id=created_by_end_user_session_id,
        account_email=created_by_account,
    )
    async with services.transaction() as db:
        found = await records.workflow_logs(db, caller.app, filters, page=page, limit=limit)
    return log_page(found, [run_log_json(log) for log in found.items])


# --- files ---------------------------------------------------------------------------------------


@router.post("/files/upload", status_code=201)
async def upload_file(
    request: Request, caller: AppCallerDep, services: ServicesDep
) -> dict[str, Any]:
    file = await single_file(request)
    user = (await request.form()).get("user")  # the form is parsed once and kept
    async with services.transaction() as db:
        who = await end_user(db, caller.app, user_param(user, required=False))
        row = await save_upload(
            db,
            services.storage,
            Uploader(caller.workspace_id, "end_user", who.id),
            filename=file.filename,
            mime_type=file.content_type,
            chunks=read_file(file),
            max_bytes=services.settings.upload_limit_bytes,
        )
    return uploaded_json(row, who.id)


def uploaded_json(row: UploadFile, user_id: uuid.UUID) -> dict[str, Any]:
    return {
        **serialize.upload_file(row),
        "original_url": None,
        "user_id": str(user_id),
        "conversation_id": None,
        "file_key": None,
    }


@router.get("/files/{file_id}/preview")
async def preview_file(
    file_id: str,
    caller: AppCallerDep,
    services: ServicesDep,
    as_attachment: bool = False,
    user: str | None = None,
) -> StreamingResponse:
    async with services.transaction() as db:
        row = await find_upload(db, caller.workspace_id, file_id)
    try:
        chunks = await services.storage.open(row.key)
    except ObjectNotFound:
        raise UploadNotFound("File not found.") from None
    headers = {"Content-Length": str(row.size), "Cache-Control": "public, max-age=3600"}
    media_type = row.mime_type or "application/octet-stream"
    if as_attachment:
        headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(row.name)}"
        media_type = "application/octet-stream"
    return StreamingResponse(chunks, media_type=media_type, headers=headers)
