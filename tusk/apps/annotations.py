"""Annotation reply (Dify's): an app's stored question/answer pairs, matched by embedding before
the model is called. A query whose nearest annotation question is at least `score_threshold`
similar (cosine) is answered with that annotation's answer; the hit is recorded.

Turning the reply on embeds the app's annotations with the chosen model, at once (Dify does it
in a background job; its job id and status are kept for the status endpoint, as Dify's clients
poll it). While it is on, annotations are embedded as they are written."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tusk.db import kv
from tusk.db.models import Account, App, Membership, Message
from tusk.db.models.annotations import (
    AppAnnotationHitHistory,
    AppAnnotationSetting,
    MessageAnnotation,
)
from tusk.db.paging import Page, paginate
from tusk.errors import InvalidParam, NotFound, TuskError
from tusk.models.runtime import ModelRuntime
from tusk.rag.indexing import halfvec_literal

if TYPE_CHECKING:
    from tusk.apps.cache import AppCache

log = logging.getLogger(__name__)
Sessions = async_sessionmaker[AsyncSession]

ACTIONS = ("enable", "disable")
REPLY_MODES = ("chat", "agent-chat", "advanced-chat")
JOB_SECONDS = 600  # how long a job's status can be read, as in Dify
MAX_PAGE_SIZE = 100
UNKNOWN_AUTHOR = "Dify user"  # Dify's name for an annotation whose author is gone


class AnnotationNotFound(NotFound):
    pass


@dataclass(frozen=True)
class ReplySettings:
    """What `enable` takes: Dify's body of POST /apps/annotation-reply/enable."""

    score_threshold: float
    embedding_provider_name: str
    embedding_model_name: str

    @property
    def model_name(self) -> str:
        return model_name(self.embedding_provider_name, self.embedding_model_name)


@dataclass(frozen=True)
class Written:
    """An annotation as written by a caller."""

    question: str
    answer: str


@dataclass(frozen=True)
class AnnotationReply:
    """A query answered by an annotation: the answer, and Dify's `annotation_reply` metadata."""

    answer: str
    metadata: dict[str, Any]


def model_name(provider: str, model: str) -> str:
    return f"{provider}:{model}"


def setting_model(setting: AppAnnotationSetting) -> str:
    return model_name(setting.embedding_provider_name, setting.embedding_model_name)


@dataclass(frozen=True)
class ReplyMatch:
    """What answering from annotations needs of an enabled setting."""

    model: str
    threshold: float


def reply_match_of(setting: AppAnnotationSetting | None) -> ReplyMatch | None:
    if setting is None or not setting.enabled:
        return None
    return ReplyMatch(setting_model(setting), setting.score_threshold)


# --- shapes ------------------------------------------------------------------------------------


def annotation_json(row: MessageAnnotation) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "question": row.question,
        "answer": row.content,
        "hit_count": row.hit_count,
        "created_at": int(row.created_at.timestamp()),
    }


def hit_json(row: AppAnnotationHitHistory) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "source": row.source,
        "score": row.score,
        "question": row.question,
        "created_at": int(row.created_at.timestamp()),
        "match": row.annotation_question,
        "response": row.annotation_content,
    }


def setting_json(setting: AppAnnotationSetting | None) -> dict[str, Any]:
    """Dify's annotation setting (also the `annotation_reply` of an app's parameters)."""
    if setting is None or not setting.enabled:
        return {"enabled": False}
    return {
        "id": str(setting.id),
        "enabled": True,
        "score_threshold": setting.score_threshold,
        "embedding_model": {
            "embedding_provider_name": setting.embedding_provider_name,
            "embedding_model_name": setting.embedding_model_name,
        },
    }


def written(question: Any, answer: Any) -> Written:
    for name, value in (("question", question), ("answer", answer)):
        if not isinstance(value, str) or not value.strip():
            raise InvalidParam(f"{name} is required and must be a non-empty string.", params=name)
    return Written(question, answer)


def reply_settings(body: Any) -> ReplySettings:
    """Dify's enable body, checked: every field required."""
    body = body if isinstance(body, dict) else {}
    threshold = body.get("score_threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise InvalidParam(
            "score_threshold is required and must be a number.", params="score_threshold"
        )
    if not 0 <= threshold <= 1:
        raise InvalidParam("score_threshold must be between 0 and 1.", params="score_threshold")
    names = []
    for field in ("embedding_provider_name", "embedding_model_name"):
        value = body.get(field)
        if not isinstance(value, str) or not value.strip():
            raise InvalidParam(f"{field} is required.", params=field)
        names.append(value.strip())
    return ReplySettings(float(threshold), names[0], names[1])


