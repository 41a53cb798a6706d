"""Expiring entries, and loads shared by the callers that miss the same key at once."""

from __future__ import annotations

import asyncio

import pytest

from tusk.caching import Expiring


def test_entries_expire_and_the_oldest_make_room() -> None:
    now = [0.0]
    entries: Expiring[str, int] = Expiring(5.0, size=2, clock=lambda: now[0])
    entries.put("a", 1)
    now[0] = 4.9
    assert entries.get("a") == 1
    now[0] = 5.0
    assert entries.get("a") is None
    entries.put("b", 2)
    entries.put("c", 3)
    entries.put("d", 4)
    assert (entries.get("b"), entries.get("c"), entries.get("d")) == (None, 3, 4)
    entries.drop_where(lambda key, _: key == "c")
    assert len(entries) == 1


class Loader:
    """Counts its loads; each waits until `release` is set, then returns its number."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.failure: Exception | None = None

    async def __call__(self) -> int:
        self.calls += 1
        number = self.calls
        await self.release.wait()
        if self.failure is not None:
            raise self.failure
        return number


async def started() -> None:
    """Let the callers started so far reach their wait on the load."""
    for _ in range(3):
        await asyncio.sleep(0)


async def test_callers_missing_one_key_at_once_share_one_load() -> None:
    entries: Expiring[str, int] = Expiring(5.0)
    load = Loader()
    callers = [asyncio.create_task(entries.get_or_load("k", load)) for _ in range(20)]
    await started()
    load.release.set()
    assert await asyncio.gather(*callers) == [1] * 20
    assert load.calls == 1
    assert entries.get("k") == 1
    assert await entries.get_or_load("k", load) == 1  # kept: no second load
    assert load.calls == 1


async def test_a_failed_load_reaches_every_caller_and_is_not_kept() -> None:
    entries: Expiring[str, int] = Expiring(5.0)
    load = Loader()
    load.failure = LookupError("no such key")
    callers = [asyncio.create_task(entries.get_or_load("k", load)) for _ in range(3)]
    await started()
    load.release.set()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert [type(o) for o in outcomes] == [LookupError] * 3
    assert load.calls == 1
    load.failure = None
    assert await entries.get_or_load("k", load) == 2


async def test_a_caller_that_goes_away_leaves_the_load_to_the_others() -> None:
    entries: Expiring[str, int] = Expiring(5.0)
    load = Loader()
    leaving = asyncio.create_task(entries.get_or_load("k", load))
    staying = asyncio.create_task(entries.get_or_load("k", load))
    await started()
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    load.release.set()
    assert await staying == 1
    assert entries.get("k") == 1


async def test_a_load_begun_before_a_drop_is_handed_out_but_not_kept() -> None:
    entries: Expiring[str, int] = Expiring(5.0)
    load = Loader()
    before = asyncio.create_task(entries.get_or_load("k", load))
    await started()
    entries.drop("k")  # the row changed while it was being read
    after = asyncio.create_task(entries.get_or_load("k", load))
    await started()
    load.release.set()
    assert (await before, await after) == (1, 2)  # the caller after the drop read anew
    assert load.calls == 2
    assert entries.get("k") == 2


async def test_what_keep_refuses_is_returned_and_loaded_again_next_time() -> None:
    entries: Expiring[str, int] = Expiring(5.0)
    load = Loader()
    load.release.set()
    assert await entries.get_or_load("k", load, keep=lambda value: value > 1) == 1
    assert entries.get("k") is None
    assert await entries.get_or_load("k", load, keep=lambda value: value > 1) == 2
    assert entries.get("k") == 2
