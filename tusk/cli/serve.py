"""Serving the API with uvicorn."""

from __future__ import annotations

import uvicorn

from tusk.api.app import create_app
from tusk.runtime import Runtime


async def serve_api(runtime: Runtime, *, host: str | None, port: int | None) -> None:
    settings = runtime.settings
    config = uvicorn.Config(
        create_app(runtime),
        host=host or settings.host,
        port=port or settings.port,
        log_config=None,  # our logging set-up applies
        proxy_headers=True,
        timeout_graceful_shutdown=10,
        server_header=False,
    )
    server = uvicorn.Server(config)
    await server.serve()
    if not server.started:
        raise SystemExit(1)  # uvicorn has logged why (e.g. the port is in use)
