"""The `openai` provider over real HTTP, against a local server that speaks OpenAI's protocol."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest

from tests.support.models import texts_into
from tusk.models.base import ChatModel, EmbeddingModel, RerankModel, Timeouts, request_sent
from tusk.models.errors import (
    BadResponse,
    ContextTooLong,
    InvalidCredentials,
    ModelTimeout,
    ProviderUnavailable,
    RateLimited,
    UnknownModel,
)
from tusk.models.providers.openai import OpenAIProvider
from tusk.models.types import (
    ChatRequest,
    ImagePart,
    Message,
    TextDelta,
    TextPart,
    ToolDefinition,
    Usage,
)
from tusk.testing.openai_server import FakeOpenAI, fake_embedding
from tusk.testing.openai_server import ToolCall as ScriptedCall

KEY = "sk-test-0000"
HELLO = ChatRequest([Message("system", "Be brief."), Message("user", "Hello")])


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    models = ("gpt-test", "embed-test", "rerank-test")
    with FakeOpenAI(
        api_key=KEY, models=models, embedding_dims={"embed-test": 16}, context_chars=2000
    ) as fake:
        yield fake


MADE: list[OpenAIProvider] = []


@pytest.fixture(autouse=True)
async def fresh(server: FakeOpenAI) -> AsyncIterator[None]:
    server.clear()
    yield
    while MADE:  # close their HTTP clients while this test's event loop still runs
        await MADE.pop().aclose()


def provider(server: FakeOpenAI, key: str = KEY, **timeouts: float) -> OpenAIProvider:
    made = OpenAIProvider(
        {"api_key": key, "base_url": server.base_url}, timeouts=Timeouts(**timeouts)
    )
    MADE.append(made)
    return made


def chat(server: FakeOpenAI, key: str = KEY, **timeouts: float) -> ChatModel:
    model = provider(server, key, **timeouts).create("llm", "gpt-test")
    assert isinstance(model, ChatModel)
    return model


async def test_text_streams_in_the_servers_chunks_then_usage_and_finish(server: FakeOpenAI) -> None:
    server.reply("Hi there friend", chunks=["Hi", " there", " friend"], usage=(7, 3))
    events = [event async for event in chat(server).stream(HELLO)]
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["Hi", " there", " friend"]
    assert Usage(7, 3) in events
    assert events[-1].reason == "stop"  # type: ignore[union-attr]
    body = server.requests[-1].json
    assert body["model"] == "gpt-test"
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert server.requests[-1].headers["authorization"] == f"Bearer {KEY}"


async def test_an_event_of_any_length_is_read(server: FakeOpenAI) -> None:
    """A server may send a whole answer as one event: one line of the stream, here 1 MB."""
    text = "word " * 200_000
    server.reply(text, chunks=[text])
    events = [event async for event in chat(server).stream(HELLO)]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == text


async def test_streamed_chats_reuse_one_connection(server: FakeOpenAI) -> None:
    model = chat(server)
    for _ in range(3):
        assert (await model.complete(HELLO)).text == "Echo: Hello"
    assert len({request.client for request in server.requests}) == 1


def through_proxy(
    server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, no_proxy: str = ""
) -> ChatModel:
    """A model at a host that does not exist, with the test server named as the proxy: a
    proxied request names its target in its request line, and the server routes it by path."""
    monkeypatch.setenv("http_proxy", server.url)
    monkeypatch.setenv("no_proxy", no_proxy)
    made = OpenAIProvider({"api_key": KEY, "base_url": "http://model.invalid/v1"})
    MADE.append(made)
    model = made.create("llm", "gpt-test")
    assert isinstance(model, ChatModel)
    return model


async def test_streamed_chats_go_through_the_proxy_the_environment_names(
    server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await through_proxy(server, monkeypatch).complete(HELLO)).text == "Echo: Hello"
    assert server.requests[-1].headers["host"] == "model.invalid"


async def test_a_host_in_no_proxy_is_reached_directly(
    server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = through_proxy(server, monkeypatch, no_proxy="model.invalid")
    with pytest.raises(ProviderUnavailable, match="cannot connect"):
        await model.complete(HELLO)
    assert server.requests == []


async def test_a_caller_is_told_once_when_the_request_is_sent(server: FakeOpenAI) -> None:
    server.reply("Hi there", chunks=["Hi", " there"], ttft=0.2)
    seen: list[str] = []
    told = request_sent.set(lambda: seen.append(f"sent, {len(server.requests)} received"))
    try:
        async for event in chat(server).stream(HELLO):
            if isinstance(event, TextDelta):
                seen.append(event.text)
    finally:
        request_sent.reset(told)
    assert seen[0].startswith("sent")
    assert seen[1:] == ["Hi", " there"]


async def test_parameters_and_images_reach_the_server_as_given(server: FakeOpenAI) -> None:
    request = ChatRequest(
        [Message("user", [TextPart("what is it?"), ImagePart("https://img.example/cat.png")])],
        parameters={"temperature": 0.2, "max_tokens": 50, "top_k": 5},
    )
    result = await chat(server).complete(request)
    assert result.text == "Echo: what is it?"
    body = server.requests[-1].json
    assert (body["temperature"], body["max_tokens"], body["top_k"]) == (0.2, 50, 5)
    assert body["messages"][0]["content"][1]["image_url"]["url"] == "https://img.example/cat.png"


async def test_tool_calls_are_streamed_and_reassembled(server: FakeOpenAI) -> None:
    server.reply_tool_calls(
        [ScriptedCall("get_time", {"tz": "Europe/Paris"}, id="call_1"), ScriptedCall("noop")]
    )
    tool = ToolDefinition("get_time", "Current time", {"type": "object", "properties": {}})
    result = await chat(server).complete(ChatRequest([Message("user", "time?")], tools=[tool]))
    assert result.finish_reason == "tool_calls"
    first = result.tool_calls[0]
    assert (first.id, first.name) == ("call_1", "get_time")
    assert json.loads(first.arguments) == {"tz": "Europe/Paris"}
    assert result.tool_calls[1].name == "noop"
    assert server.requests[-1].json["tools"][0]["function"]["name"] == "get_time"


async def test_errors_are_typed_and_keep_the_providers_words(server: FakeOpenAI) -> None:
    with pytest.raises(InvalidCredentials, match="Incorrect API key"):
        await chat(server, key="sk-wrong").complete(HELLO)
    server.fail(429, "Rate limit reached for requests", retry_after=1.5)
    with pytest.raises(RateLimited) as limited:
        await chat(server).complete(HELLO)
    assert limited.value.retry_after == 1.5
    assert "gpt-test" in str(limited.value)
    server.fail(503)
    with pytest.raises(ProviderUnavailable):
        await chat(server).complete(HELLO)
    with pytest.raises(ContextTooLong, match="maximum context length"):
        await chat(server).complete(ChatRequest([Message("user", "x" * 3000)]))
    unknown = provider(server).create("llm", "no-such-model")
    assert isinstance(unknown, ChatModel)
    with pytest.raises(UnknownModel):
        await unknown.complete(HELLO)


async def test_garbage_and_cut_streams_are_bad_responses(server: FakeOpenAI) -> None:
    server.garbage()
    with pytest.raises(BadResponse, match="not OpenAI's protocol"):
        await chat(server).complete(HELLO)
    server.reply("one two three four", cut_after=2)
    received: list[str] = []
    with pytest.raises(BadResponse, match="broke off"):
        await texts_into(received, chat(server).stream(HELLO))
    assert received == ["one", " two"]


async def test_an_endpoint_that_is_not_openai_compatible_says_so(server: FakeOpenAI) -> None:
    wrong = OpenAIProvider({"api_key": KEY, "base_url": server.url + "/nothing-here"})
    MADE.append(wrong)
    model = wrong.create("llm", "gpt-test")
    assert isinstance(model, ChatModel)
    with pytest.raises((BadResponse, UnknownModel), match="404"):
        await model.complete(HELLO)


async def test_nothing_hangs_a_slow_server_times_out(server: FakeOpenAI) -> None:
    server.reply("late", ttft=2.0)
    started = time.monotonic()
    with pytest.raises(ModelTimeout):
        await chat(server, read=0.3).complete(HELLO)
    assert time.monotonic() - started < 1.5


async def test_a_closed_port_is_unavailable() -> None:
    with FakeOpenAI() as gone:
        base_url = gone.base_url
    gone_provider = OpenAIProvider({"base_url": base_url})
    MADE.append(gone_provider)
    model = gone_provider.create("llm", "m")
    assert isinstance(model, ChatModel)
    with pytest.raises(ProviderUnavailable, match="cannot connect"):
        await model.complete(HELLO)


async def test_stopping_early_ends_the_upstream_request(server: FakeOpenAI) -> None:
    server.reply("a b c d e f g h", delay=0.5)
    started = time.monotonic()
    stream = chat(server).stream(HELLO)
    first = await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    assert first == TextDelta("a")
    assert time.monotonic() - started < 1.0  # not the 3.5 s the whole answer takes


async def test_embeddings_come_back_in_order_and_in_batches(server: FakeOpenAI) -> None:
    model = provider(server).create("text-embedding", "embed-test")
    assert isinstance(model, EmbeddingModel)
    model.max_batch = 4
    texts = [f"passage {i}" for i in range(10)]
    vectors = await model.embed(texts)
    assert np.allclose(vectors, [fake_embedding(t, 16) for t in texts])
    calls = [r for r in server.requests if r.path.endswith("/embeddings")]
    assert [len(r.json["input"]) for r in calls] == [4, 4, 2]


async def test_rerank_goes_to_the_servers_rerank_endpoint(server: FakeOpenAI) -> None:
    model = provider(server).create("rerank", "rerank-test")
    assert isinstance(model, RerankModel)
    documents = ["the cat sat", "dogs bark loudly", "a cat and a dog"]
    results = await model.rerank("cat dog", documents, top_n=2)
    assert [r.index for r in results] == [2, 0]
    assert results[0].score > results[1].score
    assert server.requests[-1].path == "/v1/rerank"


async def test_validation_makes_a_real_call(server: FakeOpenAI) -> None:
    await provider(server).validate()
    assert server.requests[-1].path == "/v1/models"
    with pytest.raises(InvalidCredentials):
        await provider(server, key="sk-nope").validate()


async def test_azure_openai_is_reached_through_its_deployment_paths(server: FakeOpenAI) -> None:
    azure = OpenAIProvider({"api_key": KEY, "base_url": server.url, "api_version": "2024-06-01"})
    MADE.append(azure)
    model = azure.create("llm", "gpt-test")
    assert isinstance(model, ChatModel)
    assert (await model.complete(HELLO)).text == "Echo: Hello"
    request = server.requests[-1]
    assert request.path == "/openai/deployments/gpt-test/chat/completions"
    assert request.headers["api-key"] == KEY
    await azure.validate()
