"""What chat apps recorded, read back for the people who made it: an end user's conversations
(listed, renamed, deleted), their messages, and a chatflow conversation's variables.

Listings scroll as Dify's do: by `last_id` (conversations, variables) or `first_id` (messages,
newest first then returned oldest first), with `has_more` saying whether another page exists."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, Text, and_, cast, func, literal, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tusk.apps import naming
from tusk.apps.app_parameters import model_config_of
from tusk.apps.chatflow_app import NotChatApp
from tusk.apps.conversations import Speaker, find_conversation
from tusk.apps.easy_config import read_config
from tusk.db.models import (
    Account,
    App,
    Conversation,
    EndUser,
    Message,
    MessageFeedback,
    Workflow,
    WorkflowRun,
)
from tusk.db.paging import Page
from tusk.errors import InvalidParam, NotFound, TuskError
from tusk.models.runtime import ModelRuntime
from tusk.workflow import store

T = TypeVar("T")
CHAT_MODES = ("chat", "agent-chat", "advanced-chat")
SORTS = ("created_at", "-created_at", "updated_at", "-updated_at")


@dataclass(frozen=True)
class Scroll(Generic[T]):
    """One page of an infinite-scroll listing."""

    items: list[T]
    limit: int
    has_more: bool


def require_chat_app(app: App) -> None:
    if app.mode not in CHAT_MODES:
        raise NotChatApp("Please check if your app mode matches the right API route.")


def scroll_limit(limit: int) -> int:
    if not 1 <= limit <= 100:
        raise InvalidParam("limit must be between 1 and 100.", params="limit")
    return limit


def _uuid_or_none(value: str | None, param: str) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidParam(f"{param} is not a valid id.", params=param) from None


def _cut(rows: Sequence[T], limit: int) -> Scroll[T]:
    """Rows fetched with one extra: the extra one only says that more exist."""
    return Scroll(list(rows[:limit]), limit, len(rows) > limit)


# --- conversations -----------------------------------------------------------------------------


def _conversations_of(app: App, speaker: Speaker) -> Select[Conversation]:
    query = select(Conversation).where(
        Conversation.app_id == app.id,
        Conversation.workspace_id == app.workspace_id,
        Conversation.is_deleted.is_(False),
    )
    if speaker.end_user_id is not None:
        return query.where(Conversation.from_end_user_id == speaker.end_user_id)
    return query.where(Conversation.from_account_id == speaker.account_id)


async def list_conversations(
    db: AsyncSession,
    app: App,
    speaker: Speaker,
    *,
    last_id: str | None = None,
    limit: int = 20,
    sort_by: str = "-updated_at",
) -> Scroll[Conversation]:
    require_chat_app(app)
    if sort_by not in SORTS:
        raise InvalidParam(f"sort_by must be one of {', '.join(SORTS)}.", params="sort_by")
    limit = scroll_limit(limit)
    field = sort_by.lstrip("-")
    column, descending = getattr(Conversation, field), sort_by.startswith("-")
    query = _conversations_of(app, speaker)
    after = _uuid_or_none(last_id, "last_id")
    if after is not None:
        last = (await db.execute(query.where(Conversation.id == after))).scalar_one_or_none()
        if last is None:
            raise NotFound("Last Conversation Not Exists.")
        # the id breaks ties between equal timestamps, so that no row is skipped or repeated
        key, mark = tuple_(column, Conversation.id), tuple_(getattr(last, field), last.id)
        query = query.where(key < mark if descending else key > mark)
    order = (column.desc(), Conversation.id.desc()) if descending else (column, Conversation.id)
    rows = (await db.execute(query.order_by(*order).limit(limit + 1))).scalars().all()
    return _cut(rows, limit)


async def chat_conversation(
    db: AsyncSession, app: App, speaker: Speaker, conversation_id: Any, *, lock: bool = False
) -> Conversation:
    require_chat_app(app)
    return await find_conversation(db, app, speaker, conversation_id, lock=lock)


async def rename_conversation(
    db: AsyncSession, app: App, speaker: Speaker, conversation_id: Any, name: str | None
) -> Conversation:
    if name is None or not name.strip():
        raise InvalidParam("name is required when auto_generate is false", params="name")
    conversation = await chat_conversation(db, app, speaker, conversation_id, lock=True)
    conversation.name = name.strip()[:255]
    conversation.updated_at = datetime.now(UTC)
    await db.flush()
    return conversation


async def auto_rename(
    sessions: async_sessionmaker[AsyncSession],
    models: ModelRuntime,
    app: App,
    speaker: Speaker,
    conversation_id: Any,
) -> Conversation:
    """Name the conversation by a model from its first query; the model call runs outside any
    transaction, and a failed one keeps the old name, as in Dify."""
    async with sessions.begin() as db:
        conversation = await chat_conversation(db, app, speaker, conversation_id)
        query = await first_query(db, conversation)
        config = await model_config_of(db, app) if app.mode != "advanced-chat" else None
    easy = read_config(config.config) if config is not None else None
    try:
        name = await naming.name_for(models, app, query, config=easy)
    except TuskError:
        return conversation
    async with sessions.begin() as db:
        return await rename_conversation(db, app, speaker, conversation_id, name)


async def first_query(db: AsyncSession, conversation: Conversation) -> str:
    """The query that opened a conversation: what an automatic name is made from."""
    query = (
        select(Message.query)
        .where(Message.conversation_id == conversation.id)
        .order_by(Message.created_at)
        .limit(1)
    )
    found = (await db.execute(query)).scalar_one_or_none()
    if found is None:
        raise NotFound("Message Not Exists.")
    return str(found)


async def delete_conversation(
    db: AsyncSession, app: App, speaker: Speaker, conversation_id: Any
) -> None:
    """Soft delete, as Dify: the rows stay for the console's logs; the user no longer sees it."""
    conversation = await chat_conversation(db, app, speaker, conversation_id, lock=True)
    conversation.is_deleted = True
    conversation.updated_at = datetime.now(UTC)
    await db.flush()


