"""An app's logs in the console, at Dify's paths: conversations of chat and completion apps with
their token and price totals, a conversation's messages, workflow runs, and daily token costs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from tusk.agent.records import agent_thoughts
from tusk.api.deps import ConsoleUserDep, ServicesDep
from tusk.api.routes.service_records import iso_time, log_page, run_log_json, scroll_json
from tusk.api.serialize import ts
from tusk.apps import feedback, records, store
from tusk.db.models import App, Message, MessageFeedback
from tusk.errors import InvalidParam
from tusk.services import Services

router = APIRouter(prefix="/console/api/apps/{app_id}", tags=["console"])
Page = Annotated[int, Query(ge=1, le=99999)]
Limit = Annotated[int, Query(ge=1, le=100)]
CONSOLE_TIME = "%Y-%m-%d %H:%M"


def console_time(value: str | None, param: str) -> datetime | None:
    """Dify's console sends `YYYY-MM-DD HH:MM`; taken as UTC."""
    if not value:
        return None
    try:
        return datetime.strptime(value, CONSOLE_TIME).replace(tzinfo=UTC)
    except ValueError:
        raise InvalidParam(f"{param} must look like 2024-01-31 23:59.", params=param) from None


async def _app(services: Services, user: ConsoleUserDep, app_id: uuid.UUID) -> App:
    async with services.transaction() as db:
        return await store.get_app(db, user.workspace_id, app_id)


def _money(value: Any) -> str:
    return format(value, "f")


def conversation_log_json(log: records.ConversationLog) -> dict[str, Any]:
    row = log.conversation
    return {
        "id": str(row.id),
        "status": row.status,
        "from_source": row.from_source,
        "from_end_user_id": str(row.from_end_user_id) if row.from_end_user_id else None,
        "from_end_user_session_id": log.session_id,
        "from_account_id": str(row.from_account_id) if row.from_account_id else None,
        "name": row.name,
        "summary": row.introduction,
        "read_at": None,
        "created_at": ts(row.created_at),
        "updated_at": ts(row.updated_at),
        "annotated": False,
        "message_count": log.message_count,
        "user_feedback_stats": {"like": log.likes, "dislike": log.dislikes},
        "admin_feedback_stats": {"like": 0, "dislike": 0},
        "total_tokens": log.total_tokens,
        "total_price": _money(log.total_price),
        "currency": "USD",
    }


def completion_log_json(log: records.ConversationLog) -> dict[str, Any]:
    first = log.first
    shown = conversation_log_json(log)
    shown["message"] = None if first is None else {
        "inputs": first.inputs,
        "query": first.query,
        "answer": first.answer,
        "message_tokens": first.message_tokens,
        "answer_tokens": first.answer_tokens,
        "total_price": _money(first.total_price),
        "currency": first.currency,
    }  # fmt: skip
    return shown


def console_feedback_json(row: MessageFeedback) -> dict[str, Any]:
    return {
        "rating": row.rating,
        "content": row.content,
        "from_source": row.from_source,
        "from_end_user_id": str(row.from_end_user_id) if row.from_end_user_id else None,
        "from_account_id": str(row.from_account_id) if row.from_account_id else None,
    }


def message_detail_json(
    row: Message, feedbacks: list[MessageFeedback], thoughts: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "conversation_id": str(row.conversation_id),
        "parent_message_id": str(row.parent_message_id) if row.parent_message_id else None,
        "inputs": row.inputs,
        "query": row.query,
        "message": row.message,
        "message_tokens": row.message_tokens,
        "answer": row.answer,
        "answer_tokens": row.answer_tokens,
        "total_tokens": row.total_tokens,
        "total_price": _money(row.total_price),
        "currency": row.currency,
        "provider_response_latency": row.provider_response_latency,
        "from_source": row.from_source,
        "from_end_user_id": str(row.from_end_user_id) if row.from_end_user_id else None,
        "from_account_id": str(row.from_account_id) if row.from_account_id else None,
        "feedbacks": [console_feedback_json(f) for f in feedbacks],
        "workflow_run_id": str(row.workflow_run_id) if row.workflow_run_id else None,
        "annotation": None,
        "annotation_hit_history": None,
        "created_at": ts(row.created_at),
        "agent_thoughts": thoughts,
        "message_files": [],
        "metadata": row.message_metadata,
        "status": row.status,
        "error": row.error,
    }


