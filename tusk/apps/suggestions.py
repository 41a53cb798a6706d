"""Questions the user may ask next, written by a model from the end of the conversation (Dify's
`suggested_questions_after_answer`), for `GET /v1/messages/{id}/suggested`."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tusk.apps.easy_config import read_config
from tusk.apps.easy_model import app_model_name, helper_model, quick_answer
from tusk.db.models import App, AppModelConfig, Conversation, Message, Workflow
from tusk.errors import TuskError
from tusk.models.runtime import ModelRuntime
from tusk.models.types import Message as ChatMessage
from tusk.workflow.nodes.prompts import history_text

log = logging.getLogger(__name__)

LAST_TURNS = 3
MAX_HISTORY_CHARS = 12000  # about Dify's 3000 tokens
SUGGEST_PARAMETERS = {"max_tokens": 256, "temperature": 0}
SUGGEST_PROMPT = (
    "{histories}\n\n"
    "Suggest the three questions the user is most likely to ask next, each under 20 characters, "
    "in the same language as the assistant's last reply. Reply with a JSON array of three "
    'strings and nothing else, like ["first", "second", "third"].\n'
)
EASY_MODES = frozenset({"chat", "completion", "agent-chat"})


class SuggestionsDisabled(TuskError):
    code, status = "bad_request", 400


async def _easy_settings(db: AsyncSession, app: App, message: Message) -> tuple[bool, str | None]:
    conversation = await db.get(Conversation, message.conversation_id)
    config_id = (conversation.app_model_config_id if conversation else None) or (
        app.app_model_config_id
    )
    row = await db.get(AppModelConfig, config_id) if config_id else None
    config = read_config(row.config if row else {})
    return config.suggested_questions_after_answer.enabled, app_model_name(config)


async def _workflow_enabled(db: AsyncSession, app: App) -> bool:
    workflow = await db.get(Workflow, app.workflow_id) if app.workflow_id else None
    feature = (workflow.features if workflow else {}).get("suggested_questions_after_answer")
    return isinstance(feature, Mapping) and bool(feature.get("enabled"))


async def _settings(db: AsyncSession, app: App, message: Message) -> tuple[bool, str | None]:
    """Whether the feature is on, and the app's own model (None for chatflows)."""
    if app.mode in EASY_MODES:
        return await _easy_settings(db, app, message)
    if app.mode == "advanced-chat":
        return await _workflow_enabled(db, app), None
    return False, None


async def _last_turns(db: AsyncSession, message: Message) -> list[ChatMessage]:
    rows = await db.execute(
        select(Message.query, Message.answer)
        .where(
            Message.conversation_id == message.conversation_id,
            Message.created_at <= message.created_at,
        )
        .order_by(Message.created_at.desc())
        .limit(LAST_TURNS)
    )
    turns: list[ChatMessage] = []
    for asked, answered in reversed(rows.all()):
        turns += [ChatMessage("user", asked), ChatMessage("assistant", answered)]
    return turns


def questions_in(answer: str) -> list[str]:
    """The first JSON array of strings in the model's answer ([] when there is none)."""
    decoder = json.JSONDecoder()
    start = answer.find("[")
    while start != -1:
        try:
            found: Any = decoder.raw_decode(answer, start)[0]
        except ValueError:
            start = answer.find("[", start + 1)
            continue
        return [q.strip() for q in found if isinstance(q, str) and q.strip()]
    return []


async def suggested_questions(
    sessions: async_sessionmaker[AsyncSession], models: ModelRuntime, app: App, message: Message
) -> list[str]:
    """Up to three next questions after `message` (already checked to belong to the caller).
    Raises SuggestionsDisabled (400 "Suggested Questions Is Disabled.") when the app does not
    offer them; a model that fails gives [] as in Dify."""
    async with sessions() as db:
        enabled, fallback = await _settings(db, app, message)
        if not enabled:
            raise SuggestionsDisabled("Suggested Questions Is Disabled.")
        histories = history_text(await _last_turns(db, message))[-MAX_HISTORY_CHARS:]
    try:
        model = await helper_model(models, app.workspace_id, app.id, fallback)
        answer = await quick_answer(
            model, SUGGEST_PROMPT.format(histories=histories), SUGGEST_PARAMETERS
        )
    except TuskError as exc:
        log.info("no suggested questions for message %s: %s", message.id, exc.message)
        return []
    return questions_in(answer)[:LAST_TURNS]
