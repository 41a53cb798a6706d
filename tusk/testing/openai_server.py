"""`FakeOpenAI`: a local server that speaks OpenAI's HTTP protocol (chat completions, streamed or
not, with tool calls; embeddings; models) and the common rerank protocol (Cohere, Jina, TEI,
vLLM), answering as a test scripts it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import re
import struct
from collections.abc import Mapping, Sequence
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
    tool_call_id,
    words,
)

__all__ = ["FakeOpenAI", "RecordedRequest", "ToolCall", "fake_embedding", "rerank_score"]

DEFAULT_DIMS = 8
CREATED = 1_700_000_000  # a fixed "created" for models, so that listings compare equal
# Anthropic's stop reasons, so that one script can serve both fakes.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}
DEFAULT_MESSAGES = {
    429: "Rate limit reached",
    500: "The server had an error while processing your request. Sorry about that!",
    503: "The engine is currently overloaded, please try again later.",
}


def fake_embedding(text: str, dims: int) -> list[float]:
    """The vector the server returns for `text`: unit length, derived from sha256 of the text."""
    blocks = (dims * 2 + 31) // 32
    raw = b"".join(hashlib.sha256(f"{block}:{text}".encode()).digest() for block in range(blocks))
    values = [int.from_bytes(raw[2 * i : 2 * i + 2], "big") / 32767.5 - 1.0 for i in range(dims)]
    norm = math.sqrt(sum(value * value for value in values)) or 1.0
    return [value / norm for value in values]


def rerank_score(query: str, document: str) -> float:
    """The fraction of the query's distinct lower-cased words that occur in the document."""
    wanted = set(re.findall(r"\w+", query.lower()))
    present = set(re.findall(r"\w+", document.lower()))
    return len(wanted & present) / len(wanted) if wanted else 0.0


