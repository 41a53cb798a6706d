"""`tusk up` as a new user runs it: a clean data dir, setup and login over HTTP, Ctrl-C, and a
second start that finds the account again."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.support.api import ADMIN
from tests.support.tusk import tusk_process, wait_http
from tusk.db.embedded import EmbeddedPostgres
from tusk.testing.processes import clean_env, free_port

pytestmark = pytest.mark.acceptance
STARTUP_BUDGET_SECONDS = 20


def login(base: str) -> httpx.Response:
    body = {"email": ADMIN["email"], "password": ADMIN["password"]}
    return httpx.post(f"{base}/console/api/login", json=body, timeout=10)


def test_up_from_a_clean_data_dir_and_again(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    env = clean_env(TUSK_DATA_DIR=str(data_dir), TUSK_PORT=str(port))
    base = f"http://127.0.0.1:{port}"

    with tusk_process(["up"], env, tmp_path / "first.log") as first:
        seconds = wait_http(f"{base}/ready", process=first)
        print(f"tusk up from a clean data dir to /ready: {seconds:.1f} s")
        assert seconds < STARTUP_BUDGET_SECONDS
        assert httpx.post(f"{base}/console/api/setup", json=ADMIN).status_code == 201
        assert login(base).status_code == 200

        with tusk_process(["up"], env, tmp_path / "second.log") as second:
            assert second.proc.wait(30) == 1
            assert "is using the data dir" in second.output()

        assert first.stop(signal.SIGINT) == 0
    server = EmbeddedPostgres(data_dir / "pg")
    assert not server.is_running()
    assert (data_dir / "secret_key").stat().st_mode & 0o777 == 0o600

    with tusk_process(["up"], env, tmp_path / "third.log") as third:
        wait_http(f"{base}/ready", process=third)
        response = login(base)
        assert response.status_code == 200
        assert response.json()["data"]["access_token"]
        assert httpx.get(f"{base}/console/api/setup").json()["step"] == "finished"
        assert third.stop(signal.SIGTERM) == 0
