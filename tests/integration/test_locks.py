"""Advisory locks between processes."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.processes import start_actor, wait_ready
from tusk.db.locks import LockBusy, advisory_lock, lock_id, xact_lock


def test_lock_ids_are_stable_and_distinct() -> None:
    assert lock_id("document:1") == lock_id("document:1")
    assert lock_id("document:1") != lock_id("document:2")
    assert -(2**63) <= lock_id("x") < 2**63


async def test_a_lock_held_by_another_process_is_busy_until_released(
    engine: AsyncEngine, database: str
) -> None:
    child = start_actor("hold_lock", database, "reindex")
    wait_ready(child)
    with pytest.raises(LockBusy):
        async with advisory_lock(engine, "reindex", wait=False):
            pass
    async with engine.begin() as conn:
        assert await xact_lock(conn, "reindex", wait=False) is False
        assert await xact_lock(conn, "other", wait=False) is True

    assert child.stdin is not None
    child.stdin.close()  # the child leaves its `with` block and releases the lock
    assert child.wait(timeout=30) == 0
    async with advisory_lock(engine, "reindex", wait=False), engine.begin() as conn:
        assert await xact_lock(conn, "reindex", wait=False) is False


async def test_a_killed_holder_releases_its_lock(engine: AsyncEngine, database: str) -> None:
    child = start_actor("hold_lock", database, "crash")
    wait_ready(child)
    child.kill()
    child.wait(timeout=30)
    async with advisory_lock(engine, "crash", wait=True):
        pass
