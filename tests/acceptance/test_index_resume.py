"""A worker killed in the middle of indexing a document: another one finishes it, with every
chunk written once."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.integration.test_rag import add_text, make_dataset
from tests.support.knowledge import new_workspace, services_on
from tests.support.tusk import db_env, tusk_process

pytestmark = pytest.mark.acceptance
LINES = 1200


async def _document(conninfo: str) -> str:
    async with services_on(conninfo) as services:
        dataset = await make_dataset(services, await new_workspace(services))
        body = "\n".join(
            f"Record {i}: the sensor in room {i % 97} read {i * 7 % 1000} units at hour {i % 24}."
            for i in range(LINES)
        )
        rule = {"mode": "custom", "rules": {"segmentation": {"separator": "\\n", "max_tokens": 60}}}
        document = await add_text(services, dataset, "sensors", body, process_rule=rule)
        return str(document.id)


async def _progress(conninfo: str, document_id: str) -> tuple[str, int, int]:
    async with services_on(conninfo) as services, services.engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT indexing_status, completed_segments, total_segments FROM documents "
                    "WHERE id = :d"
                ),
                {"d": document_id},
            )
        ).one()
        return row.indexing_status, row.completed_segments, row.total_segments


async def _chunks(conninfo: str, document_id: str) -> tuple[int, int, int]:
    async with services_on(conninfo) as services, services.engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT count(*), count(DISTINCT position), count(DISTINCT generation) "
                    "FROM document_segments WHERE document_id = :d"
                ),
                {"d": document_id},
            )
        ).one()
        return row[0], row[1], row[2]


def wait_until(check: object, timeout: float) -> tuple[str, int, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = asyncio.run(check())  # type: ignore[operator]
        if state is not None:
            return state  # type: ignore[no-any-return]
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_a_killed_worker_leaves_no_duplicate_and_no_gap(
    fresh_database: str, tmp_path: Path
) -> None:
    document_id = asyncio.run(_document(fresh_database))
    env = db_env(fresh_database, TUSK_WORKER_HEARTBEAT_SECONDS="1", TUSK_WORKER_STALLED_SECONDS="4")

    async def partly_done() -> tuple[str, int, int] | None:
        status, done, total = await _progress(fresh_database, document_id)
        return (status, done, total) if done >= 64 else None

    with tusk_process(["worker"], env, tmp_path / "first.log") as first:
        status, done, total = wait_until(partly_done, 120)
        os.kill(first.pid, signal.SIGKILL)
        first.proc.wait(30)
    assert status == "indexing"
    assert done < total == LINES  # killed in the middle

    async def finished() -> tuple[str, int, int] | None:
        progress = await _progress(fresh_database, document_id)
        return progress if progress[0] in ("completed", "error") else None

    with tusk_process(["worker"], env, tmp_path / "second.log") as second:
        status, done, total = wait_until(finished, 180)
        second.stop_gracefully()
    assert (status, done, total) == ("completed", LINES, LINES)
    assert asyncio.run(_chunks(fresh_database, document_id)) == (LINES, LINES, 1)
