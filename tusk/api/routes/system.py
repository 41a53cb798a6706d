"""The home page, liveness and readiness."""

from __future__ import annotations

from html import escape
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, JSONResponse

from tusk import __version__
from tusk.api.deps import ServicesDep
from tusk.db.health import OK, readiness

router = APIRouter(include_in_schema=False)

HOME = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Tusk</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto}}</style>
</head><body>
<h1>Tusk is running</h1>
<p>Version {version}. PostgreSQL is its only stateful dependency.</p>
<ul>
<li><a href="/docs">API documentation</a> (<a href="/openapi.json">OpenAPI</a>)</li>
<li><a href="/ready">Readiness</a> and <a href="/health">liveness</a></li>
</ul>
<p>Create the first admin with <code>tusk setup</code> or <code>POST /console/api/setup</code>.</p>
</body></html>
"""


@router.get("/")
async def home() -> HTMLResponse:
    return HTMLResponse(HOME.format(version=escape(__version__)))


@router.get("/health")
async def health() -> dict[str, Any]:
    return {"status": "ok", "version": __version__}


@router.get("/ready")
async def ready(services: ServicesDep) -> JSONResponse:
    checks = await readiness(services.engine)
    failed = {name: problem for name, problem in checks.items() if problem != OK}
    if not failed:
        return JSONResponse({"status": "ready", "checks": checks})
    message = "; ".join(f"{name}: {problem}" for name, problem in failed.items())
    body = {"code": "not_ready", "message": message, "status": 503, "checks": checks}
    return JSONResponse(body, status_code=503)
