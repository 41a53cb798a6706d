"""Conversations and messages of chat apps, as Dify records them. A conversation belongs to one
end user (or console account) of one app; another user cannot see it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tusk.db.driver import execute_alone
from tusk.db.models import App, Conversation, Message
from tusk.errors import InvalidParam, NotFound
from tusk.models.types import Message as ChatMessage

NEW_NAME = "New conversation"


@dataclass(frozen=True)
class Speaker:
    """Who talks to the app: an end user of the Service API or a console account."""

    end_user_id: uuid.UUID | None = None
    account_id: uuid.UUID | None = None
    source: str = "api"  # Dify's from_source: "api" or "console"


def _owned(query: Any, speaker: Speaker) -> Any:
    if speaker.end_user_id is not None:
        return query.where(Conversation.from_end_user_id == speaker.end_user_id)
    return query.where(Conversation.from_account_id == speaker.account_id)


async def find_conversation(
    db: AsyncSession, app: App, speaker: Speaker, conversation_id: Any, *, lock: bool = False
) -> Conversation:
    try:
        wanted = uuid.UUID(str(conversation_id))
    except ValueError:
        raise NotFound("Conversation Not Exists.") from None
    query = _owned(
        select(Conversation).where(
            Conversation.id == wanted,
            Conversation.app_id == app.id,
            Conversation.workspace_id == app.workspace_id,
            Conversation.is_deleted.is_(False),
        ),
        speaker,
    )
    found = (await db.execute(query.with_for_update() if lock else query)).scalar_one_or_none()
    if not isinstance(found, Conversation):
        raise NotFound("Conversation Not Exists.")
    return found


async def open_conversation(
    db: AsyncSession,
    app: App,
    speaker: Speaker,
    conversation_id: str | None,
    inputs: dict[str, Any],
) -> Conversation:
    """The conversation named (locked for this turn), or a new one with these inputs."""
    if conversation_id:
        return await find_conversation(db, app, speaker, conversation_id, lock=True)
    conversation = new_conversation(app, speaker, inputs)
    db.add(conversation)
    await db.flush()
    return conversation


def new_conversation(app: App, speaker: Speaker, inputs: dict[str, Any]) -> Conversation:
    """A new conversation's row, with its id, not yet added to a session."""
    return Conversation(
        id=uuid.uuid4(),
        workspace_id=app.workspace_id,
        app_id=app.id,
        app_model_config_id=app.app_model_config_id,
        mode=app.mode,
        name=NEW_NAME,
        inputs=inputs,
        from_source=speaker.source,
        from_end_user_id=speaker.end_user_id,
        from_account_id=speaker.account_id,
    )


def message_row(
    conversation: Conversation,
    speaker: Speaker,
    *,
    query: str,
    inputs: dict[str, Any],
    agent_based: bool = False,
) -> Message:
    """A new message's row in this conversation, not yet added to a session."""
    return Message(
        workspace_id=conversation.workspace_id,
        app_id=conversation.app_id,
        conversation_id=conversation.id,
        inputs=inputs,
        query=query,
        from_source=speaker.source,
        from_end_user_id=speaker.end_user_id,
        from_account_id=speaker.account_id,
        agent_based=agent_based,
    )


@dataclass
class Outcome:
    """How a turn ended, for its message row."""

    answer: str
    status: str = "normal"  # normal, error, stopped
    error: str | None = None
    message_tokens: int = 0
    answer_tokens: int = 0
    total_price: Decimal = Decimal(0)
    currency: str = "USD"
    latency: float = 0.0
    metadata: dict[str, Any] | None = None
    workflow_run_id: uuid.UUID | None = None


async def finish_message(
    sessions: async_sessionmaker[AsyncSession],
    message: Message,
    outcome: Outcome,
    *,
    variables: dict[str, Any] | None = None,
) -> None:
    """Store the answer and count the turn (and keep a chatflow's conversation variables), in
    one statement (the conversation is counted only if the message was there to answer),
    through the driver: it ends every turn."""
    now = datetime.now(UTC)
    metadata = json.dumps(outcome.metadata or {})
    answer = (outcome.answer, outcome.status, outcome.error, outcome.message_tokens,
              outcome.answer_tokens, outcome.message_tokens + outcome.answer_tokens,
              outcome.total_price, outcome.currency, outcome.latency, metadata,
              outcome.workflow_run_id, now, message.id)  # fmt: skip
    if variables is None:
        await execute_alone(sessions, _FINISH_MESSAGE, (*answer, now))
    else:
        await execute_alone(
            sessions, _FINISH_MESSAGE_AND_VARIABLES, (*answer, now, json.dumps(variables))
        )


_ANSWERED = """
    WITH answered AS (
        UPDATE messages SET answer = %s, status = %s, error = %s, message_tokens = %s,
            answer_tokens = %s, total_tokens = %s, total_price = %s, currency = %s,
            provider_response_latency = %s, message_metadata = %s::jsonb, workflow_run_id = %s,
            updated_at = %s
        WHERE id = %s RETURNING conversation_id)
    UPDATE conversations SET dialogue_count = dialogue_count + 1, updated_at = %s"""
_OF_ANSWERED = " WHERE id = (SELECT conversation_id FROM answered)"
_FINISH_MESSAGE = _ANSWERED + _OF_ANSWERED
_FINISH_MESSAGE_AND_VARIABLES = _ANSWERED + ", variables = %s::jsonb" + _OF_ANSWERED


class ConversationHistory:
    """The conversation before the current message, as chat messages for model memory."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        conversation_id: uuid.UUID,
        before: uuid.UUID | None,
    ) -> None:
        self.sessions = sessions
        self.conversation_id = conversation_id
        self.before = before

    async def messages(self, window: int | None) -> Sequence[ChatMessage]:
        query = (
            select(Message.query, Message.answer)
            .where(
                Message.conversation_id == self.conversation_id,
                Message.status == "normal",
                Message.answer != "",
            )
            .order_by(Message.created_at.desc())
        )
        if self.before is not None:
            query = query.where(Message.id != self.before)
        if window:
            query = query.limit(window)
        async with self.sessions() as db:
            rows = (await db.execute(query)).all()
        turns: list[ChatMessage] = []
        for asked, answered in reversed(rows):
            turns += [ChatMessage(role="user", content=asked),
                      ChatMessage(role="assistant", content=answered)]  # fmt: skip
        return turns


def query_param(query: Any) -> str:
    if not isinstance(query, str) or not query.strip():
        raise InvalidParam("query is required", params="query")
    return query.replace("\x00", "")
