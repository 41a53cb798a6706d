"""`POST /v1/chat/completions`: OpenAI's chat completions API in front of every app, with an
`app-` key. Errors take OpenAI's shape (`{"error": {...}}`), not Dify's, so OpenAI clients
report them as they would OpenAI's own."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from tusk.api.deps import get_app_caller, get_services
from tusk.api.routes.service_chat import get_tasks
from tusk.api.routes.workflows import get_runner
from tusk.api.sse import EventStream
from tusk.apps import limits, openai_compat
from tusk.apps.openai_compat import Answer, CompatRequest
from tusk.errors import InvalidParam, TuskError

router = APIRouter(prefix="/v1", tags=["openai"])
KEEP_ALIVE = b": ping\n\n"  # an SSE comment: clients skip it
DONE = b"data: [DONE]\n\n"


def _error(error: TuskError) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="api"'} if error.status == 401 else None
    return JSONResponse(openai_compat.error_json(error), error.status, headers=headers)


async def _body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError:
        raise InvalidParam("The request body is not valid JSON.") from None


async def _respond(answer: Answer, compat: CompatRequest) -> Response:
    if compat.stream:
        payloads = openai_compat.chunks(answer, compat)
        return EventStream(payloads, first=b"", ping=KEEP_ALIVE, last=DONE)
    content = await answer.complete()
    return JSONResponse(openai_compat.completion_body(answer, compat.model, content))


@router.post("/chat/completions")
async def chat_completions(request: Request) -> Response:
    services = get_services(request)
    try:
        caller = await get_app_caller(request, services)
        compat = openai_compat.parse(await _body(request))
        deps = openai_compat.CompatDeps(
            services.sessions, services.models, get_tasks(request), get_runner(request)
        )

        async def respond() -> Response:
            return await _respond(await openai_compat.start(deps, caller.app, compat), compat)

        limit = limits.limit_for(caller.app, services.settings)
        response: Response = await limits.run_limited(services.sessions, caller.app, limit, respond)
        return response
    except TuskError as error:
        return _error(error)
