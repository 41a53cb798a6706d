"""The Service API's chat endpoints: `POST /v1/chat-messages` (chat and chatflow apps),
`POST /v1/completion-messages`, and their stop endpoints."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from tusk.api.deps import AppCallerDep, ServicesDep, get_app_cache
from tusk.api.routes.workflows import get_runner
from tusk.api.sse import sse_response
from tusk.apps import agent_app, chatflow_app, easy_app
from tusk.apps.conversations import Speaker, query_param
from tusk.apps.end_users import user_param
from tusk.apps.limits import concurrency_limited
from tusk.apps.tasks import TaskRegistry
from tusk.db.models import App
from tusk.errors import InvalidParam
from tusk.services import Services

router = APIRouter(prefix="/v1", tags=["service"])
WRONG_ROUTE = "Please check if your app mode matches the right API route."
CHAT_MODES = ("chat", "agent-chat", "advanced-chat")


def get_tasks(request: Request) -> TaskRegistry:
    tasks = request.app.state.tasks
    assert isinstance(tasks, TaskRegistry)
    return tasks


def easy_deps(services: Services, request: Request) -> easy_app.EasyDeps:
    return easy_app.EasyDeps(
        services.sessions,
        services.models,
        get_tasks(request),
        get_runner(request).resources,
        get_app_cache(request),
    )


async def respond(generation: easy_app.Generation, response_mode: str | None) -> Any:
    if response_mode == "streaming":
        return sse_response(generation.chunks())
    return await generation.blocking()


class ChatBody(BaseModel):
    query: Any = None
    inputs: dict[str, Any] = {}
    files: list[dict[str, Any]] | None = None
    response_mode: str | None = None
    conversation_id: str | None = None
    user: str | None = None
    auto_generate_name: bool = True
    workflow_id: str | None = None


async def _speaker(services: Services, request: Request, app: App, user: str) -> Speaker:
    who = await get_app_cache(request).end_user_id(services.sessions, app, user)
    return Speaker(end_user_id=who)


@router.post("/chat-messages")
@concurrency_limited
async def chat_messages(
    body: ChatBody, caller: AppCallerDep, services: ServicesDep, request: Request
) -> Any:
    app = caller.app
    if app.mode not in CHAT_MODES:
        raise chatflow_app.NotChatApp(WRONG_ROUTE)
    user = user_param(body.user)
    query = query_param(body.query)
    speaker = await _speaker(services, request, app, user)
    if app.mode == "chat":
        chat = easy_app.EasyRequest(
            query=query,
            inputs=body.inputs,
            speaker=speaker,
            conversation_id=body.conversation_id or None,
            auto_generate_name=body.auto_generate_name,
            files=body.files,
        )
        generation = await easy_app.start_generation(easy_deps(services, request), app, chat)
        return await respond(generation, body.response_mode)
    if app.mode == "agent-chat":
        deps = agent_app.AgentDeps(
            services.sessions,
            services.models,
            get_tasks(request),
            get_runner(request),
            get_app_cache(request),
        )
        ask = agent_app.AgentRequest(
            query,
            body.inputs,
            speaker,
            body.conversation_id or None,
            body.auto_generate_name,
            files=body.files,
        )
        agent_turn = await agent_app.start_turn(deps, app, ask)
        if body.response_mode == "streaming":
            return sse_response(agent_turn.chunks())
        return await agent_turn.blocking()
    turn = chatflow_app.ChatRequest(
        query=query,
        inputs=body.inputs,
        user_id=user,
        speaker=speaker,
        conversation_id=body.conversation_id or None,
        files=body.files,
        created_by=speaker.end_user_id,
    )
    started = await chatflow_app.start_turn(
        services.sessions, get_runner(request), get_tasks(request), app, turn
    )
    if body.response_mode == "streaming":
        return sse_response(started.chunks())
    return await started.blocking()


class CompletionBody(BaseModel):
    inputs: dict[str, Any] | None = None
    query: Any = ""
    files: list[dict[str, Any]] | None = None
    response_mode: str | None = None
    user: str | None = None
    retriever_from: str = "dev"


@router.post("/completion-messages")
@concurrency_limited
async def completion_messages(
    body: CompletionBody, caller: AppCallerDep, services: ServicesDep, request: Request
) -> Any:
    app = caller.app
    if app.mode != "completion":
        raise easy_app.NotCompletionApp(WRONG_ROUTE)
    user = user_param(body.user)
    if body.inputs is None:
        raise InvalidParam("inputs is required", params="inputs")
    if not isinstance(body.query, str):
        raise InvalidParam("query must be a string", params="query")
    completion = easy_app.EasyRequest(
        query=body.query.replace("\x00", ""),
        inputs=body.inputs,
        speaker=await _speaker(services, request, app, user),
        auto_generate_name=False,
        files=body.files,
    )
    generation = await easy_app.start_generation(easy_deps(services, request), app, completion)
    return await respond(generation, body.response_mode)


class StopBody(BaseModel):
    user: str | None = None


@router.post("/chat-messages/{task_id}/stop")
async def stop_chat(
    task_id: str, body: StopBody, caller: AppCallerDep, request: Request
) -> dict[str, str]:
    user_param(body.user)
    if caller.app.mode not in CHAT_MODES:
        raise chatflow_app.NotChatApp(WRONG_ROUTE)
    await get_tasks(request).stop(task_id)
    return {"result": "success"}


@router.post("/completion-messages/{task_id}/stop")
async def stop_completion(
    task_id: str, body: StopBody, caller: AppCallerDep, request: Request
) -> dict[str, str]:
    user_param(body.user)
    if caller.app.mode != "completion":
        raise easy_app.NotCompletionApp(WRONG_ROUTE)
    await get_tasks(request).stop(task_id)
    return {"result": "success"}