# --- messages ----------------------------------------------------------------------------------


async def list_messages(
    db: AsyncSession,
    app: App,
    conversation: Conversation,
    *,
    first_id: str | None = None,
    limit: int = 20,
) -> Scroll[Message]:
    """The `limit` messages before `first_id` (or the newest), oldest first."""
    limit = scroll_limit(limit)
    query = select(Message).where(
        Message.conversation_id == conversation.id, Message.app_id == app.id
    )
    before = _uuid_or_none(first_id, "first_id")
    if before is not None:
        first = (await db.execute(query.where(Message.id == before))).scalar_one_or_none()
        if first is None:
            raise NotFound("First Message Not Exists.")
        mark = tuple_(first.created_at, first.id)
        query = query.where(tuple_(Message.created_at, Message.id) < mark)
    newest_first = query.order_by(Message.created_at.desc(), Message.id.desc()).limit(limit + 1)
    page = _cut((await db.execute(newest_first)).scalars().all(), limit)
    return Scroll(list(reversed(page.items)), limit, page.has_more)


async def message_of(db: AsyncSession, app: App, speaker: Speaker, message_id: Any) -> Message:
    """A message of this app that the speaker wrote; any other is "not found"."""
    wanted = _uuid_or_none(str(message_id), "message_id")
    owner = (
        Message.from_end_user_id == speaker.end_user_id
        if speaker.end_user_id is not None
        else Message.from_account_id == speaker.account_id
    )
    query = select(Message).where(
        Message.id == wanted,
        Message.app_id == app.id,
        Message.workspace_id == app.workspace_id,
        owner,
    )
    found = (await db.execute(query)).scalar_one_or_none()
    if found is None:
        raise NotFound("Message Not Exists.")
    return found


def retriever_resources(message: Message) -> list[Any]:
    resources = (message.message_metadata or {}).get("retriever_resources")
    return list(resources) if isinstance(resources, list) else []


