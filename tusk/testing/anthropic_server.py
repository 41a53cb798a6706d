"""`FakeAnthropic`: a local server that speaks Anthropic's Messages protocol (streamed or not, with
tool use), answering as a test scripts it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tusk.testing.llm_server import (
    Failure,
    FakeServer,
    Frame,
    RecordedRequest,
    Reply,
    ToolCall,
    event_stream,
    fragments,
    last_user_text,
    message_chars,
    message_words,
    paced,
    sse,
    text_of,
    tool_call_id,
    words,
)

__all__ = ["FakeAnthropic", "RecordedRequest", "ToolCall"]

# OpenAI's finish reasons, so that one script can serve both fakes.
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
DEFAULT_MESSAGES = {
    429: "Number of request tokens has exceeded your per-minute rate limit",
    500: "Internal server error",
    529: "Overloaded",
}


class FakeAnthropic(FakeServer):
    """Anthropic's protocol at `base_url` (the server's root: the SDK adds "/v1/messages"). With
    `api_key`, every request must carry it (as `x-api-key` or a bearer token); every request must
    name an `anthropic-version`; with `models`, other models are unknown (404); with
    `context_chars`, calls whose system prompt and messages hold more characters fail as too
    long."""

    not_found_type = "not_found_error"
    garbage_event = b"event: content_block_delta\ndata: {not json\n\n"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        models: Sequence[str] = (),
        context_chars: int | None = None,
    ) -> None:
        super().__init__(api_key=api_key, models=models, context_chars=context_chars)

    def fail(
        self,
        status: int,
        message: str | None = None,
        *,
        retry_after: float | None = None,
        error_type: str | None = None,
        times: int = 1,
    ) -> None:
        """The next `times` message calls answer `status` with Anthropic's error body and, with
        `retry_after` (seconds), a Retry-After header."""
        failure = Failure(
            status=status,
            message=message or DEFAULT_MESSAGES.get(status, f"Error {status}"),
            error_type=error_type or ERROR_TYPES.get(status, "api_error"),
            retry_after=retry_after,
        )
        self._script.add_fault(failure, times)

    def routes(self) -> list[Route]:
        return [
            self.route("/v1/messages", self._messages),
            self.route("/v1/models", self._models, ["GET"]),
            self.catch_all(),
        ]

    def refuse(self, request: RecordedRequest) -> Response | None:
        if not self._authenticated(request.headers):
            return self.error(401, "invalid x-api-key", error_type="authentication_error")
        if "anthropic-version" not in request.headers:
            return self.bad_request("anthropic-version: header is required")
        return None

    def _authenticated(self, headers: dict[str, str]) -> bool:
        # The key may come as x-api-key or, as the installed SDK (2.x) sends it, a bearer token.
        if self.api_key is None:
            return True
        given = headers.get("x-api-key") or headers.get("authorization", "").removeprefix("Bearer ")
        return given == self.api_key

    def error(
        self,
        status: int,
        message: str,
        *,
        error_type: str,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        body = {"type": "error", "error": {"type": error_type, "message": message}}
        return JSONResponse(body, status_code=status, headers=headers)

    def model_not_found(self, model: str) -> Response:
        return self.error(404, f"model: {model}", error_type="not_found_error")

    async def _messages(self, request: RecordedRequest) -> Response:
        rejected = self.admit(request)
        if rejected is not None:
            return rejected
        body: dict[str, Any] = request.json
        messages, max_tokens = body.get("messages"), body.get("max_tokens")
        if not isinstance(messages, list) or not messages:
            return self.bad_request("messages: at least one message is required")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return self.bad_request("max_tokens: Field required")
        system = text_of(body.get("system"))
        too_long = self._context_error(len(system) + message_chars(messages))
        if too_long is not None:
            return too_long
        message = _Message(
            id=self.new_id("msg_"),
            model=body["model"],
            reply=self.next_reply(last_user_text(messages)),
            input_tokens=words(system) + message_words(messages),
        )
        if body.get("stream") is True:
            return event_stream(paced(message.frames(), message.reply))
        await asyncio.sleep(message.reply.ttft)
        return JSONResponse(message.body())

    def _context_error(self, chars: int) -> Response | None:
        if self.context_chars is None or chars <= self.context_chars:
            return None
        return self.bad_request(
            f"prompt is too long: {chars} tokens > {self.context_chars} maximum"
        )

    async def _models(self, request: RecordedRequest) -> Response:
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
            for m in self.models
        ]
        first, last = (self.models[0], self.models[-1]) if self.models else (None, None)
        return JSONResponse({"data": data, "has_more": False, "first_id": first, "last_id": last})


@dataclass(frozen=True)
class _Message:
    """One assistant message, as a Message body or as a stream of events."""

    id: str
    model: str
    reply: Reply
    input_tokens: int

    def stop_reason(self) -> str:
        reason = self.reply.finish_reason
        if reason is None:
            return "tool_use" if self.reply.tool_calls else "end_turn"
        return STOP_REASONS.get(reason, reason)

    def usage(self) -> dict[str, int]:
        prompt, completion = self.reply.usage or (self.input_tokens, self.reply.completion_tokens())
        return {
            "input_tokens": prompt,
            "output_tokens": completion,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }

    def blocks(self) -> list[dict[str, Any]]:
        text = [{"type": "text", "text": self.reply.text}]
        tools = [
            {
                "type": "tool_use",
                "id": tool_call_id(call, "toolu_", self.id, index),
                "name": call.name,
                "input": call.arguments,
            }
            for index, call in enumerate(self.reply.tool_calls)
        ]
        return text + tools if self.reply.text or not tools else tools

    def body(self, content: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": self.blocks() if content is None else content,
            "stop_reason": self.stop_reason() if content is None else None,
            "stop_sequence": None,
            "usage": self.usage(),
        }

    def frames(self) -> list[Frame]:
        """message_start, then each content block (start, a ping after the first, deltas, stop),
        then message_delta with the stop reason and output tokens, and message_stop."""
        start = {**self.body(content=[]), "usage": {**self.usage(), "output_tokens": 1}}
        frames: list[Frame] = [
            ("frame", sse({"type": "message_start", "message": start}, "message_start"))
        ]
        for index, block in enumerate(self.blocks()):
            frames += _block_frames(index, block, self.reply)
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self.stop_reason(), "stop_sequence": None},
            "usage": {"output_tokens": self.usage()["output_tokens"]},
        }
        frames.append(("end", sse(delta, "message_delta")))
        frames.append(("end", sse({"type": "message_stop"}, "message_stop")))
        return frames


def _block_frames(index: int, block: dict[str, Any], reply: Reply) -> list[Frame]:
    if block["type"] == "text":
        opening: dict[str, Any] = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in reply.pieces()]
    else:
        opening = {**block, "input": {}}
        pieces = fragments(ToolCall(block["name"], block["input"]).arguments_json())
        deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in pieces]
    start = {"type": "content_block_start", "index": index, "content_block": opening}
    frames: list[Frame] = [("frame", sse(start, "content_block_start"))]
    if index == 0:
        frames.append(("frame", sse({"type": "ping"}, "ping")))
    frames += [
        (
            "delta",
            sse({"type": "content_block_delta", "index": index, "delta": d}, "content_block_delta"),
        )
        for d in deltas
    ]
    stop = {"type": "content_block_stop", "index": index}
    frames.append(("frame", sse(stop, "content_block_stop")))
    return frames
