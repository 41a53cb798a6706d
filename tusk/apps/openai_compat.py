"""Every app behind OpenAI's chat completions API (`POST /v1/chat/completions`), so that any
OpenAI client can talk to it.

The last message is the query. The user and assistant messages before it are the conversation:
Tusk keeps, for each answer it gave, a digest of the whole exchange so far (with the `user`), so
the next request that sends that exchange back continues the same stored conversation. An
exchange Tusk has not seen (a client that builds its own history, or one older than
`EXCHANGE_DAYS`) starts a new conversation seeded with those messages as earlier turns, so the
app's memory sees them either way. System messages are ignored: the app's own prompt applies.

Workflow apps take the query as the Start node's one text field; completion apps as their query.
Agent-chat apps answer with the agent's text; its tool rounds are recorded, not sent.
An optional `inputs` object (beyond OpenAI's fields) fills the app's other inputs."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tusk.apps import agent_app, chatflow_app, easy_app
from tusk.apps.conversations import (
    Outcome,
    Speaker,
    find_conversation,
    finish_message,
    open_conversation,
)
from tusk.apps.easy_config import AppUnavailable, form_variables, read_config
from tusk.apps.end_users import ANONYMOUS, end_user
from tusk.apps.running import RunningTurn
from tusk.apps.tasks import TaskRegistry
from tusk.apps.turns import new_turn_message, record_turn
from tusk.apps.workflow_app import Caller, pick_workflow, start_form, start_run
from tusk.db import kv
from tusk.db.models import App, AppModelConfig
from tusk.errors import InvalidParam, NotFound, TuskError
from tusk.models.runtime import ModelRuntime
from tusk.workflow.events import NodeFinished, RunFailed, TextChunk, WorkflowFinished
from tusk.workflow.files import UploadResolver
from tusk.workflow.inputs import check_inputs
from tusk.workflow.nodes.models import add_usage, empty_usage
from tusk.workflow.runner import RunHandle, WorkflowRunner

EXCHANGE_DAYS = 7
KEY_PREFIX = "openai-exchange:"
CHAT_MODES = ("chat", "agent-chat", "advanced-chat")
TEXT_FIELDS = ("text-input", "paragraph")
Turn = tuple[str, str]  # (user message, assistant answer)
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class CompatError(TuskError):
    """A request this endpoint cannot map onto the app."""

    code, status = "invalid_request_error", 400


# --- the request ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CompatRequest:
    model: str
    query: str
    turns: list[Turn]
    stream: bool = False
    include_usage: bool = False
    user: str = ANONYMOUS
    inputs: dict[str, Any] = field(default_factory=dict)


def text_of(content: Any, where: str) -> str:
    """A message's text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text":
                raise InvalidParam(f"{where}: only text content parts are supported.", params=where)
            texts.append(str(part.get("text") or ""))
        return "".join(texts)
    raise InvalidParam(f"{where} must be a string or a list of content parts.", params=where)


