"""Agent-chat apps: a chat app (Dify's `model_config`, the prompt built as chat apps build it)
whose `agent_mode` gives the model tools. Each turn runs an agent strategy (`function_call`, or
`react`, which Dify also calls `cot`) for at most `max_iteration` tool rounds.

A turn streams Dify's chunks: `agent_thought` each time a round begins or changes (its thought,
the tools it called with their inputs, then their observations), `agent_message` for the pieces of
the answer, then `message_end` (or `error`). The message is marked `agent_based`; its rounds are
kept in message_agent_thoughts. As in chat apps, the turn runs in a task of its own, registered
under its task id so a stop from any API process ends it; what was produced is kept."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tusk.agent import Agent, AgentSetup, AnswerPiece, ThoughtChanged, make_agent
from tusk.agent.records import save_steps
from tusk.agent.strategies import DEFAULT_MAX_ITERATIONS, strategy_name
from tusk.agent.toolbox import AgentTool, ToolRef, load_tool, tool_context, unique
from tusk.apps import naming
from tusk.apps.cache import AppCache
from tusk.apps.chat_wire import ChatIds, error_chunk, message_end
from tusk.apps.conversations import (
    ConversationHistory,
    Outcome,
    finish_message,
)
from tusk.apps.easy_app import HISTORY_TURNS
from tusk.apps.easy_config import AppUnavailable, EasyConfig, Lenient
from tusk.apps.easy_knowledge import retrieve
from tusk.apps.easy_model import app_model_name, open_model
from tusk.apps.message_files import (
    NO_FILES,
    ChatFiles,
    query_with_documents,
    with_image_parts,
)
from tusk.apps.moderation import input_verdict, keyword_rules
from tusk.apps.prompting import PromptInput, build_prompt
from tusk.apps.running import RunningTurn
from tusk.apps.tasks import TaskRegistry
from tusk.apps.turns import TurnRequest, TurnRows, open_turn, turn_ids
from tusk.db.engine import session_of
from tusk.db.models import App, Message
from tusk.errors import TuskError
from tusk.models.prices import price_of
from tusk.models.runtime import ModelRuntime
from tusk.models.types import Message as ChatMessage
from tusk.workflow.nodes.models import request_parameters
from tusk.workflow.runner import WorkflowRunner


class AgentToolEntry(Lenient):
    provider_type: str = "builtin"
    provider_id: str = ""
    provider_name: str = ""
    tool_name: str = ""
    tool_label: str = ""
    tool_parameters: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True


class AgentMode(Lenient):
    enabled: bool = False
    strategy: str = "function_call"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    max_iteration: int = DEFAULT_MAX_ITERATIONS

    def tool_refs(self) -> list[ToolRef]:
        """The enabled tools (entries that are not tools, such as old dataset entries, are
        left out)."""
        refs = []
        for raw in self.tools:
            if not raw.get("tool_name"):
                continue
            entry = AgentToolEntry.model_validate(raw)
            if entry.enabled:
                provider = entry.provider_id or entry.provider_name
                refs.append(
                    ToolRef(
                        entry.provider_type,
                        provider,
                        entry.tool_name,
                        entry.tool_parameters,
                        entry.tool_label,
                    )
                )
        return refs


def agent_mode(document: Mapping[str, Any] | None) -> AgentMode:
    raw = (document or {}).get("agent_mode") or {}
    try:
        mode = AgentMode.model_validate(raw)
    except ValueError:
        raise AppUnavailable("The app's configuration is broken: agent_mode.") from None
    if strategy_name(mode.strategy) is None:
        raise AppUnavailable(
            f"The app's agent strategy {mode.strategy!r} is unknown: use function_call or react."
        )
    return mode


@dataclass(frozen=True)
class AgentDeps:
    sessions: async_sessionmaker[AsyncSession]
    models: ModelRuntime
    tasks: TaskRegistry
    runner: WorkflowRunner  # its resources run the tools; workflow tools run through it
    cache: AppCache | None = None  # the API process's; None reads everything from the database


AgentRequest = TurnRequest


@dataclass(frozen=True)
class Setup:
    app: App
    config: EasyConfig
    mode: AgentMode
    message: Message
    inputs: dict[str, Any]
    query: str
    first_turn: bool
    auto_name: bool
    files: ChatFiles = NO_FILES


async def start_turn(deps: AgentDeps, app: App, request: AgentRequest) -> AgentTurn:
    if app.mode != "agent-chat":
        raise AppUnavailable("Please check if your app mode matches the right API route.")
    opened = await open_turn(deps.sessions, app, request, deps.cache, agent_based=True)
    setup = Setup(
        app,
        opened.config,
        agent_mode(opened.document),
        opened.message,
        opened.inputs,
        request.query,
        opened.first_turn,
        request.auto_generate_name,
        opened.files,
    )
    turn = AgentTurn(deps, setup, turn_ids(app, opened.message), opened.rows)
    turn.start()
    return turn


class AgentTurn(RunningTurn):
    """One running turn of an agent-chat app."""

    def __init__(self, deps: AgentDeps, setup: Setup, ids: ChatIds, rows: TurnRows) -> None:
        background = setup.app.finish_in_background
        super().__init__(deps.tasks, ids, rows, finish_in_background=background)
        self.deps = deps
        self.setup = setup
        self.agent: Agent | None = None
        self.resources: list[dict[str, Any]] = []

    # --- running -------------------------------------------------------------------------

    async def _fail(self, code: str, message: str, status: int) -> None:
        await self._end("error", code, message, status)

    async def _generate(self) -> None:
        setup = self.setup
        preset = input_verdict(keyword_rules(setup.config.sensitive_word_avoidance),
                               setup.inputs, setup.query)  # fmt: skip
        if preset is not None:
            self.answer = preset
            self._put({**self.ids.head("agent_message"), "answer": preset})
            await self._end("normal")
            return
        self.agent = await self._agent()
        if not await self.stoppable(self._drive(self.agent)):
            await self._end("stopped")
            return
        await self._end("normal")

    async def _drive(self, agent: Agent) -> None:
        async for event in agent.events():
            if isinstance(event, AnswerPiece):
                self.answer += event.text
                self._put({**self.ids.head("agent_message"), "answer": event.text})
            elif isinstance(event, ThoughtChanged):
                chunk = {**self.ids.head("agent_thought"), **event.step.event_json()}
                self._put(chunk)

    async def _agent(self) -> Agent:
        setup, deps = self.setup, self.deps
        app = setup.app
        knowledge = await retrieve(
            deps.sessions, deps.models, app, setup.config.dataset_configs, setup.query
        )
        if setup.config.retriever_resource.enabled:
            self.resources = knowledge.resources
        history = await self._history()
        resources = deps.runner.resources
        query = await query_with_documents(resources, app.workspace_id, setup.files, setup.query)
        given = PromptInput("chat", setup.inputs, query, knowledge.context, history)
        prompt = build_prompt(setup.config, given)
        messages = await with_image_parts(resources, app.workspace_id, setup.files, prompt.messages)
        model = await open_model(deps.models, app.workspace_id, app.id, setup.config.model)
        agent_setup = AgentSetup(
            model=model,
            messages=messages,
            tools=await self._tools(),
            price=price_of(deps.models.config.prices, model.full_name),
            parameters=request_parameters(setup.config.model.completion_params),
            max_iterations=setup.mode.max_iteration,
        )
        return make_agent(setup.mode.strategy, agent_setup)

    async def _tools(self) -> list[AgentTool]:
        setup, deps = self.setup, self.deps
        if not setup.mode.enabled:
            return []
        speaker = setup.message.from_end_user_id or setup.message.from_account_id
        base = tool_context(
            setup.app.workspace_id,
            deps.runner.resources,
            user_id=str(speaker or ""),
            app_id=setup.app.id,
            runner=deps.runner,
        )
        tools = []
        async with session_of(deps.sessions) as db:
            for ref in setup.mode.tool_refs():
                try:
                    tools.append(await load_tool(db, deps.models.secret_key, base, ref))
                except TuskError as exc:
                    problem = f"The agent's tool cannot be used: {exc.message}"
                    raise AppUnavailable(problem) from None
        return unique(tools)

    async def _history(self) -> list[ChatMessage]:
        if self.setup.first_turn:
            return []
        message = self.setup.message
        history = ConversationHistory(self.deps.sessions, message.conversation_id, message.id)
        return list(await history.messages(HISTORY_TURNS))

    # --- endings -------------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        usage = dict(self.agent.usage) if self.agent is not None else {}
        return {"usage": usage, "retriever_resources": self.resources}

    def _outcome(self, status: str, error: str | None) -> Outcome:
        usage = self.metadata()["usage"]
        return Outcome(
            answer=self.answer,
            status=status,
            error=error,
            message_tokens=int(usage.get("prompt_tokens") or 0),
            answer_tokens=int(usage.get("completion_tokens") or 0),
            total_price=Decimal(str(usage.get("total_price") or 0)),
            currency=str(usage.get("currency") or "USD"),
            latency=time.perf_counter() - self.started,
            metadata=self.metadata(),
        )

    async def _save_steps(self) -> None:
        if self.agent is None or not self.agent.steps:
            return
        message = self.setup.message
        role, who = (
            ("end_user", message.from_end_user_id)
            if message.from_end_user_id is not None
            else ("account", message.from_account_id)
        )
        async with self.deps.sessions.begin() as db:
            await save_steps(
                db,
                self.agent.steps,
                workspace_id=self.setup.app.workspace_id,
                message_id=message.id,
                created_by_role=role,
                created_by=who,
            )

    async def _end(
        self, status: str, code: str = "", error: str | None = None, http_status: int = 400
    ) -> None:
        if status != "error":
            await self.rows_written()  # raises if the turn could not be recorded: it fails
        if await self.rows_were_written():
            await self._save_steps()
            outcome = self._outcome(status, error)
            await finish_message(self.deps.sessions, self.setup.message, outcome)
        if status == "error":
            self._put(error_chunk(self.ids, error or "", code, http_status))
            return
        self._put({**message_end(self.ids, self.metadata()), "files": self.setup.files.shown})
        if status == "normal" and self.setup.first_turn and self.setup.auto_name:
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