def page_bounds(page: int, limit: int) -> tuple[int, int]:
    """Dify's paging: pages from 1, at most 100 rows a page."""
    if page < 1:
        raise InvalidParam("page must be 1 or more.", params="page")
    if limit < 1:
        raise InvalidParam("limit must be 1 or more.", params="limit")
    return page, min(limit, MAX_PAGE_SIZE)


# --- annotations -------------------------------------------------------------------------------


async def setting_of(db: AsyncSession, app: App) -> AppAnnotationSetting | None:
    query = select(AppAnnotationSetting).where(AppAnnotationSetting.app_id == app.id)
    return (await db.execute(query)).scalar_one_or_none()


async def _enabled_model(db: AsyncSession, app: App) -> str | None:
    setting = await setting_of(db, app)
    return setting_model(setting) if setting is not None and setting.enabled else None


async def _embed(
    models: ModelRuntime, app: App, name: str, texts: Sequence[str]
) -> list[list[float]]:
    model = await models.embedding(app.workspace_id, name, app_id=app.id)
    return await model.embed(list(texts), "query")


async def _set_question(
    db: AsyncSession, models: ModelRuntime, app: App, row: MessageAnnotation, question: str
) -> None:
    """A new question: embedded when the app's reply is on, otherwise its old vector dropped."""
    name = await _enabled_model(db, app)
    row.question = question
    row.embedding_model = name
    row.embedding = (await _embed(models, app, name, [question]))[0] if name else None


async def list_annotations(
    db: AsyncSession, app: App, *, page: int, limit: int, keyword: str = ""
) -> Page[MessageAnnotation]:
    page, limit = page_bounds(page, limit)
    query = select(MessageAnnotation).where(MessageAnnotation.app_id == app.id)
    if keyword:
        query = query.where(
            or_(
                MessageAnnotation.question.icontains(keyword, autoescape=True),
                MessageAnnotation.content.icontains(keyword, autoescape=True),
            )
        )
    order = (MessageAnnotation.created_at.desc(), MessageAnnotation.id.desc())
    return await paginate(db, query.order_by(*order), page, limit)


async def all_annotations(db: AsyncSession, app: App) -> list[MessageAnnotation]:
    query = select(MessageAnnotation).where(MessageAnnotation.app_id == app.id)
    order = (MessageAnnotation.created_at.desc(), MessageAnnotation.id.desc())
    return list((await db.execute(query.order_by(*order))).scalars())


async def get_annotation(db: AsyncSession, app: App, annotation_id: Any) -> MessageAnnotation:
    try:
        key = uuid.UUID(str(annotation_id))
    except ValueError:
        raise AnnotationNotFound("Annotation not found.") from None
    row = await db.get(MessageAnnotation, key)
    if row is None or row.app_id != app.id:
        raise AnnotationNotFound("Annotation not found.")
    return row


async def workspace_owner(db: AsyncSession, app: App) -> uuid.UUID | None:
    """Who writes through the Service API: the workspace's owner, as in Dify."""
    query = select(Membership.account_id).where(
        Membership.workspace_id == app.workspace_id, Membership.role == "owner"
    )
    return (await db.execute(query.limit(1))).scalar_one_or_none() or app.created_by


async def create_annotation(
    db: AsyncSession,
    models: ModelRuntime,
    app: App,
    new: Written,
    created_by: uuid.UUID | None,
    message: Message | None = None,
) -> MessageAnnotation:
    row = MessageAnnotation(
        workspace_id=app.workspace_id,
        app_id=app.id,
        content=new.answer,
        created_by=created_by,
        conversation_id=message.conversation_id if message else None,
        message_id=message.id if message else None,
    )
    await _set_question(db, models, app, row, new.question)
    db.add(row)
    await db.flush()
    await db.refresh(row)
    return row


async def annotate_message(
    db: AsyncSession,
    models: ModelRuntime,
    app: App,
    message_id: Any,
    body: dict[str, Any],
    by: uuid.UUID,
) -> MessageAnnotation:
    """Dify's console annotation of a message: the question defaults to the message's query;
    a message keeps one annotation, changed by later calls."""
    message = await _app_message(db, app, message_id)
    new = written(body.get("question") or message.query, body.get("answer"))
    query = select(MessageAnnotation).where(MessageAnnotation.message_id == message.id)
    row = (await db.execute(query)).scalar_one_or_none()
    if row is None:
        return await create_annotation(db, models, app, new, by, message)
    return await update_annotation(db, models, app, row.id, new)


async def _app_message(db: AsyncSession, app: App, message_id: Any) -> Message:
    try:
        message = await db.get(Message, uuid.UUID(str(message_id)))
    except ValueError:
        message = None
    if message is None or message.app_id != app.id:
        raise NotFound("Message Not Exists.")
    return message