def conversation_of(messages: Sequence[Any]) -> tuple[list[Turn], str]:
    """The earlier (user, assistant) turns and the query (the last message, from the user)."""
    said: list[tuple[str, str]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise InvalidParam(f"messages[{i}] must be an object with a role.", params="messages")
        if message["role"] in ("user", "assistant"):
            said.append((message["role"], text_of(message.get("content"), f"messages[{i}]")))
    if not said or said[-1][0] != "user":
        raise InvalidParam("The last message must come from the user.", params="messages")
    turns: list[Turn] = []
    for role, content in said[:-1]:
        if role == "user":
            turns.append((content, ""))
        elif turns and not turns[-1][1]:
            turns[-1] = (turns[-1][0], content)
        else:  # an assistant message with no question before it
            turns.append(("", content))
    return turns, said[-1][1]


def parse(body: Any) -> CompatRequest:
    if not isinstance(body, Mapping):
        raise InvalidParam("The request body must be a JSON object.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidParam("messages must be a non-empty list.", params="messages")
    inputs = body.get("inputs") or {}
    if not isinstance(inputs, Mapping):
        raise InvalidParam("inputs must be an object.", params="inputs")
    user = body.get("user")
    options = body.get("stream_options") or {}
    turns, query = conversation_of(messages)
    return CompatRequest(
        model=str(body.get("model") or ""),
        query=query.replace("\x00", ""),
        turns=turns,
        stream=body.get("stream") is True,
        include_usage=isinstance(options, Mapping) and options.get("include_usage") is True,
        user=user.strip()[:255] if isinstance(user, str) and user.strip() else ANONYMOUS,
        inputs=dict(inputs),
    )


def exchange_key(app_id: uuid.UUID, user: str, turns: Sequence[Turn]) -> str:
    digest = hashlib.sha256(json.dumps([user, list(turns)], ensure_ascii=False).encode())
    return f"{KEY_PREFIX}{app_id}:{digest.hexdigest()}"


# --- running it ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CompatDeps:
    sessions: async_sessionmaker[AsyncSession]
    models: ModelRuntime
    tasks: TaskRegistry
    runner: WorkflowRunner


@dataclass
class Answer:
    """A running answer: text deltas while it runs, then its usage or its error."""

    id: str
    parts: AsyncIterator[str]
    text: list[str] = field(default_factory=list)
    usage: dict[str, Any] = field(default_factory=empty_usage)
    error: TuskError | None = None
    filtered: bool = False  # the answer was replaced by output moderation
    replacement: str | None = None
    created: int = field(default_factory=lambda: int(time.time()))

    async def deltas(self) -> AsyncIterator[str]:
        async for part in self.parts:
            self.text.append(part)
            yield part

    async def complete(self) -> str:
        async for _ in self.deltas():
            pass
        if self.error is not None:
            raise self.error
        return self.replacement if self.replacement is not None else "".join(self.text)


async def start(deps: CompatDeps, app: App, request: CompatRequest) -> Answer:
    async with deps.sessions.begin() as db:
        speaker = Speaker(end_user_id=(await end_user(db, app, request.user)).id)
    if app.mode == "workflow":
        return await _workflow(deps, app, request, speaker)
    if app.mode == "completion":
        completion = easy_app.EasyRequest(request.query, request.inputs, speaker)
        generation = await easy_app.start_generation(_easy(deps), app, completion)
        return _running_answer(generation, None)
    if app.mode not in CHAT_MODES:
        raise CompatError(f"Apps of mode {app.mode} cannot be called here yet.")
    conversation_id = await _conversation(deps, app, request, speaker)
    if app.mode in ("chat", "agent-chat"):
        chat = easy_app.EasyRequest(
            request.query, request.inputs, speaker, conversation_id, auto_generate_name=False
        )
        running: RunningTurn
        if app.mode == "chat":
            running = await easy_app.start_generation(_easy(deps), app, chat)
        else:
            agent_deps = agent_app.AgentDeps(deps.sessions, deps.models, deps.tasks, deps.runner)
            running = await agent_app.start_turn(agent_deps, app, chat)
        return _running_answer(running, _remember(deps, app, request, running.ids))
    turn = chatflow_app.ChatRequest(
        query=request.query,
        inputs=request.inputs,
        user_id=request.user,
        speaker=speaker,
        conversation_id=conversation_id,
        created_by=speaker.end_user_id,
    )
    started = await chatflow_app.start_turn(deps.sessions, deps.runner, deps.tasks, app, turn)
    return _running_answer(started, _remember(deps, app, request, started.ids))


def _easy(deps: CompatDeps) -> easy_app.EasyDeps:
    return easy_app.EasyDeps(deps.sessions, deps.models, deps.tasks)


# --- conversations -------------------------------------------------------------------------


async def _conversation(
    deps: CompatDeps, app: App, request: CompatRequest, speaker: Speaker
) -> str | None:
    """The stored conversation these earlier turns continue, or a new one seeded with them."""
    if not request.turns:
        return None
    key = exchange_key(app.id, request.user, request.turns)
    async with deps.sessions.begin() as db:
        known = await kv.get(db, key)
        if isinstance(known, str):
            try:
                return str((await find_conversation(db, app, speaker, known)).id)
            except NotFound:
                pass  # deleted since: seed a new one
        inputs = await _checked_inputs(db, deps.runner, app, request.inputs)
        conversation = await open_conversation(db, app, speaker, None, inputs)
    for query, answer in request.turns:  # one after another: their times order them
        message = new_turn_message(conversation, speaker, query=query, inputs=inputs)
        await record_turn(deps.sessions, None, message, [])
        await finish_message(deps.sessions, message, Outcome(answer=answer))
    return str(conversation.id)


async def _checked_inputs(
    db: AsyncSession, runner: WorkflowRunner, app: App, inputs: dict[str, Any]
) -> dict[str, Any]:
    resolve = UploadResolver(db, app.workspace_id)
    if app.mode == "advanced-chat":
        workflow = await pick_workflow(db, app, version=None, draft=False)
        return await check_inputs(start_form(runner.plan(app, workflow)), inputs, resolve)
    row = await db.get(AppModelConfig, app.app_model_config_id) if app.app_model_config_id else None
    if row is None:
        raise AppUnavailable("The app has no model configuration yet.")
    return await check_inputs(form_variables(read_config(row.config)), inputs, resolve)


@dataclass(frozen=True)
class Remember:
    """Where to note the exchange once answered, so that the next request continues it."""

    sessions: async_sessionmaker[AsyncSession]
    app_id: uuid.UUID
    request: CompatRequest
    conversation_id: str

    async def answered(self, answer: str) -> None:
        turns = [*self.request.turns, (self.request.query, answer)]
        key = exchange_key(self.app_id, self.request.user, turns)
        async with self.sessions.begin() as db:
            await kv.put(db, key, self.conversation_id, ttl=EXCHANGE_DAYS * 86400)


def _remember(deps: CompatDeps, app: App, request: CompatRequest, ids: Any) -> Remember:
    return Remember(deps.sessions, app.id, request, str(ids.conversation_id))


# --- answers of each mode ------------------------------------------------------------------


def _running_answer(turn: RunningTurn | chatflow_app.Turn, remember: Remember | None) -> Answer:
    answer = Answer(id=turn.ids.message_id, parts=_nothing())
    answer.parts = _chunk_texts(answer, turn.chunks(), remember)
    return answer


async def _nothing() -> AsyncIterator[str]:
    return
    yield


async def _chunk_texts(
    answer: Answer, chunks: AsyncIterator[dict[str, Any]], remember: Remember | None
) -> AsyncIterator[str]:
    """The text of a chat app's chunks (Dify's shapes; an agent's tool rounds are left out);
    usage and errors go to `answer`."""
    async for chunk in chunks:
        event = chunk["event"]
        if event in ("message", "agent_message") and chunk.get("answer"):
            yield str(chunk["answer"])
        elif event == "message_replace":
            answer.filtered, answer.replacement = True, str(chunk.get("answer") or "")
        elif event == "message_end":
            answer.usage = dict(chunk["metadata"]["usage"])
        elif event == "error":
            answer.error = _failure(str(chunk.get("message")), chunk.get("status"))
        elif event == "workflow_finished" and chunk["data"].get("status") == "failed":
            answer.error = answer.error or _failure(str(chunk["data"].get("error")), 500)
    if answer.error is None and remember is not None:
        seen = answer.replacement if answer.replacement is not None else "".join(answer.text)
        await remember.answered(seen)


def _failure(message: str, status: Any) -> TuskError:
    error = TuskError(message)
    error.code, error.status = "completion_request_error", int(status or 500)
    return error


async def _workflow(deps: CompatDeps, app: App, request: CompatRequest, speaker: Speaker) -> Answer:
    async with deps.sessions.begin() as db:
        workflow = await pick_workflow(db, app, version=None, draft=False)
        form = start_form(deps.runner.plan(app, workflow))
    texts = [v.variable for v in form if v.type in TEXT_FIELDS]
    if len(texts) != 1:
        raise CompatError(
            f"This workflow's Start node has {len(texts)} text fields: the last user message "
            "can only go to a workflow with exactly one. Call POST /v1/workflows/run instead."
        )
    inputs = {**request.inputs, texts[0]: request.query}
    caller = Caller("end_user", speaker.end_user_id, request.user)
    handle = await start_run(deps.sessions, deps.runner, app, caller, inputs=inputs)
    answer = Answer(id=str(handle.run_id), parts=_nothing())
    answer.parts = _run_texts(answer, handle)
    return answer


async def _run_texts(answer: Answer, handle: RunHandle) -> AsyncIterator[str]:
    """A workflow's streamed text; when it streams none, its outputs at the end."""
    streamed = False
    async for event in handle.events():
        if isinstance(event, TextChunk) and event.text:
            streamed = True
            yield event.text
        elif isinstance(event, NodeFinished):
            usage = (event.node.outputs or {}).get("usage")
            if isinstance(usage, Mapping):
                answer.usage = add_usage(answer.usage, usage)
        elif isinstance(event, RunFailed):
            answer.error = answer.error or _failure(event.message, 500)
        elif isinstance(event, WorkflowFinished):
            if event.run.status == "failed":
                answer.error = answer.error or _failure(str(event.run.error), 500)
            elif not streamed:
                yield outputs_text(event.run.outputs)


def outputs_text(outputs: Mapping[str, Any]) -> str:
    """One output is its own text; several are a JSON object."""
    if len(outputs) == 1:
        (only,) = outputs.values()
        return only if isinstance(only, str) else json.dumps(only, ensure_ascii=False)
    return json.dumps(dict(outputs), ensure_ascii=False)


# --- OpenAI's shapes -----------------------------------------------------------------------


def usage_json(usage: Mapping[str, Any]) -> dict[str, int]:
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    total = int(usage.get("total_tokens") or 0) or prompt + completion
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def finish_reason(answer: Answer) -> str:
    return "content_filter" if answer.filtered else "stop"


def completion_body(answer: Answer, model: str, content: str) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content,
        "refusal": None,
        "annotations": [],
    }
    return {
        "id": f"chatcmpl-{answer.id}",
        "object": "chat.completion",
        "created": answer.created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(answer),
            }
        ],
        "usage": usage_json(answer.usage),
        "system_fingerprint": None,
    }


