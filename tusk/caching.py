"""Per-process caches of what the database holds: entries that expire, and loads that run once
for every concurrent miss of a key.

Without the latter, an entry that expires under load is missed by every request that arrives
before its reload ends: at 64 concurrent requests, as many identical queries took as many
pooled connections at once, and the pool's other users waited for them."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

MAX_ENTRIES = 10_000

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _always(_: object) -> bool:
    return True


def _consume_outcome(task: asyncio.Task[object]) -> None:
    """Retrieve a finished load's exception, in case every caller waiting for it went away."""
    if not task.cancelled():
        task.exception()


class Expiring(Generic[K, V]):
    """A bounded map whose entries are forgotten `ttl` seconds after they were put (None: kept
    until the oldest are pushed out by new ones)."""

    def __init__(
        self,
        ttl: float | None,
        size: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.size = size
        self.clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._loading: dict[K, asyncio.Task[V]] = {}
        self._generation = 0  # moves at every drop: a load begun before keeps nothing

    def get(self, key: K) -> V | None:
        found = self._entries.get(key)
        if found is None:
            return None
        stored_at, value = found
        if self.ttl is not None and self.clock() - stored_at >= self.ttl:
            del self._entries[key]
            return None
        return value

    def put(self, key: K, value: V) -> V:
        self._entries[key] = (self.clock(), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value

    async def get_or_load(
        self, key: K, load: Callable[[], Awaitable[V]], keep: Callable[[V], bool] = _always
    ) -> V:
        """The entry of `key`, or else what `load()` returns, kept if `keep` says so. Callers
        missing the same key at once share one load; a caller that goes away does not cancel
        it for the others. Its exception reaches each of them and is not kept."""
        found = self.get(key)
        if found is not None:
            return found
        loading = self._loading.get(key)
        if loading is None:
            loading = asyncio.get_running_loop().create_task(self._load(key, load, keep))
            loading.add_done_callback(_consume_outcome)
            self._loading[key] = loading
        return await asyncio.shield(loading)

    async def _load(self, key: K, load: Callable[[], Awaitable[V]], keep: Callable[[V], bool]) -> V:
        generation = self._generation
        try:
            value = await load()
        finally:
            if self._loading.get(key) is asyncio.current_task():
                del self._loading[key]
        if generation == self._generation and keep(value):
            self.put(key, value)
        return value

    def drop(self, key: K) -> None:
        self._forget_loads()
        self._entries.pop(key, None)

    def drop_where(self, doomed: Callable[[K, V], bool]) -> None:
        self._forget_loads()
        for key in [k for k, (_, v) in self._entries.items() if doomed(k, v)]:
            del self._entries[key]

    def clear(self) -> None:
        self._forget_loads()
        self._entries.clear()

    def _forget_loads(self) -> None:
        """Loads under way may have read what has just changed: their callers still get what
        they read, but it is not kept, and the next caller loads anew."""
        self._generation += 1
        self._loading.clear()

    def __len__(self) -> int:
        return len(self._entries)
