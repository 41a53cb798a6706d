"""The start of a turn of an app configured by a `model_config` document (chat, completion,
agent-chat): the request is checked and the turn settled (its conversation, its message, their
ids), then its rows are written in one transaction in the background, while the model is called
(chatflow turns write theirs the same way while their run starts). The model call does not wait
for that write; the turn's chunks, which tell those ids, and its end wait for it. The write
itself waits for its go (`TurnRows.go`), given once the model's request is on the wire or
as soon as something needs the rows: in one process's one thread, a write started at once would
take turns with the request it should not delay."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tusk.apps.cache import AppCache
from tusk.apps.chat_wire import ChatIds
from tusk.apps.conversations import (
    Speaker,
    find_conversation,
    message_row,
    new_conversation,
)
from tusk.apps.easy_config import AppUnavailable, EasyConfig, form_variables, read_config
from tusk.apps.message_files import ChatFiles, file_rows, file_rules, request_files
from tusk.db.driver import driver_transaction, execute, execute_alone, inserts, not_waiting_for_disk
from tusk.db.engine import session_of
from tusk.db.models import App, AppModelConfig, Conversation, Message
from tusk.db.models.message_files import MessageFile
from tusk.workflow.files import UploadResolver
from tusk.workflow.inputs import check_inputs


@dataclass
class TurnRequest:
    """A message sent to a chat, completion or agent-chat app."""

    query: str
    inputs: Any
    speaker: Speaker
    conversation_id: str | None = None
    auto_generate_name: bool = True
    files: Any = None  # Dify's file mappings


@dataclass(frozen=True)
class TurnRows:
    """The background write of a turn's rows."""

    task: asyncio.Task[None]  # raises if the write failed
    go: asyncio.Event  # set: the write may start


@dataclass(frozen=True)
class OpenedTurn:
    """What a turn starts from, settled before it runs."""

    document: dict[str, Any]  # the model config the conversation runs with
    config: EasyConfig
    message: Message
    inputs: dict[str, Any]
    first_turn: bool  # a chat's new conversation (completion requests never have one)
    files: ChatFiles
    rows: TurnRows


async def config_document(
    db: AsyncSession, app: App, config_id: uuid.UUID | None, cache: AppCache | None = None
) -> dict[str, Any]:
    row: AppModelConfig | None = None
    if config_id is not None and cache is not None:
        row = await cache.model_config(db, config_id)
    elif config_id is not None:
        row = await db.get(AppModelConfig, config_id)
    if row is None or row.app_id != app.id:
        raise AppUnavailable(
            "The app has no model configuration yet: save one in the console "
            "(POST /console/api/apps/{app_id}/model-config)."
        )
    return dict(row.config or {})


def _read(
    document: dict[str, Any], config_id: uuid.UUID | None, cache: AppCache | None
) -> EasyConfig:
    if cache is None or config_id is None:
        return read_config(document)
    return cache.easy_config(config_id, document)


async def open_turn(
    sessions: async_sessionmaker[AsyncSession],
    app: App,
    request: TurnRequest,
    cache: AppCache | None = None,
    *,
    agent_based: bool = False,
) -> OpenedTurn:
    """The conversation (an existing one keeps its inputs and the config it started with; a
    completion request always starts its own) and the message of this turn. Bad input raises
    here, before anything is written."""
    continuing = bool(request.conversation_id) and app.mode != "completion"
    # Reads only (no commit): with the app's config cached, a new conversation takes no
    # connection at all.
    async with session_of(sessions) as db:
        if continuing:
            conversation = await find_conversation(
                db, app, request.speaker, request.conversation_id
            )
            config_id = conversation.app_model_config_id
            document = await config_document(db, app, config_id, cache)
            config = _read(document, config_id, cache)
            inputs = dict(conversation.inputs)
        else:
            document = await config_document(db, app, app.app_model_config_id, cache)
            config = _read(document, app.app_model_config_id, cache)
            resolve = UploadResolver(db, app.workspace_id)
            inputs = await check_inputs(form_variables(config), request.inputs, resolve)
            conversation = new_conversation(app, request.speaker, inputs)
        rules = file_rules(document)
        files = await request_files(db, app.workspace_id, rules, request.files)
    message = new_turn_message(
        conversation, request.speaker, query=request.query, inputs=inputs, agent_based=agent_based
    )
    message_files, shown = file_rows(message, files)
    started = None if continuing else conversation
    go = asyncio.Event()
    recorded = asyncio.create_task(record_turn(sessions, started, message, message_files, after=go))
    chat_files = ChatFiles(files, rules.detail if rules else "high", shown)
    first = not continuing and app.mode != "completion"
    return OpenedTurn(document, config, message, inputs, first, chat_files, TurnRows(recorded, go))


def new_turn_message(
    conversation: Conversation,
    speaker: Speaker,
    *,
    query: str,
    inputs: dict[str, Any],
    agent_based: bool = False,
) -> Message:
    """A turn's message, with the id and time its chunks tell before its row is written."""
    message = message_row(
        conversation, speaker, query=query, inputs=inputs, agent_based=agent_based
    )
    message.id, message.created_at = uuid.uuid4(), datetime.now(UTC)
    return message


async def written(recorded: asyncio.Task[None]) -> bool:
    """Wait for a turn's rows (without cutting their write short); False if it failed."""
    try:
        await asyncio.shield(recorded)
    except Exception:  # reported by the turn's failure
        return False
    return True


async def record_turn(
    sessions: async_sessionmaker[AsyncSession],
    started: Conversation | None,
    message: Message,
    files: list[MessageFile],
    *,
    after: asyncio.Event | None = None,
) -> None:
    """Write a turn's rows: the conversation it starts, or else the lock on the one it continues
    (turns of one conversation are threaded one after another), its message and its files.
    The message has its id and time already (`new_turn_message`). With `after`, once it is set."""
    if after is not None:
        await after.wait()
    # Through the driver, in one statement for a new conversation: under load, every round
    # trip of this write waits its turn on the event loop, and the first token waits for it.
    if started is not None:
        statement, values = inserts([started, message, *files])
        await execute_alone(sessions, not_waiting_for_disk(statement), values)
        return
    async with driver_transaction(sessions, wait_for_disk=False) as db:
        await db.execute(_LOCK_CONVERSATION, (message.conversation_id,))
        last = await (await db.execute(_LAST_MESSAGE, (message.conversation_id,))).fetchone()
        message.parent_message_id = last[0] if last else None
        statement, values = inserts([message, *files])
        await execute(db, statement, values)


_LOCK_CONVERSATION = "SELECT id FROM conversations WHERE id = %s FOR UPDATE"
_LAST_MESSAGE = (
    "SELECT id FROM messages WHERE conversation_id = %s ORDER BY created_at DESC LIMIT 1"
)


def turn_ids(app: App, message: Message) -> ChatIds:
    """The ids of a new turn's chunks; its task id is new."""
    return ChatIds(
        task_id=str(uuid.uuid4()),
        message_id=str(message.id),
        conversation_id=str(message.conversation_id),
        created_at=int(message.created_at.timestamp()),
        mode=app.mode,
    )
