"""The start of a turn of an app configured by a `model_config` document (chat, completion,
agent-chat): the request, its conversation and its message, written in one transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tusk.apps.cache import AppCache
from tusk.apps.chat_wire import ChatIds
from tusk.apps.conversations import (
    Speaker,
    commit_without_waiting_for_disk,
    new_message,
    open_conversation,
)
from tusk.apps.easy_config import AppUnavailable, EasyConfig, form_variables, read_config
from tusk.apps.message_files import ChatFiles, file_rules, record_files, request_files
from tusk.db.models import App, AppModelConfig, Message
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
class OpenedTurn:
    """What a turn starts from, settled before it runs."""

    document: dict[str, Any]  # the model config the conversation runs with
    config: EasyConfig
    message: Message
    inputs: dict[str, Any]
    first_turn: bool  # a chat's new conversation (completion requests never have one)
    files: ChatFiles


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


async def open_turn(
    db: AsyncSession,
    app: App,
    request: TurnRequest,
    cache: AppCache | None = None,
    *,
    agent_based: bool = False,
) -> OpenedTurn:
    """The conversation (an existing one keeps its inputs and the config it started with; a
    completion request always starts its own) and the message of this turn."""
    continuing = bool(request.conversation_id) and app.mode != "completion"
    await commit_without_waiting_for_disk(db)
    if continuing:
        conversation = await open_conversation(
            db, app, request.speaker, request.conversation_id, {}
        )
        document = await config_document(db, app, conversation.app_model_config_id, cache)
        config = read_config(document)
        inputs = dict(conversation.inputs)
    else:
        document = await config_document(db, app, app.app_model_config_id, cache)
        config = read_config(document)
        resolve = UploadResolver(db, app.workspace_id)
        inputs = await check_inputs(form_variables(config), request.inputs, resolve)
        conversation = await open_conversation(db, app, request.speaker, None, inputs)
    rules = file_rules(document)
    files = await request_files(db, app.workspace_id, rules, request.files)
    message = await new_message(
        db,
        conversation,
        request.speaker,
        query=request.query,
        inputs=inputs,
        new_conversation=not continuing,
        agent_based=agent_based,
    )
    shown = await record_files(db, message, files)
    chat_files = ChatFiles(files, rules.detail if rules else "high", shown)
    first = not continuing and app.mode != "completion"
    return OpenedTurn(document, config, message, inputs, first, chat_files)


def turn_ids(app: App, message: Message) -> ChatIds:
    """The ids of a new turn's chunks; its task id is new."""
    return ChatIds(
        task_id=str(uuid.uuid4()),
        message_id=str(message.id),
        conversation_id=str(message.conversation_id),
        created_at=int(message.created_at.timestamp()),
        mode=app.mode,
    )
