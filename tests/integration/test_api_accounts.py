"""Setup, login, tokens and the console identity, over HTTP."""

from __future__ import annotations

import asyncio
import uuid

from tests.support.api import (
    ADMIN,
    SECRET,
    api_client,
    assert_error,
    bearer,
    login,
    setup_and_login,
)
from tusk.accounts.tokens import issue_access_token


async def test_setup_happens_once(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        assert (await client.get("/console/api/setup")).json() == {"step": "not_started"}
        response = await client.post("/console/api/setup", json=ADMIN)
        assert response.status_code == 201
        assert response.json() == {"result": "success"}
        assert_error(await client.post("/console/api/setup", json=ADMIN), 403, "already_setup")
        status = (await client.get("/console/api/setup")).json()
        assert status["step"] == "finished"
        assert status["setup_at"]


async def test_concurrent_setups_create_one_admin(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        bodies = [{**ADMIN, "email": f"admin{i}@example.com"} for i in range(4)]
        responses = await asyncio.gather(
            *(client.post("/console/api/setup", json=body) for body in bodies)
        )
        assert sorted(r.status_code for r in responses) == [201, 403, 403, 403]


async def test_setup_rejects_bad_email_name_and_password(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        cases = [
            ({**ADMIN, "email": "not-an-email"}, "email"),
            ({**ADMIN, "password": "short1"}, "password"),
            ({**ADMIN, "password": "onlyletters"}, "password"),
            ({**ADMIN, "name": ""}, "name"),
        ]
        for body, field in cases:
            error = assert_error(
                await client.post("/console/api/setup", json=body), 400, "invalid_param"
            )
            assert error["params"] == field
        assert (await client.get("/console/api/setup")).json() == {"step": "not_started"}


async def test_login_before_setup_says_so(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        response = await client.post(
            "/console/api/login", json={"email": ADMIN["email"], "password": ADMIN["password"]}
        )
        assert_error(response, 401, "not_setup")


async def test_login_gives_tokens_that_open_the_console(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        profile = (await client.get("/console/api/account/profile", headers=bearer(token))).json()
        assert profile["email"] == ADMIN["email"]
        assert profile["name"] == ADMIN["name"]
        assert profile["last_login_at"] is not None
        workspace = (
            await client.get("/console/api/workspaces/current", headers=bearer(token))
        ).json()
        assert workspace["role"] == "owner"
        assert workspace["name"] == "Admin's Workspace"


async def test_the_email_is_matched_without_regard_to_case(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        await setup_and_login(client)
        await login(client, ADMIN["email"].upper(), ADMIN["password"])


async def test_console_requires_a_valid_bearer_token(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        await setup_and_login(client)
        missing = await client.get("/console/api/account/profile")
        assert_error(missing, 401, "unauthorized")
        assert missing.headers["www-authenticate"] == 'Bearer realm="api"'
        for header in ("Bearer garbage", "Basic abc", "Bearer"):
            response = await client.get(
                "/console/api/account/profile", headers={"Authorization": header}
            )
            assert_error(response, 401, "unauthorized")
        forged = issue_access_token(uuid.uuid4(), "another-secret-key-of-sufficient-length!", 60)
        assert_error(
            await client.get("/console/api/account/profile", headers=bearer(forged)),
            401,
            "unauthorized",
        )


async def test_expired_access_tokens_are_refused(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        me = (await client.get("/console/api/account/profile", headers=bearer(token))).json()
        expired = issue_access_token(uuid.UUID(me["id"]), SECRET, -10)
        body = assert_error(
            await client.get("/console/api/account/profile", headers=bearer(expired)),
            401,
            "unauthorized",
        )
        assert "expired" in body["message"]


async def test_wrong_passwords_fail_then_lock_the_email(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        await setup_and_login(client)
        wrong = {"email": ADMIN["email"], "password": "wrong-passw0rd"}
        for _ in range(5):
            assert_error(
                await client.post("/console/api/login", json=wrong), 401, "authentication_failed"
            )
        right = {"email": ADMIN["email"], "password": ADMIN["password"]}
        assert_error(
            await client.post("/console/api/login", json=right), 429, "email_code_login_limit"
        )
        unknown = {"email": "nobody@example.com", "password": "whatever1"}
        assert_error(
            await client.post("/console/api/login", json=unknown), 401, "authentication_failed"
        )


async def test_refresh_tokens_rotate(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        await client.post("/console/api/setup", json=ADMIN)
        first = (await client.post("/console/api/login", json=ADMIN)).json()["data"]
        renewed = await client.post(
            "/console/api/refresh-token", json={"refresh_token": first["refresh_token"]}
        )
        assert renewed.status_code == 200
        second = renewed.json()["data"]
        assert second["refresh_token"] != first["refresh_token"]
        profile = await client.get(
            "/console/api/account/profile", headers=bearer(second["access_token"])
        )
        assert profile.status_code == 200
        reused = await client.post(
            "/console/api/refresh-token", json={"refresh_token": first["refresh_token"]}
        )
        assert_error(reused, 401, "unauthorized")
