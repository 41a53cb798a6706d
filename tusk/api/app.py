"""The FastAPI application of `tusk api`."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from tusk import __version__
from tusk.api.errors import install_error_handlers
from tusk.api.middleware import BodySizeLimit, Limit
from tusk.api.routes import annotations as annotation_routes
from tusk.api.routes import (
    console_app_config,
    console_apps,
    console_auth,
    console_dsl,
    console_files,
    console_keys,
    console_logs,
    console_models,
    console_tools,
    knowledge,
    mcp_server,
    openai_compat,
    service_api,
    service_chat,
    service_records,
    system,
    workflows,
)
from tusk.apps.cache import AppCache
from tusk.apps.tasks import TaskRegistry
from tusk.config import Settings
from tusk.models.registry import provider_classes
from tusk.runtime import Runtime
from tusk.services import Services, open_services
from tusk.workflow.context import Resources
from tusk.workflow.runner import WorkflowRunner
from tusk.workflow.store import env_key

CONSOLE_PREFIX = "/console/api"
UPLOAD_OVERHEAD_BYTES = 64 * 1024  # multipart framing around an uploaded file


def _origins(value: str) -> list[str]:
    return [origin.strip() for origin in value.split(",") if origin.strip()]


class PerPrefixCors:
    """Console and Service API have their own allowed origins, as in Dify's settings."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        def cors(origins: str) -> ASGIApp:
            return CORSMiddleware(
                app, allow_origins=_origins(origins), allow_methods=["*"], allow_headers=["*"]
            )

        self.console = cors(settings.console_cors_allow_origins)
        self.web = cors(settings.web_api_cors_allow_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        target = self.console if path.startswith(CONSOLE_PREFIX) else self.web
        await target(scope, receive, send)


def body_limits(settings: Settings) -> Callable[[str], Limit]:
    upload = Limit(
        settings.upload_limit_bytes + UPLOAD_OVERHEAD_BYTES,
        "file_too_large",
        f"File size exceeded. The limit is {settings.upload_file_size_limit_mb} MB.",
    )
    other = Limit(
        settings.max_request_body_bytes,
        "request_entity_too_large",
        f"The request body is over {settings.max_request_body_mb} MB.",
    )
    return lambda path: upload if path.endswith("/files/upload") else other


def workflow_runner(services: Services) -> WorkflowRunner:
    resources = Resources(
        services.settings, services.sessions, services.storage, services.models, services.sandbox
    )
    return WorkflowRunner(resources, services.broker, env_key(services.runtime.secret_key))


def create_app(runtime: Runtime) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_services(runtime) as services:
            app.state.services = services
            app.state.workflows = runner = workflow_runner(services)
            app.state.tasks = tasks = TaskRegistry(services.sessions, services.broker)
            app.state.app_cache = cache = AppCache()
            cache.watch_writes(services.engine)
            stops = [
                asyncio.create_task(runner.follow_stops()),
                asyncio.create_task(tasks.follow_stops()),
                asyncio.create_task(cache.follow_changes(services.broker)),
            ]
            # What start-up allocated lives as long as the process: moving it out of the
            # collector's reach shortens the full collections that pause every stream. The model
            # providers and their SDKs (160,000 objects, most of them the SDKs' pydantic types)
            # are loaded first, so that the freeze covers them: loaded at the first model call,
            # they made each full collection take about 100 ms.
            provider_classes()
            gc.freeze()
            try:
                yield
            finally:
                for task in stops:
                    task.cancel()
                await runner.close()

    app = FastAPI(title="Tusk", version=__version__, lifespan=lifespan)
    install_error_handlers(app)
    # Routes are matched in order: the generation endpoints, the hottest, come first.
    app.include_router(service_chat.router)
    app.include_router(workflows.service_router)
    routers = (
        system,
        console_auth,
        console_dsl,  # before console_apps: /imports is not an app id
        console_apps,
        console_app_config,
        console_keys,
        console_files,
        console_models,
        console_tools,
        console_logs,
        service_api,
        service_records,
        openai_compat,
        annotation_routes,
        mcp_server,
    )
    for module in routers:
        app.include_router(module.router)
    app.include_router(workflows.console_router)
    app.include_router(knowledge.estimate_router)  # before /datasets/{dataset_id} routes
    app.include_router(knowledge.service_router)
    app.include_router(knowledge.console_router)
    app.add_middleware(BodySizeLimit, limit_for=body_limits(runtime.settings))
    app.add_middleware(PerPrefixCors, settings=runtime.settings)
    return app