# --- conversation variables (chatflows) --------------------------------------------------------


@dataclass(frozen=True)
class ConversationVariable:
    """A declared conversation variable with its value in one conversation."""

    id: str
    name: str
    value_type: str
    value: Any
    description: str
    created_at: datetime
    updated_at: datetime


class VariableTypeMismatch(InvalidParam):
    code = "bad_request"


async def _declared(db: AsyncSession, app: App) -> list[Mapping[str, Any]]:
    if app.mode != "advanced-chat":
        return []
    workflow: Workflow = await store.get_published(db, app)
    return [v for v in workflow.conversation_variables or [] if isinstance(v, Mapping)]


def _variable(conversation: Conversation, declared: Mapping[str, Any]) -> ConversationVariable:
    name = str(declared.get("name", ""))
    values = conversation.variables or {}
    return ConversationVariable(
        id=str(declared.get("id", "")),
        name=name,
        value_type=str(declared.get("value_type", "string")),
        value=values[name] if name in values else declared.get("value"),
        description=str(declared.get("description") or ""),
        created_at=conversation.created_at,
        updated_at=conversation.updated_at,
    )


async def list_variables(
    db: AsyncSession,
    app: App,
    conversation: Conversation,
    *,
    last_id: str | None = None,
    limit: int = 20,
    variable_name: str | None = None,
) -> Scroll[ConversationVariable]:
    limit = scroll_limit(limit)
    variables = [_variable(conversation, d) for d in await _declared(db, app)]
    if variable_name:
        variables = [v for v in variables if v.name == variable_name]
    if last_id:
        ids = [v.id for v in variables]
        variables = variables[ids.index(last_id) + 1 :] if last_id in ids else []
    return _cut(variables, limit)


_CHECKS: dict[str, Any] = {
    "string": lambda v: isinstance(v, str),
    "secret": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
}


def value_fits(value_type: str, value: Any) -> bool:
    """Whether a value has a variable's declared type (`array[x]`: a list of x)."""
    if value_type.startswith("array[") and value_type.endswith("]"):
        inner = value_type[6:-1]
        return isinstance(value, list) and all(value_fits(inner, item) for item in value)
    if value_type == "array":
        return isinstance(value, list)
    check = _CHECKS.get(value_type)
    return check is None or bool(check(value))


async def update_variable(
    db: AsyncSession, app: App, conversation: Conversation, variable_id: str, value: Any
) -> ConversationVariable:
    declared = next((d for d in await _declared(db, app) if str(d.get("id")) == variable_id), None)
    if declared is None:
        raise NotFound("Conversation Variable Not Exists.")
    variable = _variable(conversation, declared)
    if not value_fits(variable.value_type, value):
        got = type(value).__name__ if value is not None else "null"
        raise VariableTypeMismatch(
            f"Type mismatch: variable '{variable.name}' expects {variable.value_type}, "
            f"but got {got} type",
            params="value",
        )
    conversation.variables = {**(conversation.variables or {}), variable.name: value}
    conversation.updated_at = datetime.now(UTC)
    await db.flush()
    return _variable(conversation, declared)


# --- logs: workflow runs, and the console's view of conversations -------------------------------


@dataclass(frozen=True)
class LogFilter:
    keyword: str | None = None
    status: str | None = None
    created_before: datetime | None = None
    created_after: datetime | None = None
    end_user_session_id: str | None = None
    account_email: str | None = None


@dataclass(frozen=True)
class RunLog:
    """A workflow run of the app, with who started it."""

    run: WorkflowRun
    end_user: EndUser | None
    account: Account | None


LOG_STATUSES = ("succeeded", "failed", "stopped", "partial-succeeded")


