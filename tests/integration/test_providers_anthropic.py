"""The `anthropic` provider over real HTTP, against a local server that speaks the Messages API."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.models import texts_into
from tusk.models.base import ChatModel, Timeouts, request_sent
from tusk.models.errors import (
    BadResponse,
    ContextTooLong,
    InvalidCredentials,
    ModelTimeout,
    ProviderUnavailable,
    RateLimited,
    UnknownModel,
)
from tusk.models.guarded import CallContext, GuardedChat
from tusk.models.providers.anthropic import AnthropicProvider
from tusk.models.resilience import RetryPolicy
from tusk.models.types import ChatRequest, Message, TextDelta, ToolCall, ToolDefinition, Usage
from tusk.testing.anthropic_server import FakeAnthropic
from tusk.testing.openai_server import ToolCall as ScriptedCall

KEY = "sk-ant-test-0000"
HELLO = ChatRequest([Message("system", "Be brief."), Message("user", "Hello")])
MADE: list[AnthropicProvider] = []


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=KEY, models=("claude-test",), context_chars=2000) as fake:
        yield fake


@pytest.fixture(autouse=True)
async def fresh(server: FakeAnthropic) -> AsyncIterator[None]:
    server.clear()
    yield
    while MADE:
        await MADE.pop().aclose()


def provider(server: FakeAnthropic, key: str = KEY, **timeouts: float) -> AnthropicProvider:
    made = AnthropicProvider(
        {"api_key": key, "base_url": server.base_url}, timeouts=Timeouts(**timeouts)
    )
    MADE.append(made)
    return made


def chat(server: FakeAnthropic, key: str = KEY, **timeouts: float) -> ChatModel:
    model = provider(server, key, **timeouts).create("llm", "claude-test")
    assert isinstance(model, ChatModel)
    return model


async def test_text_streams_then_usage_and_finish(server: FakeAnthropic) -> None:
    server.reply("Hi there friend", chunks=["Hi", " there", " friend"], usage=(9, 3))
    events = [event async for event in chat(server).stream(HELLO)]
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hi", " there", " friend"]
    assert Usage(9, 3) in events
    assert events[-1].reason == "stop"  # type: ignore[union-attr]
    body = server.requests[-1].json
    assert body["system"] == "Be brief."
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]
    assert body["max_tokens"] == 4096


async def test_a_caller_is_told_as_the_call_starts(server: FakeAnthropic) -> None:
    """This provider (the SDK's) cannot tell when its request is sent: the guard tells the
    caller before calling it."""
    server.reply("Hi there", chunks=["Hi", " there"])
    guarded = GuardedChat([chat(server)], CallContext(uuid.uuid4(), None, None, {}, RetryPolicy()))
    seen: list[str] = []
    told = request_sent.set(lambda: seen.append(f"told, {len(server.requests)} received"))
    try:
        async for event in guarded.stream(HELLO):
            if isinstance(event, TextDelta):
                seen.append(event.text)
    finally:
        request_sent.reset(told)
    assert seen == ["told, 0 received", "Hi", " there"]


async def test_sampling_parameters_reach_the_server(server: FakeAnthropic) -> None:
    request = ChatRequest(
        [Message("user", "hi")], parameters={"temperature": 0.1, "max_tokens": 64, "stop": ["END"]}
    )
    await chat(server).complete(request)
    body = server.requests[-1].json
    assert (body["temperature"], body["max_tokens"], body["stop_sequences"]) == (0.1, 64, ["END"])


async def test_tool_use_is_streamed_and_reassembled(server: FakeAnthropic) -> None:
    server.reply_tool_calls(
        [ScriptedCall("get_time", {"tz": "UTC"}, id="toolu_1")], text="Let me see."
    )
    tool = ToolDefinition("get_time", "Current time", {"type": "object", "properties": {}})
    result = await chat(server).complete(ChatRequest([Message("user", "time?")], tools=[tool]))
    assert result.text == "Let me see."
    assert result.finish_reason == "tool_calls"
    assert [(c.id, c.name) for c in result.tool_calls] == [("toolu_1", "get_time")]
    assert json.loads(result.tool_calls[0].arguments) == {"tz": "UTC"}
    assert server.requests[-1].json["tools"][0]["input_schema"] == {
        "type": "object",
        "properties": {},
    }


async def test_a_tool_result_round_trip_is_sent_as_blocks(server: FakeAnthropic) -> None:
    call = ToolCall("toolu_1", "get_time", '{"tz": "UTC"}')
    request = ChatRequest(
        [
            Message("user", "time?"),
            Message("assistant", "", [call]),
            Message("tool", "12:00", tool_call_id="toolu_1"),
        ]
    )
    await chat(server).complete(request)
    messages = server.requests[-1].json["messages"]
    assert messages[1]["content"] == [
        {"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": {"tz": "UTC"}}
    ]
    assert messages[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "12:00"}
    ]


async def test_errors_are_typed(server: FakeAnthropic) -> None:
    with pytest.raises(InvalidCredentials):
        await chat(server, key="wrong").complete(HELLO)
    server.fail(429, "Number of requests has exceeded your rate limit", retry_after=2)
    with pytest.raises(RateLimited) as limited:
        await chat(server).complete(HELLO)
    assert limited.value.retry_after == 2
    server.fail(529, "Overloaded", error_type="overloaded_error")
    with pytest.raises(ProviderUnavailable):
        await chat(server).complete(HELLO)
    with pytest.raises(ContextTooLong, match="prompt is too long"):
        await chat(server).complete(ChatRequest([Message("user", "y" * 3000)]))
    unknown = provider(server).create("llm", "claude-nope")
    assert isinstance(unknown, ChatModel)
    with pytest.raises(UnknownModel):
        await unknown.complete(HELLO)


async def test_garbage_cut_and_slow_answers(server: FakeAnthropic) -> None:
    server.garbage()
    with pytest.raises(BadResponse):
        await chat(server).complete(HELLO)
    server.reply("one two three", cut_after=1)
    received: list[str] = []
    with pytest.raises(BadResponse, match="broke off"):
        await texts_into(received, chat(server).stream(HELLO))
    assert received == ["one"]
    server.reply("late", ttft=2.0)
    with pytest.raises(ModelTimeout):
        await chat(server, read=0.3).complete(HELLO)


async def test_validation_lists_models_with_the_key(server: FakeAnthropic) -> None:
    await provider(server).validate()
    assert server.requests[-1].path == "/v1/models"
    with pytest.raises(InvalidCredentials):
        await provider(server, key="wrong").validate()
    with pytest.raises(InvalidCredentials, match="API key is required"):
        await AnthropicProvider({}).validate()
