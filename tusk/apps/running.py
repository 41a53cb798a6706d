"""What every turn of a chat, completion or agent-chat app does while it runs: it works in a task
of its own, hands its chunks to the reader through a queue, can be stopped by a stop request or
by a reader that leaves early (unless the app finishes in the background), and turns any failure
into Dify's error chunk."""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Coroutine
from typing import Any

from tusk.apps.chat_wire import ChatIds, blocking_body
from tusk.apps.tasks import TaskRegistry
from tusk.apps.turns import TurnRows, written
from tusk.errors import TuskError
from tusk.models.base import request_sent
from tusk.workflow.nodes.base import NodeError

log = logging.getLogger(__name__)

# Error codes Dify's stream and error body use as they are; other failures of the model call
# are `completion_request_error`.
KEPT_CODES = frozenset(
    {
        "provider_not_initialize",
        "provider_quota_exceeded",
        "model_currently_not_support",
        "invalid_param",
        "app_unavailable",
    }
)
INTERNAL_ERROR = "Internal Server Error, please contact support."


class GenerationFailed(TuskError):
    def __init__(self, message: str, code: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.status = code, status


def wire_error(exc: Exception) -> tuple[str, str, int]:
    """Dify's (code, message, status) for a failed generation."""
    if isinstance(exc, TuskError):
        code = exc.code if exc.code in KEPT_CODES else "completion_request_error"
        return code, exc.message, 400
    if isinstance(exc, NodeError):
        return "completion_request_error", str(exc), 400
    return "internal_server_error", INTERNAL_ERROR, 500


class RunningTurn(ABC):
    def __init__(
        self,
        tasks: TaskRegistry,
        ids: ChatIds,
        rows: TurnRows,
        *,
        finish_in_background: bool,
    ) -> None:
        self.tasks = tasks
        self.ids = ids
        self.rows = rows  # the write of the turn's own rows (tusk.apps.turns)
        self.finish_in_background = finish_in_background  # a reader that leaves does not stop it
        self.answer = ""  # as the user sees it
        self.stopped = False
        self.started = time.perf_counter()
        self.work: asyncio.Task[Any] | None = None  # runs the model call or agent a stop cuts
        self._cutting = False
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._ended = False

    @abstractmethod
    async def _generate(self) -> None: ...

    @abstractmethod
    async def _fail(self, code: str, message: str, status: int) -> None:
        """Record the failure and send the error chunk."""

    @abstractmethod
    def metadata(self) -> dict[str, Any]: ...

    async def rows_written(self) -> None:
        """Wait until the turn's own rows are written (what refers to them, and its end, are
        written after); raises if they could not be."""
        self.rows.go.set()
        await asyncio.shield(self.rows.task)  # a stopped turn does not cut the write short

    async def rows_were_written(self) -> bool:
        self.rows.go.set()
        return await written(self.rows.task)

    def start(self) -> None:
        self.tasks.register(self.ids.task_id, self.stop)
        self._task = asyncio.create_task(self._produce())

    def stop(self) -> None:
        self.stopped = True
        self.cut_work()

    def cut_work(self) -> None:
        """Cancel the work under way in `stoppable` (once)."""
        if self.work is not None and not self._cutting:
            self._cutting = True
            self.work.cancel()

    async def stoppable(self, work: Coroutine[Any, Any, None]) -> bool:
        """Run `work` (the model call, the agent) in this task, as what a stop cuts short:
        False if it was. (In a task of its own, it would wait a turn of the event loop to
        start, and each of its results another to reach this one.)"""
        if self.stopped:
            work.close()
            return False
        task = asyncio.current_task()
        assert task is not None
        self.work = task
        try:
            await work
            if self._cutting:  # cut from within, after its last wait: the cancel lands here
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            # Unless the task is also being cancelled from outside (shutting down).
            if not self._cutting or task.uncancel() > 0:
                raise
            return False
        finally:
            self.work = None
        return True

    async def _produce(self) -> None:
        # The rows are written once the model's request is out (or the first chunk, or the end,
        # comes first: some turns call no model).
        request_sent.set(self.rows.go.set)
        try:
            await self._generate()
        except Exception as exc:  # every failure is recorded and reported to the client
            if not isinstance(exc, TuskError | NodeError):
                log.exception("turn %s failed", self.ids.task_id)
            await self._fail(*wire_error(exc))
        finally:
            self.tasks.unregister(self.ids.task_id)
            self.rows.go.set()
            self._queue.put_nowait(None)

    def _put(self, chunk: dict[str, Any]) -> None:
        self.rows.go.set()
        self._queue.put_nowait(chunk)

    async def chunks(self) -> AsyncGenerator[dict[str, Any]]:
        """The chunks in order; a reader that stops early stops the turn, unless it finishes in
        the background (it is recorded as it ends, and a stop request still stops it)."""
        try:
            # The turn's ids are told once their rows are there (the model call does not wait
            # for them), so that a client that reads its conversation at once finds it.
            await written(self.rows.task)
            while (chunk := await self._queue.get()) is not None:
                yield chunk
            self._ended = True
        finally:
            if not self._ended and not self.finish_in_background:
                self.stop()

    def _blocking_body(self) -> dict[str, Any]:
        return blocking_body(self.ids, self.answer, self.metadata())

    async def blocking(self) -> dict[str, Any]:
        failure: dict[str, Any] | None = None
        async for chunk in self.chunks():
            if chunk["event"] == "error":
                failure = chunk
        if failure is not None:
            raise GenerationFailed(failure["message"], failure["code"], failure["status"])
        return self._blocking_body()
