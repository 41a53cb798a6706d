"""Generations that can be stopped from any API process: each registers a stop callback under
its task id; a stop request is published with NOTIFY and every process checks its own."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tusk.db import pubsub
from tusk.db.pubsub import Broker

TOPIC = "app-task-stop"


class TaskRegistry:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], broker: Broker) -> None:
        self.sessions = sessions
        self.broker = broker
        self._running: dict[str, Callable[[], Any]] = {}

    def register(self, task_id: uuid.UUID | str, stop: Callable[[], Any]) -> None:
        self._running[str(task_id)] = stop

    def unregister(self, task_id: uuid.UUID | str) -> None:
        self._running.pop(str(task_id), None)

    def stop_here(self, task_id: str) -> bool:
        stop = self._running.get(task_id)
        if stop is not None:
            stop()
        return stop is not None

    async def stop(self, task_id: str) -> None:
        """Stop the task wherever it runs; a task that already ended is left alone."""
        if self.stop_here(task_id):
            return
        async with self.sessions.begin() as db:
            await pubsub.publish(db, TOPIC, {"task_id": task_id})

    async def follow_stops(self) -> None:
        """Listen for stop requests from every process; runs until cancelled."""
        async with self.broker.subscribe(TOPIC) as subscription:
            async for message in subscription:
                with contextlib.suppress(KeyError, TypeError):
                    self.stop_here(str(message["task_id"]))