async def update_annotation(
    db: AsyncSession, models: ModelRuntime, app: App, annotation_id: Any, new: Written
) -> MessageAnnotation:
    row = await get_annotation(db, app, annotation_id)
    row.content = new.answer
    if new.question != row.question or row.embedding is None:
        await _set_question(db, models, app, row, new.question)
    await db.flush()
    await db.refresh(row)
    return row


async def delete_annotation(db: AsyncSession, app: App, annotation_id: Any) -> None:
    """The annotation and its hit history."""
    row = await get_annotation(db, app, annotation_id)
    await db.delete(row)


async def delete_annotations(db: AsyncSession, app: App, ids: Sequence[str] | None) -> int:
    """The named annotations of the app (ids of other apps are ignored), or all of them."""
    query = delete(MessageAnnotation).where(MessageAnnotation.app_id == app.id)
    if ids is not None:
        try:
            keys = [uuid.UUID(value) for value in ids]
        except ValueError:
            raise InvalidParam(
                "annotation_id must be annotation ids.", params="annotation_id"
            ) from None
        query = query.where(MessageAnnotation.id.in_(keys))
    return len((await db.execute(query.returning(MessageAnnotation.id))).all())


async def hit_histories(
    db: AsyncSession, app: App, annotation_id: Any, *, page: int, limit: int
) -> Page[AppAnnotationHitHistory]:
    row = await get_annotation(db, app, annotation_id)
    page, limit = page_bounds(page, limit)
    query = select(AppAnnotationHitHistory).where(AppAnnotationHitHistory.annotation_id == row.id)
    order = (AppAnnotationHitHistory.created_at.desc(), AppAnnotationHitHistory.id.desc())
    return await paginate(db, query.order_by(*order), page, limit)


# --- turning the reply on and off --------------------------------------------------------------


def _job_key(action: str, job_id: str) -> str:
    return f"annotation_reply_job:{action}:{job_id}"


async def _finish_job(db: AsyncSession, app: App, action: str) -> dict[str, Any]:
    job_id = str(uuid.uuid4())
    status = {"app_id": str(app.id), "job_status": "completed", "error_msg": ""}
    await kv.put(db, _job_key(action, job_id), status, ttl=JOB_SECONDS)
    return {"job_id": job_id, "job_status": "completed"}


def check_action(action: str) -> str:
    if action not in ACTIONS:
        raise InvalidParam("action must be enable or disable.", params="action")
    return action


async def enable(
    sessions: async_sessionmaker[AsyncSession],
    models: ModelRuntime,
    app: App,
    wanted: ReplySettings,
    by: uuid.UUID | None,
) -> dict[str, Any]:
    """Embed the annotations the model has not embedded yet (no transaction is held while the
    model works), then turn the reply on with these settings. A model failure changes nothing."""
    name = wanted.model_name
    await models.embedding(app.workspace_id, name, app_id=app.id)  # an unknown model fails here
    async with sessions() as db:
        query = select(MessageAnnotation.id, MessageAnnotation.question).where(
            MessageAnnotation.app_id == app.id,
            MessageAnnotation.embedding_model.is_distinct_from(name),
        )
        pending = (await db.execute(query)).all()
    vectors = await _embed(models, app, name, [row.question for row in pending])
    async with sessions.begin() as db:
        for row, vector in zip(pending, vectors, strict=True):
            # An annotation whose question changed meanwhile was embedded by that change.
            await db.execute(
                update(MessageAnnotation)
                .where(MessageAnnotation.id == row.id, MessageAnnotation.question == row.question)
                .values(embedding=vector, embedding_model=name)
            )
        await _save_setting(db, app, wanted, by)
        return await _finish_job(db, app, "enable")


async def _save_setting(
    db: AsyncSession, app: App, wanted: ReplySettings, by: uuid.UUID | None
) -> None:
    values = {
        "enabled": True,
        "score_threshold": wanted.score_threshold,
        "embedding_provider_name": wanted.embedding_provider_name,
        "embedding_model_name": wanted.embedding_model_name,
        "updated_by": by,
        "updated_at": func.now(),
    }
    statement = insert(AppAnnotationSetting).values(
        workspace_id=app.workspace_id, app_id=app.id, created_by=by, **values
    )
    await db.execute(statement.on_conflict_do_update(index_elements=["app_id"], set_=values))


async def disable(db: AsyncSession, app: App, by: uuid.UUID | None) -> dict[str, Any]:
    await db.execute(
        update(AppAnnotationSetting)
        .where(AppAnnotationSetting.app_id == app.id)
        .values(enabled=False, updated_by=by, updated_at=func.now())
    )
    return await _finish_job(db, app, "disable")


