"""First-run setup, login, token refresh, and who the caller is (Dify's console paths)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from tusk.accounts import service
from tusk.accounts.tokens import TokenPair
from tusk.api.deps import ConsoleUserDep, ServicesDep
from tusk.api.serialize import ts
from tusk.db.models import Workspace

router = APIRouter(prefix="/console/api", tags=["console"])


class SetupBody(BaseModel):
    email: str
    name: str
    password: str
    language: str | None = None


class LoginBody(BaseModel):
    email: str
    password: str
    remember_me: bool = False


class RefreshBody(BaseModel):
    refresh_token: str


def _tokens(pair: TokenPair) -> dict[str, Any]:
    data = {"access_token": pair.access_token, "refresh_token": pair.refresh_token}
    return {"result": "success", "data": data}


@router.get("/setup")
async def setup_status(services: ServicesDep) -> dict[str, Any]:
    async with services.transaction() as db:
        done = await service.is_setup(db)
    if done is None:
        return {"step": "not_started"}
    return {"step": "finished", "setup_at": done.setup_at.isoformat()}


@router.post("/setup", status_code=201)
async def setup(body: SetupBody, services: ServicesDep) -> dict[str, Any]:
    async with services.transaction() as db:
        await service.setup(db, email=body.email, name=body.name, password=body.password)
    return {"result": "success"}


@router.post("/login")
async def login(body: LoginBody, request: Request, services: ServicesDep) -> dict[str, Any]:
    pair = await service.login(
        services.sessions,
        email=body.email,
        password=body.password,
        ip=request.client.host if request.client else None,
        settings=services.tokens,
    )
    return _tokens(pair)


@router.post("/refresh-token")
async def refresh_token(body: RefreshBody, services: ServicesDep) -> dict[str, Any]:
    async with services.transaction() as db:
        pair = await service.refresh(db, body.refresh_token, services.tokens)
    return _tokens(pair)


@router.get("/account/profile")
async def profile(user: ConsoleUserDep) -> dict[str, Any]:
    account = user.account
    return {
        "id": str(account.id),
        "name": account.name,
        "email": account.email,
        "avatar": None,
        "is_password_set": account.password_hash is not None,
        "interface_language": account.interface_language,
        "timezone": account.timezone,
        "last_login_at": ts(account.last_login_at),
        "last_login_ip": account.last_login_ip,
        "created_at": ts(account.created_at),
    }


@router.get("/workspaces/current")
async def current_workspace(user: ConsoleUserDep, services: ServicesDep) -> JSONResponse:
    async with services.transaction() as db:
        workspace = await db.get(Workspace, user.workspace_id)
    assert workspace is not None  # a membership cascades away with its workspace
    return JSONResponse(
        {
            "id": str(workspace.id),
            "name": workspace.name,
            "plan": "community",
            "status": workspace.status,
            "created_at": ts(workspace.created_at),
            "role": user.role,
        }
    )