class FakeOpenAI(FakeServer):
    """OpenAI's protocol under `base_url` (".../v1"). With `api_key`, every request must carry it as
    a bearer token; with `models`, other models are unknown (404); with `context_chars`, chat
    calls whose messages hold more characters fail as too long for the context."""

    base_path = "/v1"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        models: Sequence[str] = (),
        embedding_dims: Mapping[str, int] | None = None,
        context_chars: int | None = None,
    ) -> None:
        self.embedding_dims = dict(embedding_dims or {})
        super().__init__(api_key=api_key, models=models, context_chars=context_chars)

    def fail(
        self,
        status: int,
        message: str | None = None,
        *,
        retry_after: float | None = None,
        code: str | None = None,
        error_type: str | None = None,
        times: int = 1,
    ) -> None:
        """The next `times` chat, embedding or rerank calls answer `status` with OpenAI's error
        body and, with `retry_after` (seconds), a Retry-After header."""
        failure = Failure(
            status=status,
            message=message or DEFAULT_MESSAGES.get(status, f"Error {status}"),
            error_type=error_type or _error_type(status),
            code=code or ("rate_limit_exceeded" if status == 429 else None),
            retry_after=retry_after,
        )
        self._script.add_fault(failure, times)

    def routes(self) -> list[Route]:
        return [
            self.route("/v1/chat/completions", self._chat),
            self.route("/v1/embeddings", self._embeddings),
            self.route("/v1/rerank", self._rerank),
            self.route("/rerank", self._rerank),
            self.route("/v1/models", self._models, ["GET"]),
            self.route("/v1/models/{model:path}", self._model, ["GET"]),
            # Azure OpenAI: a deployment in the path, `api-version` in the query.
            self.route("/openai/deployments/{deployment}/chat/completions", self._chat),
            self.route("/openai/deployments/{deployment}/embeddings", self._embeddings),
            self.route("/openai/models", self._models, ["GET"]),
            self.catch_all(),
        ]

    def refuse(self, request: RecordedRequest) -> Response | None:
        given = request.headers.get("authorization", "")
        azure = request.headers.get("api-key")
        if self.api_key is None or self.api_key in (given.removeprefix("Bearer "), azure):
            return None
        key = _masked(given.removeprefix("Bearer").strip())
        message = (
            f"Incorrect API key provided: {key}. "
            "You can find your API key at https://platform.openai.com/account/api-keys."
        )
        return self.error(401, message, error_type="invalid_request_error", code="invalid_api_key")

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
        error = {"message": message, "type": error_type, "param": param, "code": code}
        return JSONResponse({"error": error}, status_code=status, headers=headers)

    def model_not_found(self, model: str) -> Response:
        message = f"The model `{model}` does not exist or you do not have access to it."
        return self.error(404, message, error_type="invalid_request_error", code="model_not_found")

    # Chat completions.

    async def _chat(self, request: RecordedRequest) -> Response:
        rejected = self.admit(request)
        if rejected is not None:
            return rejected
        body: dict[str, Any] = request.json
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self.bad_request("'messages' must be a non-empty array", param="messages")
        too_long = self._context_error(message_chars(messages))
        if too_long is not None:
            return too_long
        completion = _Completion(
            id=self.new_id("chatcmpl-"),
            model=body["model"],
            reply=self.next_reply(last_user_text(messages)),
            prompt_tokens=message_words(messages),
            include_usage=_include_usage(body),
        )
        if body.get("stream") is True:
            return event_stream(paced(completion.frames(), completion.reply))
        await asyncio.sleep(completion.reply.ttft)
        return JSONResponse(completion.body())

    def _context_error(self, chars: int) -> Response | None:
        if self.context_chars is None or chars <= self.context_chars:
            return None
        message = (
            f"This model's maximum context length is {self.context_chars} tokens. However, your "
            f"messages resulted in {chars} tokens. Please reduce the length of the messages."
        )
        return self.error(
            400,
            message,
            error_type="invalid_request_error",
            param="messages",
            code="context_length_exceeded",
        )

    # Embeddings.

    async def _embeddings(self, request: RecordedRequest) -> Response:
        rejected = self.admit(request)
        if rejected is not None:
            return rejected
        body: dict[str, Any] = request.json
        texts = _embedding_inputs(body.get("input"))
        if texts is None:
            return self.bad_request("'$.input' is invalid.", param="input")
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            return self.bad_request("encoding_format must be float or base64", "encoding_format")
        dims = body.get("dimensions")
        if not isinstance(dims, int) or dims < 1:
            dims = self.embedding_dims.get(body["model"], DEFAULT_DIMS)
        data = [
            {"object": "embedding", "index": i, "embedding": _encoded(text, dims, encoding)}
            for i, text in enumerate(texts)
        ]
        tokens = sum(words(text) for text in texts)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return JSONResponse(
            {"object": "list", "data": data, "model": body["model"], "usage": usage}
        )

    # Rerank.

    async def _rerank(self, request: RecordedRequest) -> Response:
        rejected = self.admit(request)
        if rejected is not None:
            return rejected
        body: dict[str, Any] = request.json
        query, documents, top_n = (
            body.get("query"),
            _documents(body.get("documents")),
            body.get("top_n"),
        )
        if not isinstance(query, str) or documents is None:
            return self.bad_request("'query' (a string) and 'documents' (a list) are required")
        if top_n is not None and (not isinstance(top_n, int) or top_n < 1):
            return self.bad_request("'top_n' must be a positive integer", param="top_n")
        ranked = sorted(
            range(len(documents)), key=lambda i: (-rerank_score(query, documents[i]), i)
        )[:top_n]
        results = [
            _rerank_result(i, query, documents[i], bool(body.get("return_documents")))
            for i in ranked
        ]
        tokens = words(query) + sum(words(document) for document in documents)
        return JSONResponse(
            {
                "id": self.new_id("rerank-"),
                "model": body["model"],
                "results": results,
                "usage": {"total_tokens": tokens},
            }
        )

    # Models.

    async def _models(self, request: RecordedRequest) -> Response:
        return JSONResponse({"object": "list", "data": [_model(m) for m in self.models]})

    async def _model(self, request: RecordedRequest) -> Response:
        model = request.path.removeprefix("/v1/models/")
        if self.models and model not in self.models:
            return self.model_not_found(model)
        return JSONResponse(_model(model))


