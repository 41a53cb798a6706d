"""Chat and completion apps (Dify's "easy" apps, configured by a `model_config` document): each
request is one generation — input moderation, knowledge, the prompt, one streamed model call,
output moderation — recorded as a message of a conversation (completion apps: a new conversation
per request, as Dify).

The generation runs in a task of its own and hands its chunks (Dify's shapes, in Dify's order:
`message`... then `message_end`, or `error`) to whoever reads them. It is registered under its
task id, so a stop request from any API process ends the model call; a reader that goes away
(a client that disconnects) stops it too, unless the app finishes in the background. A stopped
message keeps what was produced, with status `stopped`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tusk.apps import annotations as annotation_reply
from tusk.apps import naming
from tusk.apps.cache import AppCache
from tusk.apps.chat_wire import ChatIds, error_chunk, message_chunk, message_end
from tusk.apps.conversations import (
    ConversationHistory,
    Outcome,
    finish_message,
)
from tusk.apps.easy_config import AppUnavailable, EasyConfig
from tusk.apps.easy_knowledge import Knowledge, retrieve
from tusk.apps.easy_model import (
    app_model_name,
    estimated_usage,
    open_model,
    stream_reply,
    usage_of,
)
from tusk.apps.message_files import (
    NO_FILES,
    ChatFiles,
    query_with_documents,
    with_image_parts,
)
from tusk.apps.moderation import input_verdict, keyword_rules, output_verdict
from tusk.apps.prompting import Prompt, PromptInput, build_prompt
from tusk.apps.running import RunningTurn
from tusk.apps.tasks import TaskRegistry
from tusk.apps.turns import TurnRequest, TurnRows, open_turn, turn_ids
from tusk.db.models import App, Message
from tusk.errors import TuskError
from tusk.models.base import ChatModel
from tusk.models.runtime import ModelRuntime
from tusk.models.types import Message as ChatMessage
from tusk.workflow.context import Resources
from tusk.workflow.nodes.models import Reply, request_parameters

EASY_MODES = frozenset({"chat", "completion"})
HISTORY_TURNS = 500  # Dify reads at most this many earlier messages into memory


class NotCompletionApp(TuskError):
    code, status = "not_completion_app", 400


@dataclass(frozen=True)
class EasyDeps:
    sessions: async_sessionmaker[AsyncSession]
    models: ModelRuntime
    tasks: TaskRegistry
    resources: Resources | None = None  # reads the files sent with a message
    cache: AppCache | None = None  # the API process's; None reads everything from the database


EasyRequest = TurnRequest


@dataclass(frozen=True)
class Setup:
    """What a generation starts from, settled before it runs."""

    app: App
    config: EasyConfig
    message: Message
    inputs: dict[str, Any]
    query: str
    first_turn: bool
    auto_name: bool
    files: ChatFiles = NO_FILES


async def start_generation(deps: EasyDeps, app: App, request: EasyRequest) -> Generation:
    if app.mode not in EASY_MODES:
        raise AppUnavailable("Please check if your app mode matches the right API route.")
    opened = await open_turn(deps.sessions, app, request, deps.cache)
    setup = Setup(
        app,
        opened.config,
        opened.message,
        opened.inputs,
        request.query,
        opened.first_turn,
        request.auto_generate_name,
        opened.files,
    )
    generation = Generation(deps, setup, turn_ids(app, opened.message), opened.rows)
    generation.start()
    return generation


class Generation(RunningTurn):
    """One running generation of a chat or completion app."""

    def __init__(self, deps: EasyDeps, setup: Setup, ids: ChatIds, rows: TurnRows) -> None:
        background = setup.app.finish_in_background
        super().__init__(deps.tasks, ids, rows, finish_in_background=background)
        self.deps = deps
        self.setup = setup
        self.rules = keyword_rules(setup.config.sensitive_word_avoidance)
        self.reply = Reply("")
        self.resources: list[dict[str, Any]] = []
        self.annotation_reply: dict[str, Any] | None = None  # Dify's, when an annotation answered
        self.usage: dict[str, Any] = usage_of(deps.models, self.reply)
        self._replacement: str | None = None

    # --- running -------------------------------------------------------------------------

    async def _generate(self) -> None:
        setup = self.setup
        preset = input_verdict(self.rules, setup.inputs, setup.query)
        if preset is not None:
            self.answer = preset
            self._put(message_chunk(self.ids, preset))
            await self._end("normal")
            return
        reply = await annotation_reply.reply_from_annotations(
            self.deps.sessions, self.deps.models, setup.app, setup.message, setup.query,
            self.deps.cache, self.rows_written,
        )  # fmt: skip
        if reply is not None:
            self.answer, self.annotation_reply = reply.answer, reply.metadata
            self._put(message_chunk(self.ids, reply.answer))
            await self._end("normal")
            return
        knowledge = await self._knowledge()
        app, resources = setup.app, self.deps.resources
        query = await query_with_documents(resources, app.workspace_id, setup.files, setup.query)
        prompt = build_prompt(
            setup.config,
            PromptInput(
                setup.app.mode, setup.inputs, query, knowledge.context, await self._history()
            ),
        )
        messages = await with_image_parts(resources, app.workspace_id, setup.files, prompt.messages)
        model = await open_model(self.deps.models, app.workspace_id, app.id, setup.config.model)
        if self.stopped:
            await self._end("stopped")
            return
        await self._stream(model, Prompt(messages, prompt.stops))

    async def _knowledge(self) -> Knowledge:
        setup = self.setup
        query = setup.query
        variable = setup.config.dataset_query_variable
        if setup.app.mode == "completion" and variable:
            query = str(setup.inputs.get(variable) or "")
        knowledge = await retrieve(
            self.deps.sessions, self.deps.models, setup.app, setup.config.dataset_configs, query
        )
        if setup.config.retriever_resource.enabled:
            self.resources = knowledge.resources
        return knowledge

    async def _history(self) -> list[ChatMessage]:
        message = self.setup.message
        if self.setup.app.mode != "chat" or self.setup.first_turn:
            return []
        history = ConversationHistory(self.deps.sessions, message.conversation_id, message.id)
        return list(await history.messages(HISTORY_TURNS))

    async def _stream(self, model: ChatModel, prompt: Prompt) -> None:
        parameters = request_parameters(self.setup.config.model.completion_params)
        if prompt.stops and "stop" not in parameters:
            parameters["stop"] = prompt.stops
        self.reply = Reply(model.full_name)
        call = stream_reply(model, prompt.messages, parameters, self.reply, self._on_text)
        if not await self.stoppable(call):  # stopped, or cut short by output moderation
            self.reply.usage = estimated_usage(prompt.messages, self.reply.text)
            await self._end("normal" if self._replacement is not None else "stopped")
            return
        await self._end("normal")

    def _on_text(self, text: str) -> None:
        if self._replacement is not None:
            return
        replacement = output_verdict(self.rules, self.answer + text)
        if replacement is None:
            self.answer += text
            self._put(message_chunk(self.ids, text))
            return
        self._replacement = self.answer = replacement
        replace = {**self.ids.head("message_replace"), "answer": replacement}
        del replace["id"]
        self._put({**replace, "reason": "output_moderation"})
        self.cut_work()

    # --- endings -------------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        reply = {"annotation_reply": self.annotation_reply} if self.annotation_reply else {}
        return {**reply, "usage": self.usage, "retriever_resources": self.resources}

    def _outcome(self, status: str, error: str | None = None) -> Outcome:
        latency = time.perf_counter() - self.started
        self.usage = {**usage_of(self.deps.models, self.reply), "latency": round(latency, 3)}
        return Outcome(
            answer=self.answer,
            status=status,
            error=error,
            message_tokens=self.reply.usage.prompt_tokens,
            answer_tokens=self.reply.usage.completion_tokens,
            total_price=Decimal(str(self.usage["total_price"])),
            currency=str(self.usage["currency"]),
            latency=latency,
            metadata=self.metadata(),
        )

    async def _end(self, status: str) -> None:
        await self.rows_written()
        await finish_message(self.deps.sessions, self.setup.message, self._outcome(status))
        self._put({**message_end(self.ids, self.metadata()), "files": self.setup.files.shown})
        if status == "normal" and self.setup.first_turn and self.setup.auto_name:
            self._name_conversation()

    async def _fail(self, code: str, message: str, status: int) -> None:
        if await self.rows_were_written():
            outcome = self._outcome("error", message)
            await finish_message(self.deps.sessions, self.setup.message, outcome)
        self._put(error_chunk(self.ids, message, code, status))

    def _name_conversation(self) -> None:
        setup = self.setup
        naming.name_later(
            self.deps.sessions,
            self.deps.models,
            setup.message.conversation_id,
            setup.app,
            setup.query,
            app_model_name(setup.config),
        )

    # --- reading -------------------------------------------------------------------------

    def _put(self, chunk: dict[str, Any]) -> None:
        if self.ids.mode == "completion":  # completion chunks carry no conversation
            chunk.pop("conversation_id", None)
        super()._put(chunk)

    def _blocking_body(self) -> dict[str, Any]:
        body = super()._blocking_body()
        if self.ids.mode == "completion":
            del body["conversation_id"]
        return body
