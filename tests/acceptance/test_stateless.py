"""Two `tusk api` and two `tusk worker` processes on one database behave as one service."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.api import ADMIN
from tests.support.tusk import db_env, tusk_process, wait_http
from tusk.db import kv
from tusk.db.engine import engine_scope
from tusk.queue import build_app, enqueue
from tusk.testing.processes import free_port

pytestmark = pytest.mark.acceptance
JOBS = "tests.support.jobs:blueprint"


async def read_key(conninfo: str, key: str) -> Any:
    async with engine_scope(conninfo) as engine, engine.connect() as conn:
        return await kv.get(conn, key)


async def wait_key(conninfo: str, key: str, timeout: float = 60) -> Any:
    async with asyncio.timeout(timeout):
        while (value := await read_key(conninfo, key)) is None:
            await asyncio.sleep(0.2)
        return value


async def enqueue_slow_job(conninfo: str, key: str, seconds: float) -> None:
    async with engine_scope(conninfo) as engine, engine.begin() as conn:
        await enqueue(
            conn, build_app([JOBS]), "tests.support.jobs:slow_record", key=key, seconds=seconds
        )


def test_processes_share_everything_through_the_database(
    fresh_database: str, tmp_path: Path
) -> None:
    env = db_env(fresh_database, TUSK_WORKER_HEARTBEAT_SECONDS="1", TUSK_WORKER_STALLED_SECONDS="4")
    ports = [free_port(), free_port()]
    api_args = [["api", "--port", str(port)] for port in ports]
    worker_args = ["worker", "--tasks", JOBS]
    with (
        tusk_process(api_args[0], env, tmp_path / "api1.log") as api1,
        tusk_process(api_args[1], env, tmp_path / "api2.log") as api2,
        tusk_process(worker_args, env, tmp_path / "worker1.log") as worker1,
        tusk_process(worker_args, env, tmp_path / "worker2.log") as worker2,
    ):
        one, two = (f"http://127.0.0.1:{port}" for port in ports)
        wait_http(f"{one}/ready", process=api1)
        wait_http(f"{two}/ready", process=api2)

        # Written through one API process, read through the other.
        assert httpx.post(f"{one}/console/api/setup", json=ADMIN).status_code == 201
        token = httpx.post(f"{two}/console/api/login", json=ADMIN).json()["data"]["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        app = httpx.post(
            f"{one}/console/api/apps", json={"name": "Shared", "mode": "chat"}, headers=auth
        ).json()
        key = httpx.post(f"{two}/console/api/apps/{app['id']}/api-keys", headers=auth).json()
        info = httpx.get(f"{one}/v1/info", headers={"Authorization": f"Bearer {key['token']}"})
        assert info.json()["name"] == "Shared"

        # A worker killed while it holds a job: the other one completes it.
        asyncio.run(enqueue_slow_job(fresh_database, "handover", seconds=5))
        started = asyncio.run(wait_key(fresh_database, "started:handover"))
        holder = {worker1.pid: worker1, worker2.pid: worker2}[started["pid"]]
        survivor = worker2 if holder is worker1 else worker1
        os.kill(holder.pid, signal.SIGKILL)
        holder.proc.wait(30)
        done = asyncio.run(wait_key(fresh_database, "done:handover"))
        assert done["pid"] == survivor.pid
        assert "of a dead worker is queued again" in survivor.output()
        for process in (api1, api2, survivor):
            process.stop_gracefully()
