"""Conversation names written by a model from the first query, as Dify's auto-naming does: after
the first answer of a conversation, in the background (the answer never waits for it), and on
request through the rename endpoint (`name_for`)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tusk.apps.easy_config import EasyConfig
from tusk.apps.easy_model import app_model_name, helper_model, quick_answer
from tusk.db.models import App, Conversation
from tusk.errors import TuskError
from tusk.models.runtime import ModelRuntime
from tusk.workflow.nodes.prompts import find_json_object

log = logging.getLogger(__name__)

MAX_NAME_CHARS = 75
LONG_QUERY = 2000
KEPT_ENDS = 300
NAME_PARAMETERS = {"max_tokens": 500, "temperature": 1}
NAME_PROMPT = (
    "Write a short title for a conversation that starts with the user message below. The title "
    "names the topic in a few words, in the language of the message, with no quotes and no "
    'final punctuation. Reply with JSON only: {{"title": "<the title>"}}\n\n'
    "User message: {query}\n"
)
_background: set[asyncio.Task[Any]] = set()


def shortened_query(query: str) -> str:
    if len(query) > LONG_QUERY:
        query = query[:KEPT_ENDS] + "...[TRUNCATED]..." + query[-KEPT_ENDS:]
    return query.replace("\n", " ")


def name_from_answer(answer: str, query: str) -> str:
    """The title the model wrote, or the query itself when the answer holds none."""
    found = find_json_object(answer)
    title = found.get("title") if found else None
    name = title.strip() if isinstance(title, str) and title.strip() else query.strip()
    return name[:MAX_NAME_CHARS] + "..." if len(name) > MAX_NAME_CHARS else name


async def generate_name(
    models: ModelRuntime,
    workspace_id: uuid.UUID,
    query: str,
    *,
    app_id: uuid.UUID | None = None,
    fallback_model: str | None = None,
) -> str:
    """A name for a conversation that starts with `query`, by the workspace's default chat model
    (or `fallback_model` when it has none). Model errors are raised (TuskError)."""
    model = await helper_model(models, workspace_id, app_id, fallback_model)
    prompt = NAME_PROMPT.format(query=shortened_query(query))
    return name_from_answer(await quick_answer(model, prompt, NAME_PARAMETERS), query)


async def name_for(
    models: ModelRuntime, app: App, query: str, *, config: EasyConfig | None = None
) -> str:
    """The rename endpoint's auto-generated name; `config` (chat and completion apps) names the
    model that serves when the workspace has no default chat model."""
    fallback = app_model_name(config) if config is not None else None
    return await generate_name(
        models, app.workspace_id, query, app_id=app.id, fallback_model=fallback
    )


async def _name_in_background(
    sessions: async_sessionmaker[AsyncSession],
    models: ModelRuntime,
    conversation_id: uuid.UUID,
    app: App,
    query: str,
    fallback_model: str | None,
) -> None:
    try:
        name = await generate_name(
            models, app.workspace_id, query, app_id=app.id, fallback_model=fallback_model
        )
    except TuskError as exc:
        log.info("conversation %s keeps its name: %s", conversation_id, exc.message)
        return
    async with sessions.begin() as db:
        await db.execute(
            update(Conversation).where(Conversation.id == conversation_id).values(name=name)
        )


def name_later(
    sessions: async_sessionmaker[AsyncSession],
    models: ModelRuntime,
    conversation_id: uuid.UUID,
    app: App,
    query: str,
    fallback_model: str | None,
) -> None:
    """Name the conversation in the background; failures leave its name as it is."""
    task = asyncio.create_task(
        _name_in_background(sessions, models, conversation_id, app, query, fallback_model)
    )
    _background.add(task)
    task.add_done_callback(_background.discard)
