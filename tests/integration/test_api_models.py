"""Model providers, credentials, defaults and usage through the console API."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest

from tests.support.api import add_member, api_client, assert_error, bearer, login, setup_and_login
from tusk.db.engine import engine_scope
from tusk.models.usage import UsageRecord, UsageRecorder
from tusk.testing.openai_server import FakeOpenAI

KEY = "sk-console-test-9876"
PROVIDERS = "/console/api/workspaces/current/model-providers"


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY, models=("gpt-test", "embed-test")) as fake:
        yield fake


async def set_openai(
    client: httpx.AsyncClient, token: str, server: FakeOpenAI, key: str = KEY
) -> httpx.Response:
    body = {"credentials": {"api_key": key, "base_url": server.base_url}}
    return await client.post(f"{PROVIDERS}/openai/credentials", json=body, headers=bearer(token))


async def test_providers_are_listed_with_their_state(
    fresh_database: str, server: FakeOpenAI
) -> None:
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        listed = (await client.get(PROVIDERS, headers=bearer(token))).json()["data"]
        by_name = {p["provider"]: p for p in listed}
        assert set(by_name) >= {"openai", "anthropic", "local", "rerank"}
        assert by_name["local"]["source"] == "built-in"
        assert by_name["local"]["models"][0] == {
            "model": "all-MiniLM-L6-v2",
            "model_type": "text-embedding",
            "context_window": None,
            "dimensions": 384,
        }
        assert by_name["openai"]["configured"] is False
        assert {f["name"] for f in by_name["openai"]["credential_fields"]} >= {
            "api_key",
            "base_url",
        }


async def test_credentials_are_validated_kept_and_shown_masked(
    fresh_database: str, server: FakeOpenAI
) -> None:
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        refused = await set_openai(client, token, server, key="sk-wrong-key-0000")
        body = assert_error(refused, 400, "invalid_param")
        assert "Incorrect API key" in body["message"]
        assert (await set_openai(client, token, server)).json() == {"result": "success"}
        shown = (await client.get(f"{PROVIDERS}/openai/credentials", headers=bearer(token))).json()
        assert shown["credentials"] == {"api_key": "sk-…9876", "base_url": server.base_url}
        listed = (await client.get(PROVIDERS, headers=bearer(token))).text
        assert KEY not in listed
        check = await client.post(
            f"{PROVIDERS}/openai/credentials/validate",
            json={"credentials": {"api_key": "sk-bad", "base_url": server.base_url}},
            headers=bearer(token),
        )
        assert check.json()["result"] == "error"
        assert "Incorrect API key" in check.json()["error"]
        gone = await client.delete(f"{PROVIDERS}/openai/credentials", headers=bearer(token))
        assert gone.status_code == 204
        again = await client.delete(f"{PROVIDERS}/openai/credentials", headers=bearer(token))
        assert_error(again, 404, "not_found")


async def test_bad_credential_input_is_refused_before_any_call(
    fresh_database: str, server: FakeOpenAI
) -> None:
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        unknown_field = await client.post(
            f"{PROVIDERS}/openai/credentials",
            json={"credentials": {"apikey": "x"}},
            headers=bearer(token),
        )
        assert (
            "unknown credential fields: apikey"
            in assert_error(unknown_field, 400, "invalid_param")["message"]
        )
        missing = await client.post(
            f"{PROVIDERS}/anthropic/credentials", json={"credentials": {}}, headers=bearer(token)
        )
        assert (
            "missing credential fields: api_key"
            in assert_error(missing, 400, "invalid_param")["message"]
        )
        no_such = await client.post(
            f"{PROVIDERS}/nope/credentials", json={"credentials": {}}, headers=bearer(token)
        )
        assert_error(no_such, 400, "model_currently_not_support")
        unreachable = await client.post(
            f"{PROVIDERS}/openai/credentials",
            json={"credentials": {"base_url": "http://127.0.0.1:9/v1"}},
            headers=bearer(token),
        )
        assert "cannot connect" in assert_error(unreachable, 400, "invalid_param")["message"]


async def test_custom_endpoints_and_defaults(fresh_database: str, server: FakeOpenAI) -> None:
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        custom = {
            "name": "my-vllm",
            "base_url": server.base_url,
            "api_key": KEY,
            "models": [{"model": "gpt-test", "model_type": "llm"}],
        }
        added = await client.post(f"{PROVIDERS}/custom", json=custom, headers=bearer(token))
        assert added.status_code == 201, added.text
        clash = await client.post(
            f"{PROVIDERS}/custom", json={**custom, "name": "openai"}, headers=bearer(token)
        )
        assert assert_error(clash, 400, "invalid_param")["params"] == "name"
        types = (
            await client.get(
                "/console/api/workspaces/current/models/model-types/llm", headers=bearer(token)
            )
        ).json()["data"]
        mine = next(p for p in types if p["provider"] == "my-vllm")
        assert [m["model"] for m in mine["models"]] == ["gpt-test"]

        default = "/console/api/workspaces/current/default-model"
        setting = {
            "model_settings": [{"model_type": "llm", "provider": "my-vllm", "model": "gpt-test"}]
        }
        assert (await client.post(default, json=setting, headers=bearer(token))).status_code == 200
        got = (await client.get(f"{default}?model_type=llm", headers=bearer(token))).json()["data"]
        assert (got["provider"]["provider"], got["model"]) == ("my-vllm", "gpt-test")
        embedding = (
            await client.get(f"{default}?model_type=text-embedding", headers=bearer(token))
        ).json()["data"]
        assert (embedding["provider"]["provider"], embedding["model"]) == (
            "local",
            "all-MiniLM-L6-v2",
        )
        bad = {"model_settings": [{"model_type": "llm", "provider": "my-vllm", "model": "other"}]}
        assert_error(
            await client.post(default, json=bad, headers=bearer(token)),
            400,
            "model_currently_not_support",
        )


async def test_only_admins_manage_credentials(fresh_database: str, server: FakeOpenAI) -> None:
    async with api_client(fresh_database) as client:
        await setup_and_login(client)
        editor = await login(
            client,
            *await add_member(
                fresh_database, "ed@example.com", role="editor", workspace_of="admin@example.com"
            ),
        )
        assert_error(await set_openai(client, editor, server), 403, "forbidden")
        assert (await client.get(PROVIDERS, headers=bearer(editor))).status_code == 200


async def test_usage_is_reported_per_day_app_and_model(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        workspace = (
            await client.get("/console/api/workspaces/current", headers=bearer(token))
        ).json()
        app = (
            await client.post(
                "/console/api/apps", json={"name": "a", "mode": "chat"}, headers=bearer(token)
            )
        ).json()
        async with engine_scope(fresh_database) as engine:
            recorder = UsageRecorder(engine)
            for status, app_id in (("success", app["id"]), ("error", app["id"]), ("success", None)):
                recorder.record(usage(uuid.UUID(workspace["id"]), app_id, status))
            assert await recorder.flush() == 3
        url = "/console/api/workspaces/current/model-usage"
        by_app = (await client.get(url, headers=bearer(token))).json()["data"]
        row = next(r for r in by_app if r["app_id"] == app["id"])
        assert (row["calls"], row["errors"], row["prompt_tokens"], row["cost"]) == (
            2,
            1,
            20,
            "0.0020000",
        )
        whole = (await client.get(f"{url}?group_by=workspace", headers=bearer(token))).json()[
            "data"
        ]
        assert [(r["calls"], r["app_id"]) for r in whole] == [(3, None)]
        assert_error(
            await client.get(f"{url}?start=2026-02-01&end=2026-01-01", headers=bearer(token)),
            400,
            "invalid_param",
        )


def usage(workspace: uuid.UUID, app_id: str | None, status: str) -> UsageRecord:
    return UsageRecord(
        workspace_id=workspace,
        app_id=uuid.UUID(app_id) if app_id else None,
        provider="openai",
        model="gpt-test",
        model_type="llm",
        prompt_tokens=10,
        completion_tokens=5,
        latency_ms=120.0,
        ttft_ms=40.0,
        status=status,
        error=None if status == "success" else "boom",
        cost=Decimal("0.001"),
        currency="USD",
        created_at=datetime.now(UTC),
    )


async def test_a_dataset_key_lists_the_workspaces_models(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        key = (await client.post("/console/api/datasets/api-keys", headers=bearer(token))).json()
        url = "/v1/workspaces/current/models/model-types/text-embedding"
        data = (await client.get(url, headers=bearer(key["token"]))).json()["data"]
        local = next(p for p in data if p["provider"] == "local")
        assert [m["model"] for m in local["models"]] == ["all-MiniLM-L6-v2"]
        assert_error(await client.get(url, headers=bearer(token)), 401, "unauthorized")