def chunk_body(
    answer: Answer, request: CompatRequest, delta: dict[str, Any], finish: str | None = None
) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    body: dict[str, Any] = {
        "id": f"chatcmpl-{answer.id}",
        "object": "chat.completion.chunk",
        "created": answer.created,
        "model": request.model,
        "system_fingerprint": None,
        "choices": [choice],
    }
    if request.include_usage:
        body["usage"] = None
    return body


def error_json(error: TuskError) -> dict[str, Any]:
    kind = ERROR_TYPES.get(error.status, "server_error")
    fields = {"message": error.message, "type": kind, "param": error.params, "code": error.code}
    return {"error": fields}


async def chunks(answer: Answer, request: CompatRequest) -> AsyncGenerator[dict[str, Any]]:
    """The stream's chunks in OpenAI's order: the role, the content, the finish reason, the
    usage when asked for; an error as `{"error": ...}` instead of the finish."""
    yield chunk_body(answer, request, {"role": "assistant", "content": "", "refusal": None})
    async for text in answer.deltas():
        yield chunk_body(answer, request, {"content": text})
    if answer.error is not None:
        yield error_json(answer.error)
        return
    yield chunk_body(answer, request, {}, finish_reason(answer))
    if request.include_usage:
        last = chunk_body(answer, request, {})
        last["choices"], last["usage"] = [], usage_json(answer.usage)
        yield last
