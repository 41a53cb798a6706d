"""Running a plan: nodes run as soon as every incoming edge is decided and one is taken; branch
nodes take the edges of one handle and the others are skipped, the skip flowing downstream;
independent branches run concurrently. Around each node: events, retries, error strategies,
limits and stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

from tusk.workflow.context import RunContext
from tusk.workflow.events import (
    ContainerCompleted,
    ContainerStarted,
    Event,
    NodeFinished,
    NodeRetry,
    NodeRun,
    NodeStarted,
    RunFailed,
    RunState,
    TextChunk,
    WorkflowFinished,
    WorkflowStarted,
)
from tusk.workflow.graph import CONTAINER_TYPES, DEFAULT_HANDLE, Graph
from tusk.workflow.nodes.base import (
    FAIL_BRANCH,
    SUCCESS_BRANCH,
    InnerRun,
    Node,
    NodeContext,
    NodeError,
    NodeResult,
)
from tusk.workflow.plan import Plan
from tusk.workflow.streaming import Coordinator
from tusk.workflow.values import ValueTooLarge, check_size
from tusk.workflow.variables import VariablePool

log = logging.getLogger(__name__)

# Nodes that only compute from the pool: run in the executor's own task, which saves a task
# per node on long chains of them.
INLINE_TYPES = frozenset(
    {
        "start",
        "end",
        "answer",
        "if-else",
        "variable-aggregator",
        "variable-assigner",
        "assigner",
        "iteration-start",
        "loop-start",
        "loop-end",
        "list-operator",
        "template-transform",
    }
)


class RunAborted(Exception):
    """The run as a whole cannot go on (a limit was reached)."""


@dataclass(frozen=True, slots=True)
class Scope:
    """Where a node runs: at the top level, or in one pass of an iteration or loop."""

    container_id: str | None = None
    container_type: str | None = None
    index: int | None = None

    def label(self) -> dict[str, Any]:
        if self.container_id is None:
            return {}
        kind = "iteration" if self.container_type == "iteration" else "loop"
        return {f"{kind}_id": self.container_id, f"{kind}_index": self.index}


TOP = Scope()


@dataclass(frozen=True, slots=True)
class _Outcome:
    status: str  # succeeded, exception, failed, stopped
    handle: str | None
    error: str | None = None


def _takes(edge_handle: str, handle: str) -> bool:
    return edge_handle == handle or (handle == DEFAULT_HANDLE and edge_handle == SUCCESS_BRANCH)


def describe_error(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, NodeError):
        return str(exc), exc.error_type
    if isinstance(exc, ValueTooLarge | ValueError | TypeError | KeyError):
        return f"{type(exc).__name__}: {exc}", type(exc).__name__
    log.exception("a node failed unexpectedly")
    return f"internal error ({type(exc).__name__}): {exc}", type(exc).__name__


def default_outputs(node: Node, error: str, error_type: str) -> dict[str, Any]:
    outputs = {item.key: item.value for item in node.common.default_value}
    outputs.update(error_message=error, error_type=error_type)
    return outputs


class _Level:
    """One pass over one graph level (the top, or a container's inside)."""

    def __init__(self, executor: Executor, graph: Graph, pool: VariablePool, scope: Scope) -> None:
        self.executor = executor
        self.graph = graph
        self.pool = pool
        self.scope = scope
        self.undecided = {node_id: len(edges) for node_id, edges in graph.incoming.items()}
        self.reached: set[str] = set()
        self.ready: deque[tuple[str, str | None]] = deque()
        self.done: asyncio.Queue[tuple[str, _Outcome]] = asyncio.Queue()
        self.tasks: set[asyncio.Task[None]] = set()
        self.alone: asyncio.Task[Any] | None = None  # runs the level's only node, in place
        self.running = 0  # spawned nodes whose outcome is not yet taken from `done`
        self.failure: str | None = None
        self.break_requested = False
        self.steps = 0
        self.tokens = 0
        specs = executor.plan.responses.get(scope.container_id, [])
        self.responses = Coordinator(specs, graph.nodes, pool, executor.emit)

    async def run(self) -> InnerRun:
        if self.graph.entry is not None:
            self.ready.append((self.graph.entry, None))
        try:
            await self._loop()
        finally:
            await self._cancel_all()
        status = "failed" if self.failure else "stopped" if self.executor.stopped else "succeeded"
        return InnerRun(
            status, self.failure, self.steps, self.tokens, 0, break_requested=self.break_requested
        )

    async def _loop(self) -> None:
        executor = self.executor
        while self.ready or self.running:
            while self.ready and not self.failure and not executor.stopped:
                node_id, predecessor = self.ready.popleft()
                node = executor.plan.nodes[node_id]
                if node.spec.type in INLINE_TYPES and not node.common.retry_config.retry_enabled:
                    self._after(node_id, await executor.execute(node, self, predecessor))
                elif not self.ready and not self.running:
                    self._after(node_id, await self._run_alone(node, predecessor))
                else:
                    self._spawn(node, predecessor)
            if self.failure or executor.stopped or not self.running:
                return
            node_id, outcome = await self.done.get()
            if node_id:  # "" is stop()'s wake-up call
                self.running -= 1
                self._after(node_id, outcome)

    async def _run_alone(self, node: Node, predecessor: str | None) -> _Outcome:
        """Run the only node that can run now in this task: nothing could run beside it, and
        in a task of its own it would wait a turn of the event loop to start (under load, an
        LLM node's request left milliseconds later). A stop cancels this task meanwhile."""
        task = asyncio.current_task()
        assert task is not None
        self.alone = task
        try:
            return await self._outcome_of(node, predecessor)
        finally:
            self.alone = None
            self.executor.take_back_cut(task)

    async def _outcome_of(self, node: Node, predecessor: str | None) -> _Outcome:
        try:
            return await self.executor.execute(node, self, predecessor)
        except Exception as exc:  # a fault of the engine itself: end the run, not hang it
            log.exception("workflow engine fault in node %s", node.id)
            return _Outcome("failed", None, f"internal error in node {node.id}: {exc}")

    def _spawn(self, node: Node, predecessor: str | None) -> None:
        async def work() -> None:
            self.done.put_nowait((node.id, await self._outcome_of(node, predecessor)))

        task = asyncio.create_task(work())
        self.running += 1
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _cancel_all(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _after(self, node_id: str, outcome: _Outcome) -> None:
        if outcome.status == "failed":
            self.failure = self.failure or outcome.error or "a node failed"
        if outcome.status in ("failed", "stopped"):
            return
        if self.executor.plan.nodes[node_id].spec.type == "loop-end":
            self.break_requested = True
        self.responses.node_finished(node_id)
        for edge in self.graph.outgoing[node_id]:
            taken = outcome.handle is not None and _takes(edge.handle, outcome.handle)
            if taken:
                self.responses.edge_taken(edge.id)
            self._decide(edge.target, taken, node_id)

    def _decide(self, target: str, taken: bool, source: str) -> None:
        if taken:
            self.reached.add(target)
        self.undecided[target] -= 1
        if self.undecided[target] > 0:
            return
        if target in self.reached:
            self.ready.append((target, source))
        else:
            self._skip(target)

    def _skip(self, node_id: str) -> None:
        self.responses.node_skipped(node_id)
        for edge in self.graph.outgoing[node_id]:
            self._decide(edge.target, False, node_id)


class Executor:
    def __init__(
        self,
        plan: Plan,
        run: RunContext,
        pool: VariablePool,
        emit: Any,
        *,
        inputs: dict[str, Any] | None = None,
    ) -> None:
        self.plan = plan
        self.run_context = run
        self.pool = pool
        self._sink = emit
        self.state = RunState(
            id=str(run.run_id), workflow_id=str(run.workflow_id), inputs=dict(inputs or {})
        )
        self.stopped = False
        self.answer: list[str] = []
        self._levels: list[_Level] = []
        self._cut: set[asyncio.Task[Any]] = set()  # running a node in place, cancelled by stop
        self._slots = asyncio.Semaphore(run.limits.max_parallel)
        self._outputs: dict[str, Any] = {}

    # --- the run as a whole -------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        if isinstance(event, TextChunk) and self.plan.mode == "chat":
            self.answer.append(event.text)
        self._sink(event)

    async def run(self) -> RunState:
        state, limits = self.state, self.run_context.limits
        self.emit(WorkflowStarted(state))
        started = time.perf_counter()
        try:
            if self.run_context.depth > limits.max_depth:
                raise RunAborted(f"workflows call each other over {limits.max_depth} deep")
            async with asyncio.timeout(limits.max_time):
                outcome = await self.run_level(self.plan.top, self.pool, TOP)
            error = outcome.error
        except TimeoutError:
            error = f"the run took over {limits.max_time:g} s (WORKFLOW_MAX_EXECUTION_TIME)"
        except RunAborted as exc:
            error = str(exc)
        self._finish(error, time.perf_counter() - started)
        return state

    def _finish(self, error: str | None, elapsed: float) -> None:
        state = self.state
        state.elapsed_time = elapsed
        state.finished_at = time.time()
        if error is not None:
            state.status, state.error = "failed", error
        elif self.stopped:
            state.status = "stopped"
        elif state.exceptions_count:
            state.status = "partial-succeeded"
        else:
            state.status = "succeeded"
        state.outputs = self._run_outputs()
        self.emit(WorkflowFinished(state))
        if state.status == "failed":
            self.emit(RunFailed(error or "the run failed"))

    def _run_outputs(self) -> dict[str, Any]:
        if self.plan.mode == "chat":
            return {"answer": "".join(self.answer), **self._outputs}
        return self._outputs

    def stop(self) -> None:
        """Halt the run: no node starts after this, and running ones are cancelled."""
        self.stopped = True
        for level in self._levels:
            for task in level.tasks:
                task.cancel()
            if level.alone is not None and level.alone not in self._cut:
                self._cut.add(level.alone)  # once, however many levels it runs in place
                level.alone.cancel()
            level.done.put_nowait(("", _Outcome("stopped", None)))

    def take_back_cut(self, task: asyncio.Task[Any]) -> None:
        """The node that `stop` cancelled in `task` has ended as stopped: the task goes on."""
        if task in self._cut:
            self._cut.discard(task)
            task.uncancel()

    # --- levels and nodes -----------------------------------------------------------------

    async def run_level(self, graph: Graph, pool: VariablePool, scope: Scope) -> InnerRun:
        level = _Level(self, graph, pool, scope)
        self._levels.append(level)
        try:
            return await level.run()
        finally:
            self._levels.remove(level)

    def _count_step(self) -> int:
        self.state.total_steps += 1
        if self.state.total_steps > self.run_context.limits.max_steps:
            limit = self.run_context.limits.max_steps
            raise RunAborted(f"the run reached {limit} node runs (WORKFLOW_MAX_EXECUTION_STEPS)")
        return self.state.total_steps

    def _record(self, node: Node, level: _Level, predecessor: str | None) -> NodeRun:
        record = NodeRun(
            id=str(uuid.uuid4()),
            node_id=node.id,
            node_type=node.spec.type,
            title=node.title,
            index=self._count_step(),
            predecessor_node_id=predecessor,
        )
        if level.scope.container_id is not None:
            record.metadata.update(level.scope.label())
            if level.scope.container_type == "iteration":
                record.iteration_id = level.scope.container_id
            else:
                record.loop_id = level.scope.container_id
        return record

    async def execute(self, node: Node, level: _Level, predecessor: str | None) -> _Outcome:
        try:
            record = self._record(node, level, predecessor)
        except RunAborted as exc:
            return _Outcome("failed", None, str(exc))
        level.steps += 1
        container = node.spec.type in CONTAINER_TYPES
        if container:
            self.emit(ContainerStarted(record))
        else:
            self.emit(NodeStarted(record))
        level.responses.node_started(node.id)

        def stream(name: str, text: str) -> None:
            level.responses.chunk(node.id, name, text)

        ctx = NodeContext(self.run_context, level.pool, record, stream, self.emit, self.run_inner)
        started = time.perf_counter()
        try:
            if container:
                result = await self._attempts(node, ctx, record)
            else:
                async with self._slots:
                    result = await self._attempts(node, ctx, record)
        except asyncio.CancelledError:
            record = replace(record)
            self._close(record, started, "stopped", error="the run was stopped")
            self._finished_event(node, record)
            if self.stopped:
                return _Outcome("stopped", None)
            raise
        except RunAborted as exc:
            record = replace(record)
            self._close(record, started, "failed", error=str(exc))
            self._finished_event(node, record)
            return _Outcome("failed", None, str(exc))
        except Exception as exc:  # the node failed after its retries: apply its error strategy
            return self._failed(node, level, record, started, exc)
        return self._succeeded(node, level, record, started, result, container)

    async def _attempts(self, node: Node, ctx: NodeContext, record: NodeRun) -> NodeResult:
        retry = node.common.retry_config
        attempt = 0
        while True:
            try:
                result = await node.run(ctx)
                self._check_sizes(result)
                return result
            except (asyncio.CancelledError, RunAborted):
                raise
            except Exception as exc:
                if not retry.retry_enabled or attempt >= retry.max_retries:
                    raise
                attempt += 1
                message, _ = describe_error(exc)
                failed = replace(record, status="retry", error=message, finished_at=time.time())
                self.emit(NodeRetry(failed, attempt))
                await asyncio.sleep(retry.retry_interval / 1000)

    def _check_sizes(self, result: NodeResult) -> None:
        limit = self.run_context.limits.max_variable_size
        for name, value in result.outputs.items():
            if not isinstance(value, int | float | bool) and value is not None:
                check_size(f"output {name!r}", value, limit)

    def _close(
        self, record: NodeRun, started: float, status: str, *, error: str | None = None
    ) -> None:
        record.status = status
        record.error = error
        record.elapsed_time = time.perf_counter() - started
        record.finished_at = time.time()

    def _succeeded(
        self,
        node: Node,
        level: _Level,
        record: NodeRun,
        started: float,
        result: NodeResult,
        container: bool,
    ) -> _Outcome:
        record = replace(record, metadata={**record.metadata, **result.metadata})
        record.inputs, record.process_data, record.outputs = (
            result.inputs,
            result.process_data,
            result.outputs,
        )
        self._close(record, started, "succeeded")
        level.pool.set_outputs(node.id, result.outputs)
        if not container:
            self._account(record, level)
        if node.spec.type == "end" and level.scope.container_id is None:
            self._outputs.update(result.outputs)
        if container:
            self.emit(ContainerCompleted(record, steps=int(result.metadata.get("steps", 0))))
        else:
            self.emit(NodeFinished(record))
        return _Outcome("succeeded", result.handle)

    def _failed(
        self, node: Node, level: _Level, record: NodeRun, started: float, exc: Exception
    ) -> _Outcome:
        error, error_type = describe_error(exc)
        record = replace(record, metadata=dict(record.metadata), error_type=error_type)
        strategy = node.common.error_strategy
        if strategy is None:
            self._close(record, started, "failed", error=error)
            self._finished_event(node, record)
            return _Outcome("failed", None, error)
        outputs = (
            {"error_message": error, "error_type": error_type}
            if strategy == FAIL_BRANCH
            else default_outputs(node, error, error_type)
        )
        record.outputs = outputs
        record.metadata["error_strategy"] = strategy
        self._close(record, started, "exception", error=error)
        level.pool.set_outputs(node.id, outputs)
        self.state.exceptions_count += 1
        self._finished_event(node, record)
        return _Outcome("exception", FAIL_BRANCH if strategy == FAIL_BRANCH else DEFAULT_HANDLE)

    def _finished_event(self, node: Node, record: NodeRun) -> None:
        if node.spec.type in CONTAINER_TYPES:
            self.emit(ContainerCompleted(record, steps=0))
        else:
            self.emit(NodeFinished(record))

    def _account(self, record: NodeRun, level: _Level) -> None:
        tokens = record.metadata.get("total_tokens")
        if isinstance(tokens, int):
            self.state.total_tokens += tokens
            level.tokens += tokens
        price = record.metadata.get("total_price")
        if isinstance(price, int | float | str):
            with contextlib.suppress(ValueError):
                self.state.total_price += float(price)

    async def run_inner(self, container: Node, pool: VariablePool, index: int) -> InnerRun:
        """One pass through a container's inside, with `pool` as its scope."""
        graph = self.plan.workflow.inner[container.id]
        scope = Scope(container.id, container.spec.type, index)
        return await self.run_level(graph, pool, scope)
