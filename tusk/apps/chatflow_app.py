"""Chatflow (`advanced-chat`) apps: each turn of a conversation runs the workflow with the query,
the conversation's history and its conversation variables; Answer nodes stream into the chat.

The stream is Dify's: workflow events interleaved with `message` chunks, then `message_end`,
then `workflow_finished` (and `error` after a failed run). The message row is written before the
run starts and completed, with the answer, usage and status, when it ends."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tusk.apps.chat_wire import (
    ChatIds,
    blocking_body,
    error_chunk,
    message_chunk,
    message_end,
    workflow_chunk,
)
from tusk.apps.conversations import (
    ConversationHistory,
    Outcome,
    Speaker,
    find_conversation,
    finish_message,
    new_conversation,
)
from tusk.apps.message_files import file_rows, file_rules, request_files
from tusk.apps.running import INTERNAL_ERROR
from tusk.apps.tasks import TaskRegistry
from tusk.apps.turns import new_turn_message, record_turn, written
from tusk.apps.workflow_app import pick_workflow, start_form
from tusk.db.engine import session_of
from tusk.db.models import App, Message, Workflow
from tusk.errors import TuskError
from tusk.workflow.events import Event, NodeFinished, TextChunk, WorkflowFinished
from tusk.workflow.files import UploadResolver
from tusk.workflow.inputs import check_inputs
from tusk.workflow.nodes.models import add_usage, empty_usage
from tusk.workflow.runner import RunHandle, RunRequest, WorkflowRunner
from tusk.workflow.variables import CONVERSATION

_draining: set[asyncio.Task[None]] = set()


def _in_background(work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.create_task(work)
    _draining.add(task)
    task.add_done_callback(_draining.discard)


class NotChatApp(TuskError):
    code, status = "not_chat_app", 400


@dataclass
class ChatRequest:
    query: str
    inputs: dict[str, Any]
    user_id: str  # sys.user_id
    speaker: Speaker
    conversation_id: str | None = None
    files: Any = None
    version: uuid.UUID | None = None
    draft: bool = False
    created_by_role: str = "end_user"
    created_by: uuid.UUID | None = None


def initial_variables(workflow: Workflow) -> dict[str, Any]:
    return {
        str(v.get("name")): v.get("value")
        for v in workflow.conversation_variables or []
        if isinstance(v, Mapping)
    }


@dataclass
class Turn:
    """One running turn: its ids, and its chunks in Dify's order."""

    ids: ChatIds
    handle: RunHandle
    message: Message
    sessions: async_sessionmaker[AsyncSession]
    tasks: TaskRegistry
    recorded: asyncio.Task[None]  # the write of the turn's rows (tusk.apps.turns.record_turn)
    finish_in_background: bool = False  # a caller that goes away does not stop the run
    started: float = field(default_factory=time.perf_counter)
    answer: list[str] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=empty_usage)

    async def chunks(self) -> AsyncGenerator[dict[str, Any]]:
        run_id = str(self.handle.run_id)
        finished: WorkflowFinished | None = None
        try:
            if not await written(self.recorded):  # the turn cannot be kept: it ends here
                self.tasks.stop_here(self.ids.task_id)
                yield error_chunk(self.ids, INTERNAL_ERROR, "internal_server_error", 500)
                return
            async for event in self.handle.events():
                self._note(event)
                if isinstance(event, TextChunk):
                    yield message_chunk(self.ids, event.text, list(event.selector))
                elif isinstance(event, WorkflowFinished):
                    finished = event
                    await self._finish(event)
                    if event.run.status != "failed":
                        yield message_end(self.ids, self.metadata())
                    yield workflow_chunk(self.ids, run_id, event)
                else:
                    yield workflow_chunk(self.ids, run_id, event)
        finally:
            if finished is None:
                # The caller went away before the end: stop the run (as a chat app stops its
                # generation) unless the app finishes in the background, and record the turn
                # once the run has ended, in a task of its own (this one is being cancelled).
                if not self.finish_in_background:
                    self.tasks.stop_here(self.ids.task_id)
                _in_background(self._drain())
            else:
                self.tasks.unregister(self.ids.task_id)

    async def _drain(self) -> None:
        try:
            async for event in self.handle.events():
                self._note(event)
                if isinstance(event, WorkflowFinished):
                    await self._finish(event)
                    return
            await self._finish(None)
        finally:
            self.tasks.unregister(self.ids.task_id)

    def _note(self, event: Event) -> None:
        if isinstance(event, TextChunk):
            self.answer.append(event.text)
        elif isinstance(event, NodeFinished) and isinstance(
            (event.node.outputs or {}).get("usage"), Mapping
        ):
            self.usage = add_usage(self.usage, event.node.outputs["usage"])  # type: ignore[index]

    def metadata(self) -> dict[str, Any]:
        return {"usage": self.usage, "retriever_resources": []}

    async def _finish(self, finished: WorkflowFinished | None) -> None:
        state = finished.run if finished is not None else None
        status = {"failed": "error", "stopped": "stopped"}.get(state.status if state else "", "")
        outcome = Outcome(
            answer="".join(self.answer),
            status=status or ("normal" if state else "stopped"),
            error=state.error if state else None,
            message_tokens=int(self.usage.get("prompt_tokens") or 0),
            answer_tokens=int(self.usage.get("completion_tokens") or 0),
            total_price=Decimal(str(self.usage.get("total_price") or 0)),
            currency=str(self.usage.get("currency") or "USD"),
            latency=time.perf_counter() - self.started,
            metadata=self.metadata(),
            workflow_run_id=self.handle.run_id,
        )
        variables = None
        if state is not None and self.handle.pool is not None:
            variables = dict(self.handle.pool.outputs(CONVERSATION))
        await finish_message(self.sessions, self.message, outcome, variables=variables)

    async def blocking(self) -> dict[str, Any]:
        failure: dict[str, Any] | None = None
        async for chunk in self.chunks():
            if chunk["event"] == "error":
                failure = chunk
        if failure is not None:
            raise TurnFailed(failure["message"])
        return blocking_body(self.ids, "".join(self.answer), self.metadata())