async def _conversations(
    services: Services, app: App, completion: bool, keyword: str | None,
    start: str | None, end: str | None, page: int, limit: int,
) -> Any:  # fmt: skip
    async with services.transaction() as db:
        return await records.conversation_logs(
            db, app, completion=completion, keyword=keyword,
            start=console_time(start, "start"), end=console_time(end, "end"),
            page=page, limit=limit,
        )  # fmt: skip


@router.get("/chat-conversations")
async def chat_conversations(
    app_id: uuid.UUID,
    user: ConsoleUserDep,
    services: ServicesDep,
    keyword: str | None = None,
    start: str | None = None,
    end: str | None = None,
    page: Page = 1,
    limit: Limit = 20,
) -> dict[str, Any]:
    app = await _app(services, user, app_id)
    found = await _conversations(services, app, False, keyword, start, end, page, limit)
    return log_page(found, [conversation_log_json(log) for log in found.items])


@router.get("/completion-conversations")
async def completion_conversations(
    app_id: uuid.UUID,
    user: ConsoleUserDep,
    services: ServicesDep,
    keyword: str | None = None,
    start: str | None = None,
    end: str | None = None,
    page: Page = 1,
    limit: Limit = 20,
) -> dict[str, Any]:
    app = await _app(services, user, app_id)
    found = await _conversations(services, app, True, keyword, start, end, page, limit)
    return log_page(found, [completion_log_json(log) for log in found.items])


@router.get("/chat-messages")
async def chat_messages(
    app_id: uuid.UUID,
    user: ConsoleUserDep,
    services: ServicesDep,
    conversation_id: str | None = None,
    first_id: str | None = None,
    limit: Limit = 20,
) -> dict[str, Any]:
    if not conversation_id:
        raise InvalidParam("conversation_id is required", params="conversation_id")
    app = await _app(services, user, app_id)
    records.require_chat_app(app)
    async with services.transaction() as db:
        conversation = await records.any_conversation(db, app, conversation_id)
        page = await records.list_messages(db, app, conversation, first_id=first_id, limit=limit)
        ids = [m.id for m in page.items]
        given = await feedback.feedbacks_of(db, app, ids)
        thoughts = await agent_thoughts(db, app.workspace_id, ids)
    shown = [
        message_detail_json(m, given.get(m.id, []), thoughts.get(m.id, [])) for m in page.items
    ]
    return scroll_json(page, shown)


@router.get("/workflow-app-logs")
async def workflow_app_logs(
    app_id: uuid.UUID,
    user: ConsoleUserDep,
    services: ServicesDep,
    keyword: str | None = None,
    status: str | None = None,
    created_at__before: str | None = None,
    created_at__after: str | None = None,
    created_by_end_user_session_id: str | None = None,
    created_by_account: str | None = None,
    page: Page = 1,
    limit: Limit = 20,
) -> dict[str, Any]:
    app = await _app(services, user, app_id)
    filters = records.LogFilter(
        keyword=keyword,
        status=status,
        created_before=iso_time(created_at__before, "created_at__before"),
        created_after=iso_time(created_at__after, "created_at__after"),
        end_user_session_id=created_by_end_user_session_id,
        account_email=created_by_account,
    )
    async with services.transaction() as db:
        found = await records.workflow_logs(db, app, filters, page=page, limit=limit)
    return log_page(found, [run_log_json(log) for log in found.items])


@router.get("/statistics/token-costs")
async def token_costs(
    app_id: uuid.UUID,
    user: ConsoleUserDep,
    services: ServicesDep,
    start: str | None = None,
    end: str | None = None,
) -> dict[str, Any]:
    app = await _app(services, user, app_id)
    async with services.transaction() as db:
        days = await records.token_costs(
            db, app, start=console_time(start, "start"), end=console_time(end, "end")
        )
    return {
        "data": [
            {
                "date": day.date,
                "token_count": day.token_count,
                "total_price": _money(day.total_price),
                "currency": day.currency,
            }
            for day in days
        ]
    }
