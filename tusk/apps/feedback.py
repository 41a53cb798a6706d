"""Feedback on messages, as Dify keeps it: an end user rates a message it wrote like or dislike
(with an optional comment), changes the rating, or takes it back with a null rating."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tusk.db.models import App, Message, MessageFeedback
from tusk.db.models.feedback import RATINGS
from tusk.errors import InvalidParam


def rating_param(rating: object) -> str | None:
    if rating is None or (isinstance(rating, str) and rating in RATINGS):
        return rating
    raise InvalidParam("rating must be like, dislike or null.", params="rating")


async def _existing(db: AsyncSession, message: Message, source: str) -> MessageFeedback | None:
    query = select(MessageFeedback).where(
        MessageFeedback.message_id == message.id, MessageFeedback.from_source == source
    )
    return (await db.execute(query.with_for_update())).scalar_one_or_none()


async def give_feedback(
    db: AsyncSession,
    message: Message,
    *,
    rating: str | None,
    content: str | None,
    end_user_id: uuid.UUID | None = None,
    account_id: uuid.UUID | None = None,
) -> None:
    """Create, change or (with no rating) remove the speaker's feedback on a message."""
    source = "user" if end_user_id is not None else "admin"
    feedback = await _existing(db, message, source)
    if rating is None:
        if feedback is None:
            raise InvalidParam("rating cannot be None when feedback not exists", params="rating")
        await db.delete(feedback)
    elif feedback is not None:
        feedback.rating, feedback.content = rating, content
        feedback.updated_at = datetime.now(UTC)
    else:
        db.add(
            MessageFeedback(
                workspace_id=message.workspace_id,
                app_id=message.app_id,
                conversation_id=message.conversation_id,
                message_id=message.id,
                rating=rating,
                content=content,
                from_source=source,
                from_end_user_id=end_user_id,
                from_account_id=account_id,
            )
        )
    await db.flush()


async def ratings(
    db: AsyncSession, message_ids: Sequence[uuid.UUID], source: str = "user"
) -> dict[uuid.UUID, str]:
    """The rating of each of these messages that has one from this source."""
    if not message_ids:
        return {}
    query = select(MessageFeedback.message_id, MessageFeedback.rating).where(
        MessageFeedback.message_id.in_(message_ids), MessageFeedback.from_source == source
    )
    return {row.message_id: row.rating for row in (await db.execute(query)).all()}


async def feedbacks_of(
    db: AsyncSession, app: App, message_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[MessageFeedback]]:
    """Every feedback (users' and the console's) on these messages."""
    found: dict[uuid.UUID, list[MessageFeedback]] = {}
    if not message_ids:
        return found
    query = select(MessageFeedback).where(
        MessageFeedback.app_id == app.id, MessageFeedback.message_id.in_(message_ids)
    )
    for row in (await db.execute(query.order_by(MessageFeedback.created_at))).scalars():
        found.setdefault(row.message_id, []).append(row)
    return found


async def app_feedbacks(
    db: AsyncSession, app: App, *, page: int = 1, limit: int = 20
) -> list[MessageFeedback]:
    """The app's feedback, newest first, a page at a time (Dify allows up to 101 a page)."""
    if page < 1:
        raise InvalidParam("page must be 1 or more.", params="page")
    if not 1 <= limit <= 101:
        raise InvalidParam("limit must be between 1 and 101.", params="limit")
    query = (
        select(MessageFeedback)
        .where(MessageFeedback.app_id == app.id, MessageFeedback.workspace_id == app.workspace_id)
        .order_by(MessageFeedback.created_at.desc(), MessageFeedback.id)
        .offset((page - 1) * limit)
        .limit(limit)
    )
    return list((await db.execute(query)).scalars())
