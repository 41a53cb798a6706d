"""A `tusk api` whose database goes away answers 503 fast, and recovers by itself."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.support.tusk import db_env, tusk_process, wait_http
from tusk.db.embedded import EmbeddedPostgres
from tusk.testing.processes import free_port

pytestmark = pytest.mark.acceptance


def test_api_survives_a_database_restart(own_server: EmbeddedPostgres, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = db_env(own_server.conninfo())
    with tusk_process(["api", "--migrate", "--port", str(port)], env, tmp_path / "api.log") as api:
        wait_http(f"{base}/console/api/setup", process=api)

        own_server.stop()
        started = time.monotonic()
        response = httpx.get(f"{base}/console/api/setup", timeout=10)
        assert time.monotonic() - started < 3
        assert response.status_code == 503
        assert response.json() == {
            "code": "database_unavailable",
            "message": "The database is unavailable; retry later.",
            "status": 503,
        }
        ready = httpx.get(f"{base}/ready", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"].startswith("unreachable")

        own_server.start()
        wait_http(f"{base}/console/api/setup", timeout=30, process=api)
        assert httpx.get(f"{base}/console/api/setup").json() == {"step": "not_started"}
        api.stop_gracefully()
        assert "Application shutdown complete" in api.output()
