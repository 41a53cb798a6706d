"""The Service API's chat endpoints: `POST /v1/chat-messages` (chat, agent-chat and chatflow
apps), `POST /v1/completion-messages`, and their stop endpoints."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from tusk.api.deps import AppCallerDep, ServicesDep
from tusk.api.routes.workflows import get_runner
from tusk.api.sse import sse_response
from tusk.apps import chatflow_app
from tusk.apps.conversations import Speaker, query_param
from tusk.apps.end_users import end_user, user_param
from tusk.apps.tasks import TaskRegistry

router = APIRouter(prefix="/v1", tags=["service"])


def get_tasks(request: Request) -> TaskRegistry:
    tasks = request.app.state.tasks
    assert isinstance(tasks, TaskRegistry)
    return tasks


class ChatBody(BaseModel):
    query: Any = None
    inputs: dict[str, Any] = {}
    files: list[dict[str, Any]] | None = None
    response_mode: str | None = None
    conversation_id: str | None = None
    user: str | None = None
    auto_generate_name: bool = True
    workflow_id: str | None = None


@router.post("/chat-messages")
async def chat_messages(
    body: ChatBody, caller: AppCallerDep, services: ServicesDep, request: Request
) -> Any:
    user = user_param(body.user)
    query = query_param(body.query)
    app = caller.app
    async with services.transaction() as db:
        who = await end_user(db, app, user)
    chat = chatflow_app.ChatRequest(
        query=query,
        inputs=body.inputs,
        user_id=user,
        speaker=Speaker(end_user_id=who.id),
        conversation_id=body.conversation_id or None,
        files=body.files,
        created_by=who.id,
    )
    turn = await chatflow_app.start_turn(
        services.sessions, get_runner(request), get_tasks(request), app, chat
    )
    if body.response_mode == "streaming":
        return sse_response(turn.chunks())
    return await turn.blocking()


class StopBody(BaseModel):
    user: str | None = None


@router.post("/chat-messages/{task_id}/stop")
async def stop_chat(
    task_id: str, body: StopBody, caller: AppCallerDep, request: Request
) -> dict[str, str]:
    user_param(body.user)
    await get_tasks(request).stop(task_id)
    return {"result": "success"}
