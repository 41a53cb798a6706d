"""An in-process Tusk API on a test database, driven over HTTP with httpx."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from sqlalchemy import select, update

from tusk.accounts import service
from tusk.api.app import create_app
from tusk.config import Settings
from tusk.db.engine import engine_scope, session_factory
from tusk.db.models import Account, Membership
from tusk.runtime import Runtime

SECRET = "test-secret-key-that-is-long-enough-0123456789"
ADMIN = {"email": "admin@example.com", "name": "Admin", "password": "passw0rd-admin"}


def make_settings(**overrides: Any) -> Settings:
    # No pre-started sandboxes: most tests run no user code, and each would start four.
    overrides.setdefault("sandbox_pool_size", 0)
    return Settings(_env_file=None, secret_key=SECRET, **overrides)  # type: ignore[call-arg]


@asynccontextmanager
async def api_client(conninfo: str, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Runtime(make_settings(**overrides), conninfo, SECRET, embedded=False))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tusk") as client:
            yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def setup_and_login(client: httpx.AsyncClient, admin: dict[str, str] = ADMIN) -> str:
    response = await client.post("/console/api/setup", json=admin)
    assert response.status_code == 201, response.text
    return await login(client, admin["email"], admin["password"])


async def login(client: httpx.AsyncClient, email: str, password: str) -> str:
    response = await client.post("/console/api/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    token: str = response.json()["data"]["access_token"]
    return token


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Dify's error body: the status twice, a code, and a message for people."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert isinstance(body["message"], str)
    assert body["message"]
    return body


async def add_member(
    conninfo: str, email: str, *, role: str = "owner", workspace_of: str | None = None
) -> tuple[str, str]:
    """An account with a workspace of its own, or with `role` in the workspace of `workspace_of`."""
    password = "passw0rd-member"
    async with engine_scope(conninfo) as engine, session_factory(engine).begin() as db:
        user = await service.create_account_with_workspace(
            db, email=email, name=email.split("@")[0], password=password
        )
        if workspace_of is not None:
            owner = (
                await db.execute(select(Account).where(Account.email == workspace_of))
            ).scalar_one()
            other = (
                await db.execute(select(Membership).where(Membership.account_id == owner.id))
            ).scalar_one()
            await db.execute(
                update(Membership)
                .where(Membership.account_id == user.account.id)
                .values(workspace_id=other.workspace_id, role=role)
            )
    return email, password
