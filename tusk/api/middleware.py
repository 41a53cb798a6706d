"""A limit on request bodies, enforced while they stream in (Content-Length may be absent)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tusk.api.errors import error_response


@dataclass(frozen=True)
class Limit:
    max_bytes: int
    code: str
    message: str


class BodyTooLarge(HTTPException):
    """Raised from `receive`, so the framework's body parsing turns it into our 413 response."""

    def __init__(self, limit: Limit) -> None:
        super().__init__(413, limit.message)
        self.code = limit.code


class BodySizeLimit:
    def __init__(self, app: ASGIApp, limit_for: Callable[[str], Limit]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit.max_bytes:
            await error_response(limit.code, limit.message, 413)(scope, receive, send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit.max_bytes:
                raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await error_response(limit.code, limit.message, 413)(scope, receive, send)
