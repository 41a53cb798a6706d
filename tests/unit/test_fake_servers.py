"""The fake OpenAI and Anthropic servers, driven over real HTTP by the official SDKs (and by plain
httpx where an SDK would not send what is being tested)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

from tusk.testing.anthropic_server import FakeAnthropic
from tusk.testing.openai_server import FakeOpenAI, ToolCall, fake_embedding

OPENAI_KEY = "sk-test"
ANTHROPIC_KEY = "ak-test"
USER = [{"role": "user", "content": "What time is it"}]


# Fixtures: one server of each kind per module, cleared before each test.


@pytest.fixture(scope="module")
def openai_module() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(
        api_key=OPENAI_KEY,
        models=("gpt-test", "embed-test", "embed-big", "rerank-test"),
        embedding_dims={"embed-test": 8, "embed-big": 40},
        context_chars=200,
    ) as server:
        yield server


@pytest.fixture
def oai(openai_module: FakeOpenAI) -> FakeOpenAI:
    openai_module.clear()
    return openai_module


@pytest.fixture
async def client(oai: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(api_key=OPENAI_KEY, base_url=oai.base_url, max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def anthropic_module() -> Iterator[FakeAnthropic]:
    with FakeAnthropic(api_key=ANTHROPIC_KEY, models=("claude-test",), context_chars=200) as server:
        yield server


@pytest.fixture
def ant(anthropic_module: FakeAnthropic) -> FakeAnthropic:
    anthropic_module.clear()
    return anthropic_module


@pytest.fixture
async def claude(ant: FakeAnthropic) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        api_key=ANTHROPIC_KEY, base_url=ant.base_url, max_retries=0
    ) as c:
        yield c


async def chat(client: openai.AsyncOpenAI, **extra: Any) -> Any:
    return await client.chat.completions.create(model="gpt-test", messages=USER, **extra)


async def drain(stream: AsyncIterator[Any], into: list[Any]) -> None:
    """Consume `stream`, keeping what arrived before it ended or failed."""
    async for item in stream:
        into.append(item)


async def message(claude: anthropic.AsyncAnthropic, **extra: Any) -> Any:
    arguments: dict[str, Any] = {"model": "claude-test", "max_tokens": 100, "messages": USER}
    return await claude.messages.create(**{**arguments, **extra})


# Running.


def test_base_urls_point_at_loopback(oai: FakeOpenAI, ant: FakeAnthropic) -> None:
    assert oai.base_url.startswith("http://127.0.0.1:")
    assert oai.base_url.endswith("/v1")
    assert ant.base_url == ant.url
    assert ant.base_url != oai.url


def test_a_sync_client_works_and_stop_closes_the_port() -> None:
    server = FakeOpenAI().start()
    url = server.base_url
    try:
        server.reply("From a sync test")
        with openai.OpenAI(api_key="anything", base_url=url, max_retries=0) as sync_client:
            reply = sync_client.chat.completions.create(model="any", messages=USER)
        assert reply.choices[0].message.content == "From a sync test"
    finally:
        server.stop()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.base_url
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/models")


def test_chunks_that_do_not_join_to_the_text_are_refused(oai: FakeOpenAI) -> None:
    with pytest.raises(ValueError, match="do not join"):
        oai.reply("Hello there", chunks=["Hello", "here"])


# OpenAI: chat completions.


async def test_stream_arrives_in_the_scripted_chunks_with_usage_last(
    oai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    oai.reply("Hello there", chunks=["Hel", "lo there"], usage=(12, 3))
    stream = await chat(client, stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert pieces == ["Hel", "lo there"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (12, 3)
    assert {c.model for c in chunks} == {"gpt-test"}


async def test_stream_without_include_usage_has_no_usage_chunk(
    oai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    oai.reply("One two three")
    chunks = [chunk async for chunk in await chat(client, stream=True)]
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert pieces == ["One", " two", " three"]
    assert all(c.usage is None and c.choices for c in chunks)


async def test_ttft_delays_the_first_chunk(oai: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    oai.reply("Slow start", ttft=0.2)
    started = time.monotonic()
    stream = await chat(client, stream=True)
    first = await stream.__anext__()
    assert time.monotonic() - started >= 0.2
    assert first.choices[0].delta.role == "assistant"
    await stream.close()


async def test_delay_separates_the_chunks(oai: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    oai.reply("a b c", delay=0.06)
    started = time.monotonic()
    pieces = []
    async for chunk in await chat(client, stream=True):
        pieces += [chunk.choices[0].delta.content] if chunk.choices[0].delta.content else []
    # Measured from the start, as a client's own slowness can only lengthen this.
    assert time.monotonic() - started >= 0.12
    assert pieces == ["a", " b", " c"]


async def test_non_streamed_reply(oai: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    oai.reply("Hello there", usage=(7, 2), finish_reason="length")
    completion = await chat(client)
    assert completion.choices[0].message.content == "Hello there"
    assert completion.choices[0].finish_reason == "length"
    assert completion.model == "gpt-test"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.total_tokens) == (7, 9)


async def test_non_streamed_ttft(oai: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    oai.reply("Late", ttft=0.2)
    started = time.monotonic()
    await chat(client)
    assert time.monotonic() - started >= 0.2


async def test_without_a_script_the_last_user_message_is_echoed(
    client: openai.AsyncOpenAI,
) -> None:
    messages: Any = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "first"}]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "second question"}]},
    ]
    completion = await client.chat.completions.create(model="gpt-test", messages=messages)
    assert completion.choices[0].message.content == "Echo: second question"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 6  # words in all the messages


async def test_replies_are_used_in_order_then_echo(
    oai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    oai.reply("first")
    oai.reply("second")
    contents = [(await chat(client)).choices[0].message.content for _ in range(3)]
    assert contents == ["first", "second", "Echo: What time is it"]


async def test_streamed_tool_calls_reassemble(oai: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    calls = [
        ToolCall(name="get_time", arguments={"tz": "Europe/Paris", "format": "iso 8601"}),
        ToolCall(name="add", arguments={"a": 1, "b": [2, 3]}, id="call_fixed"),
    ]
    oai.reply_tool_calls(calls)
    assembled: dict[int, dict[str, Any]] = {}
    fragments = 0
    finish = None
    async for chunk in await chat(client, stream=True):
        finish = chunk.choices[0].finish_reason or finish
        for delta in chunk.choices[0].delta.tool_calls or []:
            call = assembled.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
            assert delta.function is not None
            if delta.id:
                assert delta.function.name  # the head comes first
                assert not call["arguments"]
                call["id"], call["name"] = delta.id, delta.function.name
            else:
                fragments += 1
            call["arguments"] += delta.function.arguments or ""
    assert finish == "tool_calls"
    assert [assembled[i]["name"] for i in (0, 1)] == ["get_time", "add"]
    assert [json.loads(assembled[i]["arguments"]) for i in (0, 1)] == [c.arguments for c in calls]
    assert assembled[0]["id"].startswith("call_")
    assert assembled[1]["id"] == "call_fixed"
    assert fragments > 4


async def test_non_streamed_tool_calls(oai: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    oai.reply_tool_calls([ToolCall("get_time", {"tz": "UTC"}, id="call_1")], text="Checking.")
    completion = await chat(client)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Checking."
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert (call.id, call.function.name) == ("call_1", "get_time")
    assert json.loads(call.function.arguments) == {"tz": "UTC"}


async def test_streamed_text_then_tool_call(oai: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    oai.reply_tool_calls([ToolCall("lookup", {"q": "x"})], text="Let me look.")
    text = ""
    names = []
    async for chunk in await chat(client, stream=True):
        delta = chunk.choices[0].delta
        text += delta.content or ""
        names += [c.function.name for c in delta.tool_calls or [] if c.function and c.function.name]
    assert (text, names) == ("Let me look.", ["lookup"])


async def test_cut_stream_raises_before_completing(
    oai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    oai.reply("one two three four", cut_after=2)
    chunks: list[Any] = []
    stream = await chat(client, stream=True)
    with pytest.raises(openai.APIConnectionError):
        await drain(stream, chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "one two"
    assert not any(c.choices[0].finish_reason for c in chunks)


async def test_cut_after_every_chunk_still_drops_the_end(
    oai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    oai.reply("one two", cut_after=5)
    chunks: list[Any] = []
    stream = await chat(client, stream=True)
    with pytest.raises(openai.APIConnectionError):
        await drain(stream, chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "one two"


# OpenAI: errors.


async def test_wrong_or_missing_key_is_401(oai: FakeOpenAI) -> None:
    async with openai.AsyncOpenAI(
        api_key="sk-wrong-key", base_url=oai.base_url, max_retries=0
    ) as c:
        with pytest.raises(openai.AuthenticationError) as raised:
            await chat(c)
    assert raised.value.code == "invalid_api_key"
    async with httpx.AsyncClient() as raw:
        response = await raw.post(oai.base_url + "/chat/completions", json={"model": "gpt-test"})
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["message"].startswith("Incorrect API key provided")
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        None,
        "invalid_api_key",
    )


async def test_scripted_429_carries_retry_after_and_then_passes(
    oai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    oai.fail(429, "Rate limit reached", retry_after=1.5, code="rate_limit_exceeded")
    oai.reply("after the wait")
    with pytest.raises(openai.RateLimitError) as raised:
        await chat(client)
    assert raised.value.response.headers["retry-after"] == "1.5"
    assert raised.value.code == "rate_limit_exceeded"
    assert raised.value.body == {
        "message": "Rate limit reached",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    assert (await chat(client)).choices[0].message.content == "after the wait"


async def test_failures_repeat_times_and_hit_embeddings_too(
    oai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    oai.fail(500, times=2)
    with pytest.raises(openai.InternalServerError) as raised:
        await client.embeddings.create(model="embed-test", input="x")
    assert "retry-after" not in raised.value.response.headers
    with pytest.raises(openai.InternalServerError):
        await chat(client)
    assert (await chat(client)).choices[0].message.content == "Echo: What time is it"


async def test_unknown_model_is_404(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        await client.chat.completions.create(model="gpt-nope", messages=USER)
    assert raised.value.code == "model_not_found"
    assert "gpt-nope" in raised.value.message


async def test_too_long_for_the_context_is_400(client: openai.AsyncOpenAI) -> None:
    messages: Any = [{"role": "user", "content": "x" * 201}]
    with pytest.raises(openai.BadRequestError) as raised:
        await client.chat.completions.create(model="gpt-test", messages=messages)
    assert raised.value.code == "context_length_exceeded"
    assert "maximum context length is 200" in raised.value.message


async def test_garbage_body_fails_to_decode(oai: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    oai.garbage()
    # The SDK parses the body with json.loads and lets its error through unwrapped.
    with pytest.raises(json.JSONDecodeError):
        await chat(client)
    assert (await chat(client)).choices[0].message.content == "Echo: What time is it"


async def test_garbage_stream_event_fails_to_decode(
    oai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    oai.garbage()
    stream = await chat(client, stream=True)
    with pytest.raises(json.JSONDecodeError):
        await drain(stream, [])


def test_bad_json_body_is_400(oai: FakeOpenAI) -> None:
    headers = {"authorization": f"Bearer {OPENAI_KEY}", "content-type": "application/json"}
    response = httpx.post(oai.base_url + "/chat/completions", content=b"{", headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert oai.requests[-1].json is None
    assert oai.requests[-1].body == b"{"


def test_unknown_path_is_404_and_recorded(oai: FakeOpenAI) -> None:
    headers = {"authorization": f"Bearer {OPENAI_KEY}"}
    response = httpx.post(oai.url + "/v1/v1/chat/completions", headers=headers)
    assert response.status_code == 404
    assert "/v1/v1/chat/completions" in response.json()["error"]["message"]
    assert [r.path for r in oai.requests] == ["/v1/v1/chat/completions"]


# OpenAI: recording.


async def test_requests_are_recorded_with_their_body(
    oai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    await chat(client, temperature=0.5)
    [request] = oai.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert request.json == {"model": "gpt-test", "messages": USER, "temperature": 0.5}


async def test_clear_drops_scripts_and_requests(
    oai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    oai.reply("scripted")
    oai.fail(500)
    oai.clear()
    assert oai.requests == []
    assert (await chat(client)).choices[0].message.content == "Echo: What time is it"


# OpenAI: embeddings, rerank, models.


async def test_embeddings_are_deterministic_unit_vectors(client: openai.AsyncOpenAI) -> None:
    result = await client.embeddings.create(
        model="embed-test", input=["alpha", "beta gamma", "alpha"], encoding_format="float"
    )
    vectors = [item.embedding for item in result.data]
    assert [len(v) for v in vectors] == [8, 8, 8]
    assert all(math.isclose(math.hypot(*v), 1.0, rel_tol=1e-9) for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    assert vectors[0] == fake_embedding("alpha", 8)
    assert (result.usage.prompt_tokens, result.usage.total_tokens) == (4, 4)


async def test_embeddings_in_the_sdk_default_base64(
    oai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    result = await client.embeddings.create(model="embed-big", input="alpha")
    assert oai.requests[-1].json["encoding_format"] == "base64"  # what the SDK asks for
    [vector] = [item.embedding for item in result.data]
    assert len(vector) == 40
    expected = fake_embedding("alpha", 40)
    assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(vector, expected, strict=True))


async def test_embeddings_honour_dimensions(client: openai.AsyncOpenAI) -> None:
    result = await client.embeddings.create(
        model="embed-test", input="alpha", dimensions=3, encoding_format="float"
    )
    assert len(result.data[0].embedding) == 3


async def test_embeddings_reject_empty_input(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await client.embeddings.create(model="embed-test", input=[], encoding_format="float")
    assert raised.value.param == "input"


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank"])
def test_rerank_orders_by_word_overlap(oai: FakeOpenAI, path: str) -> None:
    body = {
        "model": "rerank-test",
        "query": "Red apple pie",
        "documents": ["green pear", "a red apple", "apple PIE with red berries", "red car"],
        "top_n": 3,
    }
    headers = {"authorization": f"Bearer {OPENAI_KEY}"}
    response = httpx.post(oai.url + path, json=body, headers=headers)
    assert response.status_code == 200
    answer = response.json()
    assert [(r["index"], round(r["relevance_score"], 3)) for r in answer["results"]] == [
        (2, 1.0),
        (1, 0.667),
        (3, 0.333),
    ]
    assert answer["model"] == "rerank-test"
    assert answer["usage"]["total_tokens"] > 0


def test_rerank_may_return_documents(oai: FakeOpenAI) -> None:
    body = {"model": "rerank-test", "query": "b", "documents": [{"text": "a"}, {"text": "b"}]}
    body["return_documents"] = True
    headers = {"authorization": f"Bearer {OPENAI_KEY}"}
    results = httpx.post(oai.base_url + "/rerank", json=body, headers=headers).json()["results"]
    assert [(r["index"], r["document"]["text"]) for r in results] == [(1, "b"), (0, "a")]


async def test_models_are_listed(client: openai.AsyncOpenAI) -> None:
    models = [model async for model in client.models.list()]
    assert [m.id for m in models] == ["gpt-test", "embed-test", "embed-big", "rerank-test"]
    assert {m.object for m in models} == {"model"}
    assert (await client.models.retrieve("gpt-test")).id == "gpt-test"


# Anthropic.


async def test_anthropic_stream_in_the_scripted_chunks(
    ant: FakeAnthropic, claude: anthropic.AsyncAnthropic
) -> None:
    ant.reply("Hello there", chunks=["Hel", "lo there"], usage=(12, 3))
    events = [event async for event in await message(claude, stream=True)]
    types = [e.type for e in events]
    assert types[0] == "message_start"
    assert types[-2:] == ["message_delta", "message_stop"]
    assert events[0].message.usage.input_tokens == 12
    texts = [e.delta.text for e in events if e.type == "content_block_delta"]
    assert texts == ["Hel", "lo there"]
    delta = events[-2]
    assert (delta.delta.stop_reason, delta.usage.output_tokens) == ("end_turn", 3)


async def test_anthropic_ttft(ant: FakeAnthropic, claude: anthropic.AsyncAnthropic) -> None:
    ant.reply("Slow", ttft=0.2)
    started = time.monotonic()
    stream = await message(claude, stream=True)
    await stream.__anext__()
    assert time.monotonic() - started >= 0.2
    await stream.close()


async def test_anthropic_non_streamed(ant: FakeAnthropic, claude: anthropic.AsyncAnthropic) -> None:
    ant.reply("Hi there", usage=(5, 2), finish_reason="length")
    reply = await message(claude)
    assert [(b.type, b.text) for b in reply.content] == [("text", "Hi there")]
    assert (reply.model, reply.role, reply.stop_reason) == (
        "claude-test",
        "assistant",
        "max_tokens",
    )
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (5, 2)


async def test_anthropic_echo(claude: anthropic.AsyncAnthropic) -> None:
    messages: Any = [{"role": "user", "content": [{"type": "text", "text": "blocks too"}]}]
    reply = await message(claude, system="Be brief.", messages=messages)
    assert reply.content[0].text == "Echo: blocks too"
    assert reply.usage.input_tokens == 4  # the system prompt counts


async def test_anthropic_tool_use_streams_input_json(
    ant: FakeAnthropic, claude: anthropic.AsyncAnthropic
) -> None:
    arguments = {"tz": "Europe/Paris", "format": "iso 8601"}
    ant.reply_tool_calls([ToolCall("get_time", arguments)], text="Checking.")
    events = [event async for event in await message(claude, stream=True)]
    starts = [e.content_block for e in events if e.type == "content_block_start"]
    assert [b.type for b in starts] == ["text", "tool_use"]
    assert starts[1].name == "get_time"
    assert starts[1].id.startswith("toolu_")
    partial = [
        e.delta.partial_json
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]
    assert len(partial) > 1
    assert json.loads("".join(partial)) == arguments
    assert events[-2].delta.stop_reason == "tool_use"


async def test_anthropic_stream_helper_assembles_tool_use(
    ant: FakeAnthropic, claude: anthropic.AsyncAnthropic
) -> None:
    ant.reply_tool_calls([ToolCall("add", {"a": 1, "b": 2}, id="toolu_fixed")])
    async with claude.messages.stream(model="claude-test", max_tokens=50, messages=USER) as stream:
        final = await stream.get_final_message()
    [block] = final.content
    assert block.type == "tool_use"
    assert (block.id, block.name, block.input) == ("toolu_fixed", "add", {"a": 1, "b": 2})
    assert final.stop_reason == "tool_use"


async def test_anthropic_non_streamed_tool_use(
    ant: FakeAnthropic, claude: anthropic.AsyncAnthropic
) -> None:
    ant.reply_tool_calls([ToolCall("get_time", {"tz": "UTC"})])
    reply = await message(claude)
    [block] = reply.content
    assert block.type == "tool_use"
    assert (block.name, block.input, reply.stop_reason) == ("get_time", {"tz": "UTC"}, "tool_use")


async def test_anthropic_429_with_retry_after(
    ant: FakeAnthropic, claude: anthropic.AsyncAnthropic
) -> None:
    ant.fail(429, "Slow down", retry_after=2)
    with pytest.raises(anthropic.RateLimitError) as raised:
        await message(claude)
    assert raised.value.response.headers["retry-after"] == "2"
    assert raised.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Slow down"},
    }
    assert (await message(claude)).content[0].text == "Echo: What time is it"


async def test_anthropic_overloaded(ant: FakeAnthropic, claude: anthropic.AsyncAnthropic) -> None:
    ant.fail(529)
    with pytest.raises(anthropic.OverloadedError) as raised:
        await message(claude)
    assert raised.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


async def test_anthropic_wrong_key_is_401(ant: FakeAnthropic) -> None:
    async with anthropic.AsyncAnthropic(
        api_key="wrong", base_url=ant.base_url, max_retries=0
    ) as wrong:
        with pytest.raises(anthropic.AuthenticationError) as raised:
            await message(wrong)
    assert raised.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
    }


def test_anthropic_accepts_the_x_api_key_header(ant: FakeAnthropic) -> None:
    body = {"model": "claude-test", "max_tokens": 10, "messages": USER}
    headers = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
    response = httpx.post(ant.url + "/v1/messages", json=body, headers=headers)
    assert response.status_code == 200
    assert response.json()["content"][0]["text"] == "Echo: What time is it"


@pytest.mark.parametrize(
    ("drop", "message_part"),
    [("anthropic-version", "anthropic-version"), ("max_tokens", "max_tokens")],
)
def test_anthropic_requires_version_and_max_tokens(
    ant: FakeAnthropic, drop: str, message_part: str
) -> None:
    body = {"model": "claude-test", "max_tokens": 10, "messages": USER}
    headers = {"x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
    body.pop(drop, None)
    headers.pop(drop, None)
    response = httpx.post(ant.url + "/v1/messages", json=body, headers=headers)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert message_part in error["message"]


async def test_anthropic_unknown_model_is_404(claude: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as raised:
        await message(claude, model="claude-nope")
    assert raised.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "model: claude-nope"},
    }


async def test_anthropic_prompt_too_long(claude: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        await message(claude, system="s" * 150, messages=[{"role": "user", "content": "u" * 60}])
    assert "prompt is too long: 210 tokens > 200 maximum" in raised.value.message


async def test_anthropic_garbage(ant: FakeAnthropic, claude: anthropic.AsyncAnthropic) -> None:
    ant.garbage(times=2)
    with pytest.raises(json.JSONDecodeError):
        await message(claude)
    stream = await message(claude, stream=True)
    with pytest.raises(json.JSONDecodeError):
        await drain(stream, [])


async def test_anthropic_cut_stream(ant: FakeAnthropic, claude: anthropic.AsyncAnthropic) -> None:
    ant.reply("one two three", cut_after=1)
    events: list[Any] = []
    stream = await message(claude, stream=True)
    # This SDK does not wrap the transport error of a stream cut mid-way.
    with pytest.raises(httpx2.RemoteProtocolError):
        await drain(stream, events)
    assert [e.type for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
    ]


async def test_anthropic_records_version_and_body(
    ant: FakeAnthropic, claude: anthropic.AsyncAnthropic
) -> None:
    await message(claude, stop_sequences=["END"])
    [request] = ant.requests
    assert request.path == "/v1/messages"
    assert request.headers["anthropic-version"]
    assert request.json == {
        "model": "claude-test",
        "max_tokens": 100,
        "messages": USER,
        "stop_sequences": ["END"],
    }


async def test_anthropic_models_are_listed(claude: anthropic.AsyncAnthropic) -> None:
    models = [model async for model in claude.models.list()]
    assert [m.id for m in models] == ["claude-test"]
