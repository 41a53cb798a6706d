"""Request dependencies: the process's services and who is calling (console user or API key)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from tusk.accounts import api_keys
from tusk.accounts.service import ConsoleUser, console_user
from tusk.apps.cache import AppCache
from tusk.db.models import App
from tusk.errors import Forbidden, Unauthorized
from tusk.services import Services


def get_services(request: Request) -> Services:
    services = request.app.state.services
    assert isinstance(services, Services)
    return services


async def _services(request: Request) -> Services:
    # async: FastAPI runs a plain function dependency in its thread pool, a hop per request
    return get_services(request)


ServicesDep = Annotated[Services, Depends(_services)]


def bearer_token(request: Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header must be provided and start with 'Bearer'")
    return token.strip()


async def get_console_user(request: Request, services: ServicesDep) -> ConsoleUser:
    token = bearer_token(request)
    async with services.transaction() as db:
        return await console_user(db, token, services.runtime.secret_key)


@dataclass(frozen=True)
class AppCaller:
    """A Service API call authenticated by an `app-` key: the app, and its workspace."""

    app: App

    @property
    def workspace_id(self) -> uuid.UUID:
        return self.app.workspace_id


def get_app_cache(request: Request) -> AppCache:
    cache = request.app.state.app_cache
    assert isinstance(cache, AppCache)
    return cache


async def get_app_caller(request: Request, services: ServicesDep) -> AppCaller:
    token = bearer_token(request)
    app, workspace_id = await get_app_cache(request).app_for_key(services.sessions, token)
    if app is None or app.workspace_id != workspace_id:
        raise Forbidden("The app no longer exists.")
    if app.status != "normal":
        raise Forbidden("The app's status is abnormal.")
    if not app.enable_api:
        raise Forbidden("The app's API service has been disabled.")
    return AppCaller(app)


async def get_dataset_workspace(request: Request, services: ServicesDep) -> uuid.UUID:
    """The workspace of a `dataset-` key: every Knowledge API query is scoped to it."""
    token = bearer_token(request)
    async with services.transaction() as db:
        key = await api_keys.resolve_key(db, token, "dataset")
    return key.workspace_id


ConsoleUserDep = Annotated[ConsoleUser, Depends(get_console_user)]
AppCallerDep = Annotated[AppCaller, Depends(get_app_caller)]
DatasetWorkspaceDep = Annotated[uuid.UUID, Depends(get_dataset_workspace)]