async def job_status(db: AsyncSession, app: App, action: str, job_id: str) -> dict[str, Any]:
    found = await kv.get(db, _job_key(check_action(action), job_id))
    if not isinstance(found, dict) or found.get("app_id") != str(app.id):
        raise NotFound("The job does not exist.")
    return {"job_id": job_id, "job_status": found["job_status"], "error_msg": found["error_msg"]}


async def update_threshold(
    db: AsyncSession, app: App, setting_id: Any, threshold: Any, by: uuid.UUID
) -> AppAnnotationSetting:
    """Dify's console change of the score threshold of an enabled reply."""
    setting = await setting_of(db, app)
    if setting is None or not setting.enabled or str(setting.id) != str(setting_id):
        raise NotFound("App annotation not found.")
    current = setting_json(setting)["embedding_model"]
    wanted = reply_settings({**current, "score_threshold": threshold})
    setting.score_threshold = wanted.score_threshold
    setting.updated_by = by
    await db.flush()
    await db.refresh(setting)
    return setting


# --- answering ---------------------------------------------------------------------------------

NEAREST = text("""
    SELECT id, 1 - (embedding <=> CAST(:vector AS halfvec)) AS score
    FROM message_annotations
    WHERE app_id = :app_id AND embedding_model = :model AND embedding IS NOT NULL
    ORDER BY embedding <=> CAST(:vector AS halfvec), created_at DESC
    LIMIT 1
""")


def close_enough(score: float, threshold: float) -> bool:
    return score >= threshold


@dataclass(frozen=True)
class Hit:
    annotation_id: uuid.UUID
    score: float


async def _reply_match(sessions: Sessions, app: App, cache: AppCache | None) -> ReplyMatch | None:
    if cache is not None:
        return await cache.reply_match(sessions, app)
    async with sessions() as db:
        return reply_match_of(await setting_of(db, app))


async def _nearest(
    sessions: Sessions, models: ModelRuntime, app: App, query: str, cache: AppCache | None
) -> Hit | None:
    match = await _reply_match(sessions, app, cache)
    if match is None:
        return None
    vector = halfvec_literal((await _embed(models, app, match.model, [query]))[0])
    params = {"vector": vector, "app_id": app.id, "model": match.model}
    async with sessions() as db:
        row = (await db.execute(NEAREST, params)).first()
    if row is None or not close_enough(row.score, match.threshold):
        return None
    return Hit(row.id, float(row.score))


async def _record_hit(
    db: AsyncSession, message: Message, query: str, hit: Hit
) -> AnnotationReply | None:
    """Count the hit and keep it in the history, with the annotation as it is now."""
    counted = (
        update(MessageAnnotation)
        .where(MessageAnnotation.id == hit.annotation_id)
        .values(hit_count=MessageAnnotation.hit_count + 1)
        .returning(MessageAnnotation)
    )
    annotation = (await db.execute(counted)).scalar_one_or_none()
    if annotation is None:  # deleted since it was found
        return None
    db.add(
        AppAnnotationHitHistory(
            workspace_id=annotation.workspace_id,
            app_id=annotation.app_id,
            annotation_id=annotation.id,
            message_id=message.id,
            source="console" if message.from_source == "console" else "api",
            question=query,
            score=hit.score,
            annotation_question=annotation.question,
            annotation_content=annotation.content,
            end_user_id=message.from_end_user_id,
            account_id=message.from_account_id,
        )
    )
    author = await db.get(Account, annotation.created_by) if annotation.created_by else None
    account = {
        "id": str(annotation.created_by) if annotation.created_by else None,
        "name": author.name if author is not None else UNKNOWN_AUTHOR,
    }
    metadata = {"id": str(annotation.id), "account": account}
    return AnnotationReply(annotation.content, metadata)


async def reply_from_annotations(
    sessions: async_sessionmaker[AsyncSession],
    models: ModelRuntime,
    app: App,
    message: Message,
    query: str,
    cache: AppCache | None = None,
    message_written: Callable[[], Awaitable[None]] | None = None,
) -> AnnotationReply | None:
    """The annotation that answers `query`, when the app's reply is on and one is close enough;
    the hit is recorded against `message` (once `message_written` says that row is there). A
    failure (of the embedding model, say) is logged and the query goes to the model, as in Dify.
    With a `cache`, whether the reply is on is read from it."""
    if app.mode not in REPLY_MODES or not query.strip():
        return None
    try:
        hit = await _nearest(sessions, models, app, query, cache)
        if hit is None:
            return None
        if message_written is not None:
            await message_written()
        async with sessions.begin() as db:
            return await _record_hit(db, message, query, hit)
    except (TuskError, OSError) as exc:
        log.warning("annotation reply of app %s skipped: %s", app.id, exc)
        return None
