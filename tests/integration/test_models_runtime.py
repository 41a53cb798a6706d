"""The model runtime on a real database: credentials, defaults, retries, fallbacks, usage."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.api import SECRET, make_settings
from tests.support.models import texts_into
from tusk.db.engine import session_factory
from tusk.db.models import Workspace
from tusk.db.pubsub import Broker
from tusk.models import admin, credentials
from tusk.models.credentials import StoredProvider
from tusk.models.errors import BadResponse, MissingCredentials, RateLimited, UnknownModel
from tusk.models.resilience import RetryPolicy
from tusk.models.runtime import ModelRuntime, model_settings
from tusk.models.types import ChatRequest, Message
from tusk.models.usage import UsageRecorder
from tusk.testing.openai_server import FakeOpenAI

KEY = "sk-test-runtime"
HELLO = ChatRequest([Message("user", "Hello")])


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY, models=("gpt-test", "gpt-backup", "embed-test")) as fake:
        yield fake


@pytest.fixture(scope="module")
def backup() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(models=("other-model",)) as fake:
        yield fake


@pytest.fixture(autouse=True)
def fresh(server: FakeOpenAI, backup: FakeOpenAI) -> None:
    server.clear()
    backup.clear()


async def new_workspace(engine: AsyncEngine) -> uuid.UUID:
    async with session_factory(engine).begin() as db:
        workspace = Workspace(name="w")
        db.add(workspace)
        await db.flush()
        return workspace.id


@pytest.fixture
async def workspace(engine: AsyncEngine) -> uuid.UUID:
    return await new_workspace(engine)


def make_runtime(
    engine: AsyncEngine, recorder: UsageRecorder | None = None, **env: Any
) -> ModelRuntime:
    config = model_settings(make_settings(**env))
    config = replace(config, policy=RetryPolicy(max_retries=2, base_delay=0.01))
    return ModelRuntime(session_factory(engine), SECRET, config, recorder)


@pytest.fixture
async def recorder(engine: AsyncEngine) -> AsyncIterator[UsageRecorder]:
    usage = UsageRecorder(engine, interval=3600)  # flushed by the tests themselves
    yield usage
    await usage.close()


async def configure(
    engine: AsyncEngine, workspace: uuid.UUID, name: str, base_url: str, **fields: Any
) -> None:
    stored = StoredProvider(name, "openai", {"base_url": base_url, **fields})
    async with session_factory(engine).begin() as db:
        await credentials.save(db, SECRET, workspace, stored)


async def test_deployment_credentials_serve_every_workspace(
    engine: AsyncEngine, workspace: uuid.UUID, server: FakeOpenAI
) -> None:
    runtime = make_runtime(engine, openai_api_key=KEY, openai_api_base=server.base_url)
    model = await runtime.chat(workspace, "openai:gpt-test")
    assert (await model.complete(HELLO)).text == "Echo: Hello"


async def test_workspace_credentials_override_the_deployments(
    engine: AsyncEngine, workspace: uuid.UUID, server: FakeOpenAI, backup: FakeOpenAI
) -> None:
    await configure(engine, workspace, "openai", backup.base_url)
    runtime = make_runtime(engine, openai_api_key=KEY, openai_api_base=server.base_url)
    await (await runtime.chat(workspace, "openai:other-model")).complete(HELLO)
    assert len(backup.requests) == 1
    assert server.requests == []
    other = await new_workspace(engine)
    await (await runtime.chat(other, "openai:gpt-test")).complete(HELLO)
    assert len(server.requests) == 1


async def test_a_reload_keeps_the_providers_whose_configuration_is_unchanged(
    engine: AsyncEngine, workspace: uuid.UUID, server: FakeOpenAI, backup: FakeOpenAI
) -> None:
    """Reloading a workspace's configuration (on expiry or a change) keeps its provider objects,
    their HTTP clients and connections, unless their configuration changed."""
    await configure(engine, workspace, "openai", server.base_url, api_key=KEY)
    runtime = make_runtime(engine)
    first = await runtime.provider(workspace, "openai")
    runtime.invalidate(workspace)
    assert await runtime.provider(workspace, "openai") is first
    await configure(engine, workspace, "openai", backup.base_url)
    runtime.invalidate(workspace)
    changed = await runtime.provider(workspace, "openai")
    assert changed is not first
    await (await runtime.chat(workspace, "openai:other-model")).complete(HELLO)
    assert len(backup.requests) == 1


async def test_credentials_are_stored_encrypted(engine: AsyncEngine, workspace: uuid.UUID) -> None:
    await configure(engine, workspace, "openai", "http://x/v1", api_key="sk-very-secret-123")
    async with engine.connect() as conn:
        blob = (
            await conn.execute(
                text("SELECT encrypted_config FROM provider_credentials WHERE workspace_id = :w"),
                {"w": workspace},
            )
        ).scalar_one()
    assert b"sk-very-secret-123" not in blob
    assert b"http://x/v1" not in blob


async def test_names_that_do_not_resolve_say_why(engine: AsyncEngine, workspace: uuid.UUID) -> None:
    runtime = make_runtime(engine)
    with pytest.raises(MissingCredentials, match="no credentials for openai"):
        await runtime.chat(workspace, "openai:gpt-4o-mini")
    with pytest.raises(UnknownModel, match="no provider named 'nope'"):
        await runtime.chat(workspace, "nope:model")
    with pytest.raises(UnknownModel, match="provider:model"):
        await runtime.chat(workspace, "gpt-4o-mini")
    with pytest.raises(MissingCredentials, match="no default llm model"):
        await runtime.chat(workspace)
    with pytest.raises(UnknownModel, match="does not serve llm"):
        await runtime.chat(workspace, "local:all-MiniLM-L6-v2")


async def test_custom_endpoints_serve_only_their_declared_models(
    engine: AsyncEngine, workspace: uuid.UUID, backup: FakeOpenAI
) -> None:
    runtime = make_runtime(engine)
    endpoint = admin.CustomEndpoint(
        "my-vllm", backup.base_url, models=[{"model": "other-model", "model_type": "llm"}]
    )
    async with session_factory(engine).begin() as db:
        await admin.add_custom_endpoint(db, runtime, workspace, endpoint)
    result = await (await runtime.chat(workspace, "my-vllm:other-model")).complete(HELLO)
    assert result.text == "Echo: Hello"
    with pytest.raises(UnknownModel, match="declares no such llm model"):
        await runtime.chat(workspace, "my-vllm:gpt-5")


async def test_workspace_defaults_win_over_the_environment(
    engine: AsyncEngine, workspace: uuid.UUID, server: FakeOpenAI
) -> None:
    runtime = make_runtime(
        engine,
        openai_api_key=KEY,
        openai_api_base=server.base_url,
        default_chat_model="openai:gpt-test",
    )
    assert (await runtime.chat(workspace)).full_name == "openai:gpt-test"
    async with session_factory(engine).begin() as db:
        await admin.set_default_model(db, runtime, workspace, "llm", "openai:gpt-backup")
    assert (await runtime.chat(workspace)).full_name == "openai:gpt-backup"
    async with session_factory(engine).begin() as db:
        with pytest.raises(MissingCredentials):
            await admin.set_default_model(db, runtime, workspace, "llm", "anthropic:claude")


async def test_rate_limits_are_retried_before_the_first_token(
    engine: AsyncEngine, workspace: uuid.UUID, server: FakeOpenAI, recorder: UsageRecorder
) -> None:
    await configure(engine, workspace, "openai", server.base_url, api_key=KEY)
    runtime = make_runtime(engine, recorder)
    server.fail(429, "slow down", retry_after=0.2, times=2)
    model = await runtime.chat(workspace, "openai:gpt-test")
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await model.complete(HELLO)).text == "Echo: Hello"
    assert loop.time() - started >= 0.4  # Retry-After was honoured twice
    assert len(server.requests) == 3
    server.fail(429, "slow down", retry_after=0.01, times=3)
    with pytest.raises(RateLimited):
        await model.complete(HELLO)
    assert await recorder.flush() == 6
    statuses = await usage_statuses(engine, workspace)
    assert statuses.count("error") == 5


async def usage_statuses(engine: AsyncEngine, workspace: uuid.UUID) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT status FROM model_usage WHERE workspace_id = :w ORDER BY id"),
            {"w": workspace},
        )
        return [row.status for row in rows]


async def test_no_retry_once_the_stream_has_started(
    engine: AsyncEngine, workspace: uuid.UUID, server: FakeOpenAI
) -> None:
    await configure(engine, workspace, "openai", server.base_url, api_key=KEY)
    runtime = make_runtime(engine)
    server.reply("one two three", cut_after=1)
    received: list[str] = []
    with pytest.raises(BadResponse):
        await texts_into(received, (await runtime.chat(workspace, "openai:gpt-test")).stream(HELLO))
    assert received == ["one"]
    assert len(server.requests) == 1


async def test_a_fallback_model_takes_over_when_the_first_is_down(
    engine: AsyncEngine, workspace: uuid.UUID, server: FakeOpenAI, backup: FakeOpenAI
) -> None:
    await configure(engine, workspace, "openai", server.base_url, api_key=KEY)
    await configure(engine, workspace, "backup", backup.base_url)
    async with session_factory(engine).begin() as db:
        await db.execute(
            text(
                "UPDATE provider_credentials SET base_provider = 'openai' WHERE provider = 'backup'"
            )
        )
    runtime = make_runtime(engine)
    server.fail(503, times=10)
    model = await runtime.chat(workspace, "openai:gpt-test", fallbacks=("backup:other-model",))
    assert (await model.complete(HELLO)).text == "Echo: Hello"
    assert len(server.requests) == 3  # the first try and two retries
    assert backup.requests[-1].json["model"] == "other-model"


async def test_usage_records_tokens_latency_and_cost(
    engine: AsyncEngine, workspace: uuid.UUID, server: FakeOpenAI, recorder: UsageRecorder
) -> None:
    await configure(engine, workspace, "openai", server.base_url, api_key=KEY)
    runtime = make_runtime(engine, recorder)
    runtime.config.prices["openai:gpt-test"] = runtime.config.prices["openai:gpt-4o-mini"]
    server.reply("four words of answer", usage=(1000, 2000), ttft=0.05)
    app_id = None
    await (await runtime.chat(workspace, "openai:gpt-test", app_id=app_id)).complete(HELLO)
    await recorder.flush()
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT * FROM model_usage WHERE workspace_id = :w"), {"w": workspace}
            )
        ).one()
    assert (row.provider, row.model, row.model_type, row.status) == (
        "openai",
        "gpt-test",
        "llm",
        "success",
    )
    assert (row.prompt_tokens, row.completion_tokens) == (1000, 2000)
    assert row.cost == Decimal("0.00135")  # 1000 x 0.15 + 2000 x 0.60 per million
    assert row.ttft_ms >= 50
    assert row.latency_ms >= row.ttft_ms


async def test_the_local_embedding_model_is_the_default_and_works_offline(
    engine: AsyncEngine, workspace: uuid.UUID
) -> None:
    runtime = make_runtime(engine)
    model = await runtime.embedding(workspace)
    assert (model.full_name, model.dimensions) == ("local:all-MiniLM-L6-v2", 384)
    vectors = np.array(
        await model.embed(
            ["A cat sits on the mat.", "A kitten rests on a rug.", "Bond yields rose sharply."]
        )
    )
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > 0.5 > similarity[0, 2]
    again = await model.embed(["A cat sits on the mat."])
    assert np.allclose(again[0], vectors[0], atol=1e-6)


async def test_a_change_in_one_process_reaches_the_others(
    engine: AsyncEngine, workspace: uuid.UUID, database: str, server: FakeOpenAI, backup: FakeOpenAI
) -> None:
    writer, reader = make_runtime(engine), make_runtime(engine)
    broker = Broker(database)
    await broker.start()
    follower = asyncio.create_task(reader.follow_changes(broker))
    try:
        await configure(engine, workspace, "openai", server.base_url, api_key=KEY)
        await (await reader.chat(workspace, "openai:gpt-test")).complete(HELLO)  # now cached
        async with session_factory(engine).begin() as db:
            await admin.set_credentials(
                db, writer, workspace, "openai", {"base_url": backup.base_url}
            )
        for _ in range(50):
            if reader._cache.get(workspace) is None:
                break
            await asyncio.sleep(0.05)
        await (await reader.chat(workspace, "openai:other-model")).complete(HELLO)
        assert backup.requests[-1].json["model"] == "other-model"
    finally:
        follower.cancel()
        await broker.close()
