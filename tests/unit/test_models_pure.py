"""The model runtime's pure parts: crypto, retry timing, names, prices, wire formats."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from pathlib import Path

import numpy as np
import pytest

from tusk import crypto
from tusk.config import ConfigError
from tusk.models.credentials import seal, unseal
from tusk.models.errors import BadResponse, UnknownModel
from tusk.models.prices import load_prices, price_of
from tusk.models.providers.anthropic import to_wire
from tusk.models.providers.http_rerank import parse_results
from tusk.models.providers.local import mean_pool
from tusk.models.providers.openai_wire import message_to_wire
from tusk.models.registry import parse_model_name
from tusk.models.resilience import RetryPolicy, parse_retry_after, retry_delay
from tusk.models.types import (
    ChatEvent,
    Finish,
    ImagePart,
    Message,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    Usage,
    collect,
)

KEY = "a-secret-key-for-tests-0123456789abcdef"


def test_sealed_credentials_open_only_with_their_key_and_place() -> None:
    workspace = uuid.uuid4()
    blob = seal(KEY, workspace, "openai", {"api_key": "sk-live-1234"})
    assert b"sk-live-1234" not in blob
    assert unseal(KEY, workspace, "openai", blob) == {"api_key": "sk-live-1234"}
    with pytest.raises(crypto.DecryptionFailed):
        unseal("another-secret-key-of-enough-length!!", workspace, "openai", blob)
    with pytest.raises(crypto.DecryptionFailed):
        unseal(KEY, uuid.uuid4(), "openai", blob)  # copied to another workspace's row
    with pytest.raises(crypto.DecryptionFailed):
        unseal(KEY, workspace, "anthropic", blob)


def test_two_encryptions_of_one_value_differ() -> None:
    key = crypto.derive_key(KEY, "x")
    assert crypto.encrypt(key, b"v", "c") != crypto.encrypt(key, b"v", "c")


def test_masks_keep_the_prefix_and_last_four() -> None:
    assert crypto.mask("sk-proj-abcdefghijkl1234") == "sk-…1234"
    assert crypto.mask("AKIAabcdefgh9876") == "AK…9876"
    assert crypto.mask("short") == "…"
    assert crypto.mask("") == ""


def test_retry_delays_grow_with_jitter_and_honour_retry_after() -> None:
    policy = RetryPolicy(max_retries=5, base_delay=0.5, max_delay=4)
    assert [retry_delay(policy, n, None, 0.0) for n in (1, 2, 3, 4, 5)] == [0.25, 0.5, 1, 2, 2]
    assert retry_delay(policy, 1, None, 0.999) == pytest.approx(0.5, abs=0.001)
    assert retry_delay(policy, 1, 3.0, 0.5) == 3.0
    assert retry_delay(policy, 1, 99.0, 0.5) == 4  # capped


def test_retry_after_headers_are_read_in_all_their_forms() -> None:
    assert parse_retry_after({"Retry-After": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < (parse_retry_after({"retry-after": later}) or 0) <= 30
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_model_names_are_provider_colon_model() -> None:
    assert parse_model_name("openai:gpt-4o-mini") == ("openai", "gpt-4o-mini")
    assert parse_model_name("my-vllm:org/model:v2") == ("my-vllm", "org/model:v2")
    assert parse_model_name("langgenius/openai/openai:gpt-4o") == ("openai", "gpt-4o")
    for bad in ("gpt-4o", ":x", "openai:"):
        with pytest.raises(UnknownModel, match="provider:model"):
            parse_model_name(bad)


def test_prices_come_from_the_table_and_a_file(tmp_path: Path) -> None:
    prices = load_prices(None)
    assert price_of(prices, "openai:gpt-4o-mini").cost(1_000_000, 1_000_000) == Decimal("0.75")
    assert price_of(prices, "nobody:free").cost(10**6, 10**6) == 0
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"my-vllm:llama": {"input": 1, "output": 2, "currency": "EUR"}}))
    custom = price_of(load_prices(path), "my-vllm:llama")
    assert (custom.cost(500_000, 250_000), custom.currency) == (Decimal("1"), "EUR")
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="TUSK_MODEL_PRICES"):
        load_prices(path)


async def _events(*events: ChatEvent) -> AsyncIterator[ChatEvent]:
    for event in events:
        yield event


async def test_collect_reassembles_text_and_tool_calls() -> None:
    result = await collect(
        _events(
            TextDelta("Hel"),
            ToolCallDelta(1, "call_b", "second", '{"x"'),
            TextDelta("lo"),
            ToolCallDelta(0, "call_a", "first", ""),
            ToolCallDelta(0, None, None, '{"tz": "UTC"}'),
            ToolCallDelta(1, None, None, ": 1}"),
            Usage(10, 4),
            Finish("tool_calls"),
        )
    )
    assert result.text == "Hello"
    assert result.tool_calls == [
        ToolCall("call_a", "first", '{"tz": "UTC"}'),
        ToolCall("call_b", "second", '{"x": 1}'),
    ]
    assert (result.usage.total_tokens, result.finish_reason) == (14, "tool_calls")


def test_openai_wire_messages() -> None:
    user = Message("user", [TextPart("what is this?"), ImagePart("https://x/cat.png", "low")])
    assert message_to_wire(user) == {
        "role": "user",
        "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "https://x/cat.png", "detail": "low"}},
        ],
    }
    call = ToolCall("c1", "get_time", '{"tz":"UTC"}')
    assert message_to_wire(Message("assistant", "", [call]))["tool_calls"] == [
        {
            "id": "c1",
            "type": "function",
            "function": {"name": "get_time", "arguments": '{"tz":"UTC"}'},
        }
    ]
    assert message_to_wire(Message("tool", "12:00", tool_call_id="c1")) == {
        "role": "tool",
        "content": "12:00",
        "tool_call_id": "c1",
    }


def test_anthropic_wire_moves_the_system_prompt_and_merges_tool_results() -> None:
    messages = [
        Message("system", "Be brief."),
        Message("user", [TextPart("hi"), ImagePart("data:image/png;base64,AAAA")]),
        Message(
            "assistant",
            "let me check",
            [ToolCall("t1", "a", "{}"), ToolCall("t2", "b", '{"k": 1}')],
        ),
        Message("tool", "ra", tool_call_id="t1"),
        Message("tool", "rb", tool_call_id="t2"),
    ]
    system, turns = to_wire(messages)
    assert system == "Be brief."
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[0]["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
    }
    assert turns[1]["content"][2] == {
        "type": "tool_use",
        "id": "t2",
        "name": "b",
        "input": {"k": 1},
    }
    assert [b["tool_use_id"] for b in turns[2]["content"]] == ["t1", "t2"]


def test_rerank_answers_of_both_shapes_are_read_best_first() -> None:
    cohere = {
        "results": [{"index": 0, "relevance_score": 0.1}, {"index": 1, "relevance_score": 0.9}]
    }
    assert [r.index for r in parse_results("m", cohere)] == [1, 0]
    tei = [{"index": 0, "score": 0.2}, {"index": 2, "score": 0.7}]
    assert [(r.index, r.score) for r in parse_results("m", tei)] == [(2, 0.7), (0, 0.2)]
    with pytest.raises(BadResponse):
        parse_results("m", {"data": []})


def test_mean_pooling_ignores_padding_and_normalises() -> None:
    hidden = np.array([[[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]]])
    mask = np.array([[1, 1, 0]])
    pooled = mean_pool(hidden, mask)
    assert pooled.tolist() == [[1.0, 0.0]]