class TurnFailed(TuskError):
    code, status = "completion_request_error", 400


async def start_turn(
    sessions: async_sessionmaker[AsyncSession],
    runner: WorkflowRunner,
    tasks: TaskRegistry,
    app: App,
    request: ChatRequest,
) -> Turn:
    if app.mode != "advanced-chat":
        raise NotChatApp("Please check if your app mode matches the right API route.")
    async with session_of(sessions) as db:  # reads; the turn's rows are written as it starts
        workflow = await pick_workflow(
            db, app, version=request.version, draft=request.draft, runner=runner
        )
        plan = runner.plan(app, workflow)
        resolve = UploadResolver(db, app.workspace_id)
        form: Sequence[Any] = start_form(plan)
        if request.conversation_id:
            conversation = await find_conversation(
                db, app, request.speaker, request.conversation_id
            )
            inputs = dict(conversation.inputs)
        else:
            inputs = await check_inputs(form, request.inputs, resolve)
            conversation = new_conversation(app, request.speaker, inputs)
        # Checked against the workflow's `features.file_upload`, as chat apps' files are
        # against their model config's.
        rules = file_rules(workflow.features)
        files = await request_files(db, app.workspace_id, rules, request.files)
    message = new_turn_message(conversation, request.speaker, query=request.query, inputs=inputs)
    started = None if request.conversation_id else conversation
    user_files, _ = file_rows(message, files)  # the user's files, kept with the message
    recorded = asyncio.create_task(record_turn(sessions, started, message, user_files))
    variables = {**initial_variables(workflow), **(conversation.variables or {})}
    dialogue_count = (conversation.dialogue_count or 0) + 1  # a new one has no row yet
    run = RunRequest(
        app=app,
        workflow=workflow,
        inputs=inputs,
        user_id=request.user_id,
        created_by_role=request.created_by_role,
        created_by=request.created_by,
        triggered_from="debugging" if request.draft else "app-run",
        system={
            "query": request.query,
            "files": files,
            "conversation_id": str(conversation.id),
            "dialogue_count": dialogue_count,
        },
        conversation=variables,
        conversation_id=conversation.id,
        history=ConversationHistory(sessions, conversation.id, message.id),
        creator={
            "id": str(request.created_by) if request.created_by else None,
            "user": request.user_id,
        },
    )
    handle = runner.start(run)
    ids = ChatIds(
        task_id=str(handle.run_id),
        message_id=str(message.id),
        conversation_id=str(conversation.id),
        created_at=int(message.created_at.timestamp()),
        mode=app.mode,
    )
    tasks.register(ids.task_id, lambda: runner.stop_here(handle.run_id))
    return Turn(ids, handle, message, sessions, tasks, recorded, app.finish_in_background)