@dataclass(frozen=True)
class _Completion:
    """One chat completion, as a ChatCompletion body or as a stream of chunks."""

    id: str
    model: str
    reply: Reply
    prompt_tokens: int
    include_usage: bool
    created: int = CREATED

    def finish_reason(self) -> str:
        reason = self.reply.finish_reason
        if reason is None:
            return "tool_calls" if self.reply.tool_calls else "stop"
        return FINISH_REASONS.get(reason, reason)

    def usage(self) -> dict[str, int]:
        prompt, completion = self.reply.usage or (
            self.prompt_tokens,
            self.reply.completion_tokens(),
        )
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def tool_calls(self) -> list[dict[str, Any]]:
        return [
            {
                "id": tool_call_id(call, "call_", self.id, index),
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json()},
            }
            for index, call in enumerate(self.reply.tool_calls)
        ]

    def body(self) -> dict[str, Any]:
        text = self.reply.text
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text if text or not self.reply.tool_calls else None,
            "refusal": None,
        }
        if self.reply.tool_calls:
            message["tool_calls"] = self.tool_calls()
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": self.finish_reason(),
        }
        return {**self._head("chat.completion"), "choices": [choice], "usage": self.usage()}

    def _head(self, kind: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "fp_fake",
        }

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        chunk: dict[str, Any] = {**self._head("chat.completion.chunk"), "choices": [choice]}
        if self.include_usage:
            chunk["usage"] = None
        return sse(chunk)

    def frames(self) -> list[Frame]:
        """The chunks of the stream: the role, the text pieces, each tool call's head and argument
        fragments, the finish reason, the usage (if asked for), then [DONE]."""
        frames: list[Frame] = [("frame", self.chunk({"role": "assistant", "content": ""}))]
        frames += [("delta", self.chunk({"content": piece})) for piece in self.reply.pieces()]
        for index, call in enumerate(self.tool_calls()):
            frames += [
                ("delta", self.chunk({"tool_calls": [delta]})) for delta in _deltas(index, call)
            ]
        frames.append(("end", self.chunk({}, self.finish_reason())))
        if self.include_usage:
            usage = {**self._head("chat.completion.chunk"), "choices": [], "usage": self.usage()}
            frames.append(("end", sse(usage)))
        frames.append(("end", b"data: [DONE]\n\n"))
        return frames


def _deltas(index: int, call: dict[str, Any]) -> list[dict[str, Any]]:
    """A tool call as OpenAI streams it: index, id and name first, then the arguments in pieces."""
    function = call["function"]
    head = {
        "index": index,
        "id": call["id"],
        "type": "function",
        "function": {"name": function["name"], "arguments": ""},
    }
    pieces = fragments(function["arguments"])
    return [head] + [{"index": index, "function": {"arguments": piece}} for piece in pieces]


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _embedding_inputs(value: Any) -> list[str] | None:
    """The texts to embed: a string, a list of strings, or token lists (embedded as their JSON)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(item, int) for item in value):
            return [str(value)]
        if all(isinstance(item, str | list) for item in value):
            return [item if isinstance(item, str) else str(item) for item in value]
    return None


def _encoded(text: str, dims: int, encoding: str) -> list[float] | str:
    vector = fake_embedding(text, dims)
    if encoding == "float":
        return vector
    # What the SDK decodes by default: little-endian float32, base64.
    return base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()


def _documents(value: Any) -> list[str] | None:
    """Rerank documents: strings, or objects with a `text` (Cohere's other form)."""
    if not isinstance(value, list):
        return None
    texts = [item if isinstance(item, str) else _text_field(item) for item in value]
    return None if any(text is None for text in texts) else [t for t in texts if t is not None]


def _text_field(item: Any) -> str | None:
    text = item.get("text") if isinstance(item, dict) else None
    return text if isinstance(text, str) else None


def _rerank_result(index: int, query: str, document: str, with_document: bool) -> dict[str, Any]:
    result: dict[str, Any] = {"index": index, "relevance_score": rerank_score(query, document)}
    if with_document:
        result["document"] = {"text": document}
    return result


def _model(model: str) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": CREATED, "owned_by": "tusk-testing"}


def _error_type(status: int) -> str:
    if status == 429:
        return "requests"
    return "server_error" if status >= 500 else "invalid_request_error"


def _masked(key: str) -> str:
    return f"{key[:3]}***{key[-4:]}" if len(key) > 8 else "***"