def like(keyword: str) -> str:
    escaped = keyword.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _run_filters(query: Any, filters: LogFilter) -> Any:
    if filters.status:
        if filters.status not in LOG_STATUSES:
            allowed = ", ".join(LOG_STATUSES)
            raise InvalidParam(f"status must be one of {allowed}.", params="status")
        query = query.where(WorkflowRun.status == filters.status)
    if filters.created_before:
        query = query.where(WorkflowRun.created_at <= filters.created_before)
    if filters.created_after:
        query = query.where(WorkflowRun.created_at >= filters.created_after)
    if filters.end_user_session_id:
        query = query.where(EndUser.session_id == filters.end_user_session_id)
    if filters.account_email:
        query = query.where(Account.email == filters.account_email)
    if filters.keyword:
        pattern = like(filters.keyword)
        query = query.where(
            or_(
                cast(WorkflowRun.inputs, Text).ilike(pattern),
                cast(WorkflowRun.outputs, Text).ilike(pattern),
                EndUser.session_id.ilike(pattern),
            )
        )
    return query


async def workflow_logs(
    db: AsyncSession, app: App, filters: LogFilter, *, page: int = 1, limit: int = 20
) -> Page[RunLog]:
    """The app's runs from its users (debug runs are not logs), newest first."""
    if page < 1:
        raise InvalidParam("page must be 1 or more.", params="page")
    limit = scroll_limit(limit)
    started_by_user = and_(
        WorkflowRun.created_by_role == "end_user", EndUser.id == WorkflowRun.created_by
    )
    started_by_account = and_(
        WorkflowRun.created_by_role == "account", Account.id == WorkflowRun.created_by
    )
    query = (
        select(WorkflowRun, EndUser, Account)
        .outerjoin(EndUser, started_by_user)
        .outerjoin(Account, started_by_account)
        .where(
            WorkflowRun.app_id == app.id,
            WorkflowRun.workspace_id == app.workspace_id,
            WorkflowRun.type == "workflow",
            WorkflowRun.triggered_from == "app-run",
        )
    )
    query = _run_filters(query, filters)
    total = (await db.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    ordered = query.order_by(WorkflowRun.created_at.desc(), WorkflowRun.id.desc())
    rows = (await db.execute(ordered.offset((page - 1) * limit).limit(limit))).all()
    return Page([RunLog(*row) for row in rows], total, page, limit)


@dataclass(frozen=True)
class ConversationLog:
    """A conversation in the console's logs, with its totals."""

    conversation: Conversation
    session_id: str | None
    message_count: int
    total_tokens: int
    total_price: Decimal
    likes: int
    dislikes: int
    first: Message | None = None


def _totals() -> Any:
    return (
        select(
            Message.conversation_id.label("conversation_id"),
            func.count().label("message_count"),
            func.coalesce(func.sum(Message.total_tokens), 0).label("total_tokens"),
            func.coalesce(func.sum(Message.total_price), 0).label("total_price"),
        )
        .group_by(Message.conversation_id)
        .subquery()
    )


def _ratings() -> Any:
    return (
        select(
            MessageFeedback.conversation_id.label("conversation_id"),
            func.count().filter(MessageFeedback.rating == "like").label("likes"),
            func.count().filter(MessageFeedback.rating == "dislike").label("dislikes"),
        )
        .where(MessageFeedback.from_source == "user")
        .group_by(MessageFeedback.conversation_id)
        .subquery()
    )


def _conversation_filters(
    query: Any, keyword: str | None, start: datetime | None, end: datetime | None
) -> Any:
    if start is not None:
        query = query.where(Conversation.created_at >= start)
    if end is not None:
        query = query.where(Conversation.created_at < end)
    if keyword:
        pattern = like(keyword)
        said = select(Message.id).where(
            Message.conversation_id == Conversation.id,
            or_(Message.query.ilike(pattern), Message.answer.ilike(pattern)),
        )
        query = query.where(
            or_(
                Conversation.name.ilike(pattern),
                EndUser.session_id.ilike(pattern),
                said.exists(),
            )
        )
    return query


async def conversation_logs(
    db: AsyncSession,
    app: App,
    *,
    completion: bool,
    keyword: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    page: int = 1,
    limit: int = 20,
) -> Page[ConversationLog]:
    """Every user's conversations with this app, most recently active first, with totals."""
    if completion != (app.mode == "completion"):
        raise NotFound("This app has no such logs: check the app's mode.")
    if page < 1:
        raise InvalidParam("page must be 1 or more.", params="page")
    limit = scroll_limit(limit)
    totals, rated = _totals(), _ratings()
    query = (
        select(
            Conversation,
            EndUser.session_id,
            func.coalesce(totals.c.message_count, 0),
            func.coalesce(totals.c.total_tokens, 0),
            func.coalesce(totals.c.total_price, 0),
            func.coalesce(rated.c.likes, 0),
            func.coalesce(rated.c.dislikes, 0),
        )
        .outerjoin(EndUser, EndUser.id == Conversation.from_end_user_id)
        .outerjoin(totals, totals.c.conversation_id == Conversation.id)
        .outerjoin(rated, rated.c.conversation_id == Conversation.id)
        .where(
            Conversation.app_id == app.id,
            Conversation.workspace_id == app.workspace_id,
            Conversation.is_deleted.is_(False),
        )
    )
    query = _conversation_filters(query, keyword, start, end)
    total = (await db.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    ordered = query.order_by(Conversation.updated_at.desc(), Conversation.id.desc())
    rows = (await db.execute(ordered.offset((page - 1) * limit).limit(limit))).all()
    logs = [
        ConversationLog(row[0], row[1], int(row[2]), int(row[3]), Decimal(row[4]),
                        int(row[5]), int(row[6]))
        for row in rows
    ]  # fmt: skip
    if completion:
        logs = await _with_first_messages(db, logs)
    return Page(logs, total, page, limit)


async def _with_first_messages(
    db: AsyncSession, logs: list[ConversationLog]
) -> list[ConversationLog]:
    ids = [log.conversation.id for log in logs]
    query = (
        select(Message)
        .where(Message.conversation_id.in_(ids))
        .order_by(Message.conversation_id, Message.created_at)
        .distinct(Message.conversation_id)
    )
    first = {m.conversation_id: m for m in (await db.execute(query)).scalars()}
    return [replace(log, first=first.get(log.conversation.id)) for log in logs]


async def any_conversation(db: AsyncSession, app: App, conversation_id: Any) -> Conversation:
    """A conversation of this app, whoever had it (the console sees them all)."""
    wanted = _uuid_or_none(str(conversation_id), "conversation_id")
    query = select(Conversation).where(
        Conversation.id == wanted,
        Conversation.app_id == app.id,
        Conversation.workspace_id == app.workspace_id,
    )
    found = (await db.execute(query)).scalar_one_or_none()
    if found is None:
        raise NotFound("Conversation Not Exists.")
    return found


@dataclass(frozen=True)
class DailyCost:
    date: str
    token_count: int
    total_price: Decimal
    currency: str = "USD"


async def token_costs(
    db: AsyncSession, app: App, *, start: datetime | None = None, end: datetime | None = None
) -> list[DailyCost]:
    """Tokens and price a day (UTC): from messages, or from runs for workflow apps (which
    record tokens but no price)."""
    if app.mode == "workflow":
        created, tokens = WorkflowRun.created_at, WorkflowRun.total_tokens
        price: Any = literal(0)
        scope: Any = and_(WorkflowRun.app_id == app.id, WorkflowRun.triggered_from == "app-run")
    else:
        created, tokens, price = Message.created_at, Message.total_tokens, Message.total_price
        scope = Message.app_id == app.id
    day = func.date(func.timezone("UTC", created))
    query = select(day, func.sum(tokens), func.sum(price)).where(scope)
    if start is not None:
        query = query.where(created >= start)
    if end is not None:
        query = query.where(created < end)
    rows = (await db.execute(query.group_by(day).order_by(day))).all()
    return [DailyCost(str(d), int(t or 0), Decimal(p or 0)) for d, t, p in rows]
