"""Apps, `app-` and `dataset-` keys, the Service API's key check, and workspace scoping."""

from __future__ import annotations

import re
from typing import Any

import httpx
from sqlalchemy import text

from tests.support.api import add_member, api_client, assert_error, bearer, login, setup_and_login
from tusk.accounts.api_keys import resolve_key
from tusk.db.engine import engine_scope, session_factory


async def create_app(client: httpx.AsyncClient, token: str, name: str = "Helper") -> dict[str, Any]:
    response = await client.post(
        "/console/api/apps", json={"name": name, "mode": "chat"}, headers=bearer(token)
    )
    assert response.status_code == 201, response.text
    app: dict[str, Any] = response.json()
    return app


async def create_key(client: httpx.AsyncClient, token: str, path: str) -> dict[str, Any]:
    response = await client.post(path, headers=bearer(token))
    assert response.status_code == 201, response.text
    key: dict[str, Any] = response.json()
    return key


async def test_app_keys_are_shown_once_and_open_the_service_api(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        app = await create_app(client, token)
        key = await create_key(client, token, f"/console/api/apps/{app['id']}/api-keys")
        assert re.fullmatch(r"app-[A-Za-z0-9]{24}", key["token"])
        listed = (
            await client.get(f"/console/api/apps/{app['id']}/api-keys", headers=bearer(token))
        ).json()
        assert [k["token"] for k in listed["data"]] == [f"app-…{key['token'][-4:]}"]

        info = await client.get("/v1/info", headers=bearer(key["token"]))
        assert info.status_code == 200
        assert info.json() == {
            "name": "Helper",
            "description": "",
            "tags": [],
            "mode": "chat",
            "author_name": "Admin",
        }
        used = (
            await client.get(f"/console/api/apps/{app['id']}/api-keys", headers=bearer(token))
        ).json()
        assert used["data"][0]["last_used_at"] is not None


async def test_revoked_and_unknown_keys_are_refused(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        app = await create_app(client, token)
        key = await create_key(client, token, f"/console/api/apps/{app['id']}/api-keys")
        revoke = await client.delete(
            f"/console/api/apps/{app['id']}/api-keys/{key['id']}", headers=bearer(token)
        )
        assert revoke.status_code == 204
        assert_error(
            await client.get("/v1/info", headers=bearer(key["token"])), 401, "unauthorized"
        )
        assert_error(
            await client.get("/v1/info", headers=bearer("app-" + "x" * 24)), 401, "unauthorized"
        )
        assert_error(await client.get("/v1/info"), 401, "unauthorized")
        again = await client.delete(
            f"/console/api/apps/{app['id']}/api-keys/{key['id']}", headers=bearer(token)
        )
        assert_error(again, 404, "not_found")


async def test_an_app_with_its_api_disabled_is_forbidden(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        app = await create_app(client, token)
        key = await create_key(client, token, f"/console/api/apps/{app['id']}/api-keys")
        async with engine_scope(fresh_database) as engine, engine.begin() as conn:
            await conn.execute(
                text("UPDATE apps SET enable_api = false WHERE id = :id"), {"id": app["id"]}
            )
        body = assert_error(
            await client.get("/v1/info", headers=bearer(key["token"])), 403, "forbidden"
        )
        assert "disabled" in body["message"]


async def test_a_dataset_key_is_not_an_app_key(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        key = await create_key(client, token, "/console/api/datasets/api-keys")
        assert re.fullmatch(r"dataset-[A-Za-z0-9]{24}", key["token"])
        assert_error(
            await client.get("/v1/info", headers=bearer(key["token"])), 401, "unauthorized"
        )
        me = (await client.get("/console/api/workspaces/current", headers=bearer(token))).json()
    async with engine_scope(fresh_database) as engine, session_factory(engine).begin() as db:
        resolved = await resolve_key(db, key["token"], "dataset")
        assert str(resolved.workspace_id) == me["id"]


async def test_at_most_ten_keys_per_resource(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        for _ in range(10):
            await create_key(client, token, "/console/api/datasets/api-keys")
        response = await client.post("/console/api/datasets/api-keys", headers=bearer(token))
        assert_error(response, 400, "max_keys_exceeded")


async def test_apps_list_pages_and_filters(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        for name in ("alpha", "beta", "gamma 100%"):
            await create_app(client, token, name)
        page = (await client.get("/console/api/apps?limit=2", headers=bearer(token))).json()
        assert (page["total"], page["has_more"], len(page["data"])) == (3, True, 2)
        found = (await client.get("/console/api/apps?name=100%25", headers=bearer(token))).json()
        assert [a["name"] for a in found["data"]] == ["gamma 100%"]
        bad = await client.post(
            "/console/api/apps", json={"name": "x", "mode": "nonsense"}, headers=bearer(token)
        )
        assert assert_error(bad, 400, "invalid_param")["params"] == "mode"


async def test_one_workspace_cannot_reach_another(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        owner_a = await setup_and_login(client)
        app_a = await create_app(client, owner_a, "A's app")
        key_a = await create_key(client, owner_a, f"/console/api/apps/{app_a['id']}/api-keys")
        dataset_key_a = await create_key(client, owner_a, "/console/api/datasets/api-keys")

        owner_b = await login(client, *await add_member(fresh_database, "bob@example.com"))
        app_b = await create_app(client, owner_b, "B's app")
        b = bearer(owner_b)
        assert_error(
            await client.get(f"/console/api/apps/{app_a['id']}", headers=b), 404, "not_found"
        )
        assert_error(
            await client.delete(f"/console/api/apps/{app_a['id']}", headers=b), 404, "not_found"
        )
        assert_error(
            await client.post(f"/console/api/apps/{app_a['id']}/api-keys", headers=b),
            404,
            "not_found",
        )
        assert_error(
            await client.get(f"/console/api/apps/{app_a['id']}/api-keys", headers=b),
            404,
            "not_found",
        )
        assert_error(
            await client.delete(
                f"/console/api/apps/{app_b['id']}/api-keys/{key_a['id']}", headers=b
            ),
            404,
            "not_found",
        )
        assert_error(
            await client.delete(f"/console/api/datasets/api-keys/{dataset_key_a['id']}", headers=b),
            404,
            "not_found",
        )
        listed = (await client.get("/console/api/apps", headers=b)).json()
        assert [app["name"] for app in listed["data"]] == ["B's app"]
        assert (await client.get("/console/api/datasets/api-keys", headers=b)).json() == {
            "data": []
        }
        # A's key still works and still sees only A's app.
        info = (await client.get("/v1/info", headers=bearer(key_a["token"]))).json()
        assert info["name"] == "A's app"


async def test_a_normal_member_may_read_but_not_change(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        owner = await setup_and_login(client)
        app = await create_app(client, owner)
        email, password = await add_member(
            fresh_database, "reader@example.com", role="normal", workspace_of="admin@example.com"
        )
        reader = bearer(await login(client, email, password))
        assert (
            await client.get(f"/console/api/apps/{app['id']}", headers=reader)
        ).status_code == 200
        assert_error(
            await client.post(
                "/console/api/apps", json={"name": "n", "mode": "chat"}, headers=reader
            ),
            403,
            "forbidden",
        )
        assert_error(
            await client.post("/console/api/datasets/api-keys", headers=reader), 403, "forbidden"
        )
        assert_error(
            await client.delete(f"/console/api/apps/{app['id']}", headers=reader), 403, "forbidden"
        )
