"""The workflow engine: what a run costs beyond its nodes' own work, with its recording in
PostgreSQL, against the engine alone and against a naive recorder that writes every node
execution the way Dify 0.15 does (an ORM INSERT at the start and an UPDATE at the end, each
committed on its own); then runs over HTTP at 1, 16 and 60 concurrent blocking requests, against
the model call alone; and a 1000-node chain and a 100-way fan-out.

    .venv/bin/python -m bench.workflow [--runs N] [--calls N] [--quick] [--profile]

The Tusk API of the HTTP part and the model test server run in child processes
(`python -m bench.workflow api ...`, `... serve`), started by this one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import os
import pstats
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bench.common import (
    BenchError,
    MemorySampler,
    Stats,
    http_clients,
    log_tail,
    machine_description,
    markdown_fields,
    markdown_table,
    mib,
    percentile,
    positive_int,
    postmaster_pid,
    ratio,
    scratch_dir,
)
from tusk.api.app import create_app
from tusk.config import Settings
from tusk.db import migrate
from tusk.db.embedded import EmbeddedPostgres
from tusk.db.models import App, Workflow, WorkflowNodeExecution, WorkflowRun
from tusk.runtime import EMBEDDED_SERVER_SETTINGS, Runtime
from tusk.testing.openai_server import FakeOpenAI
from tusk.testing.processes import clean_env, free_port
from tusk.workflow import store
from tusk.workflow.context import RunContext
from tusk.workflow.events import Event, NodeFinished, NodeStarted, WorkflowFinished, WorkflowStarted
from tusk.workflow.executor import Executor
from tusk.workflow.runner import RunRequest, WorkflowRunner
from tusk.workflow.variables import VariablePool

REPO_ROOT = Path(__file__).resolve().parents[1]
DATABASE = "bench"
SECRET = "bench-workflow-secret-key-that-is-long-enough-0123456789"  # noqa: S105
API_KEY = "sk-bench-workflow-0123456789"
ADMIN = {"email": "bench@example.com", "name": "Bench", "password": "passw0rd-bench"}
GPT = {"provider": "langgenius/openai/openai", "name": "gpt-bench", "mode": "chat"}
NAME = "Ada"  # the one input of every workflow, which each trivial node passes on

DEFAULT_RUNS = 200  # of the 3-node chain; longer chains get fewer (RUN_NODES)
DEFAULT_CALLS = 300  # HTTP requests, at least, per concurrency level and system
# Nodes in the run, start and end included.
CHAIN_SIZES = (3, 10, 50, 200)
RUN_NODES = 2000  # node runs per size and system, about
MIN_RUNS = 10
WARMUP = 3
BIG_CHAIN, FAN_OUT = 1000, 100
BIG_RUNS = 5
# A run whose node count reaches the recorder's batch size (200) right at its end once waited
# forever for the recorder's writer task to stop; still checked once, with a deadline.
HANG_CHECK_NODES, HANG_SECONDS = 200, 10.0
LEVELS = (1, 16, 60)
TRANSACTION_RUNS = 50
USAGE_FLUSH_SECONDS = 1.5  # the API writes its model usage records every second
TRIVIAL = ("template-transform", "if-else", "variable-aggregator")
MAX_STEPS = 5000  # the 1000-node chain is over WORKFLOW_MAX_EXECUTION_STEPS's default of 500
GOAL_FIXED_MS, GOAL_NODE_MS, GOAL_P95_60_MS = 5.0, 0.5, 220.0

ENGINE, TUSK, NAIVE = "engine alone", "Tusk (WorkflowRunner)", "naive recorder (Dify 0.15 way)"
SYSTEMS = (ENGINE, TUSK, NAIVE)
HTTP_TUSK = "Tusk: POST /v1/workflows/run, blocking"
HTTP_TRIVIAL = "Tusk, start → template → end (no model call)"
HTTP_THREE_TRIVIAL = "Tusk, start → template → if-else → aggregator → end (no model call)"
HTTP_BASE = "model call alone: POST /v1/chat/completions"


# --- graphs -----------------------------------------------------------------------------------


def _node(node_id: str, node_type: str, **data: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "custom", "data": {"type": node_type, "title": node_id, **data}}


def _edge(source: str, target: str, handle: str = "source") -> dict[str, Any]:
    return {"id": f"{source}-{handle}-{target}", "source": source, "target": target,
            "sourceHandle": handle}  # fmt: skip


START = _node("start", "start", variables=[{"variable": "name", "type": "text-input"}])


def _end(selector: list[str]) -> dict[str, Any]:
    return _node("end", "end", outputs=[{"variable": "result", "value_selector": selector}])


def _trivial(node_id: str, kind: str, value: list[str]) -> dict[str, Any]:
    if kind == "template-transform":
        return _node(node_id, kind, template="{{ v }}",
                     variables=[{"variable": "v", "value_selector": value}])  # fmt: skip
    if kind == "if-else":
        condition = {"variable_selector": value, "comparison_operator": "not empty", "value": ""}
        case = {"case_id": "true", "logical_operator": "and", "conditions": [condition]}
        return _node(node_id, kind, cases=[case])
    return _node(node_id, kind, variables=[value])


def chain_graph(size: int) -> dict[str, Any]:
    """start, then size - 2 trivial nodes (template, if-else, aggregator, ...), then end."""
    nodes, edges = [START], []
    value, previous, handles = ["start", "name"], "start", ["source"]
    for i in range(size - 2):
        kind, node_id = TRIVIAL[i % len(TRIVIAL)], f"n{i}"
        nodes.append(_trivial(node_id, kind, value))
        edges += [_edge(previous, node_id, handle) for handle in handles]
        previous = node_id
        handles = ["true", "false"] if kind == "if-else" else ["source"]
        if kind != "if-else":
            value = [node_id, "output"]
    nodes.append(_end(value))
    edges += [_edge(previous, "end", handle) for handle in handles]
    return {"nodes": nodes, "edges": edges}


def fan_out_graph(width: int) -> dict[str, Any]:
    """start -> `width` template nodes side by side -> one aggregator of them all -> end."""
    branches = [_trivial(f"b{i}", "template-transform", ["start", "name"]) for i in range(width)]
    join = _node(
        "join", "variable-aggregator", variables=[[f"b{i}", "output"] for i in range(width)]
    )
    edges = [_edge("start", f"b{i}") for i in range(width)]
    edges += [_edge(f"b{i}", "join") for i in range(width)] + [_edge("join", "end")]
    return {"nodes": [START, *branches, join, _end(["join", "output"])], "edges": edges}


def llm_graph() -> dict[str, Any]:
    prompt = [{"role": "user", "text": "{{#start.name#}}"}]
    llm = _node("llm", "llm", model=GPT, prompt_template=prompt, context={"enabled": False})
    edges = [_edge("start", "llm"), _edge("llm", "end")]
    return {"nodes": [START, llm, _end(["llm", "text"])], "edges": edges}


def node_count(graph: dict[str, Any]) -> int:
    return len(graph["nodes"])


# --- one run, three ways ----------------------------------------------------------------------


@dataclass(frozen=True)
class Timed:
    seconds: float  # the whole run, until its end is recorded (for those that record)
    node_work: float  # the sum of the nodes' own elapsed time
    nodes: int


@dataclass
class Target:
    """A published workflow of an app, and the runner that runs it."""

    runner: WorkflowRunner
    app: App
    workflow: Workflow
    expected: Any

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        return self.runner.resources.sessions


def _request(target: Target) -> RunRequest:
    return RunRequest(
        app=target.app,
        workflow=target.workflow,
        inputs={"name": NAME},
        user_id="bench",
        created_by_role="end_user",
        created_by=None,
    )


def _checked(target: Target, events: Sequence[Event], seconds: float) -> Timed:
    finished = [e.run for e in events if isinstance(e, WorkflowFinished)]
    if not finished or finished[0].status != "succeeded":
        state = finished[0] if finished else None
        raise BenchError(f"a run did not succeed: {state}")
    if finished[0].outputs != {"result": target.expected}:
        raise BenchError(f"a run returned {finished[0].outputs!r}")
    work = [e.node.elapsed_time for e in events if isinstance(e, NodeFinished)]
    return Timed(seconds, sum(work), len(work))


async def run_tusk(target: Target) -> Timed:
    """Through `WorkflowRunner`: run, record, and wait for the end, as a blocking reply does."""
    started = time.perf_counter()
    handle = target.runner.start(_request(target))
    events = [event async for event in handle.events()]
    return _checked(target, events, time.perf_counter() - started)


def _executor(
    target: Target, emit: Callable[[Event], None], run_id: uuid.UUID | None = None
) -> Executor:
    runner, request = target.runner, _request(target)
    context = RunContext(
        workspace_id=target.app.workspace_id,
        app_id=target.app.id,
        workflow_id=target.workflow.id,
        run_id=run_id or uuid.uuid4(),
        resources=runner.resources,
        inputs=request.inputs,
        limits=runner.limits,
        user_id=request.user_id,
    )
    pool = VariablePool.for_run({"user_id": request.user_id, "files": []})
    plan = runner.plan(target.app, target.workflow)
    return Executor(plan, context, pool, emit, inputs=request.inputs)


async def run_engine(target: Target) -> Timed:
    """The executor alone, its events kept in a list: no recording at all."""
    events: list[Event] = []
    started = time.perf_counter()
    await _executor(target, events.append).run()
    return _checked(target, events, time.perf_counter() - started)


class NaiveRecorder:
    """Dify 0.15's way of recording, over the same events: the run's row inserted at the start
    and updated at the end; for every node execution an ORM INSERT when it starts and, when it
    ends, a lookup and an UPDATE, each in a session and transaction of its own. Events are
    written in order by one task, as Dify's task pipeline does; the run is over when the last
    one is written. (Dify finds the row by `node_execution_id` through an index; here by primary
    key, which is no slower.)"""

    def __init__(self, target: Target, run_id: uuid.UUID) -> None:
        self.target = target
        self.run_id = run_id
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()

    async def drain(self) -> None:
        while (event := await self.queue.get()) is not None:
            await self._write(event)

    async def _write(self, event: Event) -> None:
        async with self.target.sessions() as db:
            if isinstance(event, WorkflowStarted):
                db.add(self._run_row(event))
            elif isinstance(event, NodeStarted):
                db.add(self._node_row(event))
            elif isinstance(event, NodeFinished):
                row = await db.get(WorkflowNodeExecution, uuid.UUID(event.node.id))
                assert row is not None
                node = event.node
                row.status, row.inputs, row.outputs = node.status, node.inputs, node.outputs
                row.process_data, row.execution_metadata = node.process_data, node.metadata
                row.elapsed_time, row.finished_at = node.elapsed_time, datetime.now(UTC)
            elif isinstance(event, WorkflowFinished):
                run = await db.get(WorkflowRun, uuid.UUID(event.run.id))
                assert run is not None
                run.status, run.outputs = event.run.status, event.run.outputs
                run.elapsed_time, run.total_steps = event.run.elapsed_time, event.run.total_steps
                run.finished_at = datetime.now(UTC)
            else:
                return
            await db.commit()

    def _run_row(self, event: WorkflowStarted) -> WorkflowRun:
        target = self.target
        return WorkflowRun(
            id=uuid.UUID(event.run.id), workspace_id=target.app.workspace_id,
            app_id=target.app.id, workflow_id=target.workflow.id, type="workflow",
            triggered_from="app-run", version=target.workflow.version,
            graph=target.workflow.graph, inputs=event.run.inputs, outputs={},
            created_by_role="end_user",
        )  # fmt: skip

    def _node_row(self, event: NodeStarted) -> WorkflowNodeExecution:
        node, target = event.node, self.target
        return WorkflowNodeExecution(
            id=uuid.UUID(node.id), workspace_id=target.app.workspace_id, app_id=target.app.id,
            workflow_id=target.workflow.id, workflow_run_id=self.run_id,
            triggered_from="workflow-run", index=node.index,
            predecessor_node_id=node.predecessor_node_id, node_execution_id=node.id,
            node_id=node.node_id, node_type=node.node_type, title=node.title,
            status="running", execution_metadata={}, created_by_role="end_user",
        )  # fmt: skip


async def run_naive(target: Target) -> Timed:
    events: list[Event] = []
    run_id = uuid.uuid4()
    recorder = NaiveRecorder(target, run_id)

    def emit(event: Event) -> None:
        events.append(event)
        recorder.queue.put_nowait(event)

    started = time.perf_counter()
    executor = _executor(target, emit, run_id)
    writer = asyncio.create_task(recorder.drain())
    await executor.run()
    recorder.queue.put_nowait(None)
    await writer
    return _checked(target, events, time.perf_counter() - started)


RUNNERS: dict[str, Callable[[Target], Awaitable[Timed]]] = {
    ENGINE: run_engine,
    TUSK: run_tusk,
    NAIVE: run_naive,
}


async def alternated(target: Target, runs: int, warmup: int = WARMUP) -> dict[str, list[Timed]]:
    """`runs` runs of each system after a warm-up, the order turned round each time (A B C C B
    A ...), so that drift on a shared machine spreads over all three."""
    timed: dict[str, list[Timed]] = {name: [] for name in SYSTEMS}
    for name in SYSTEMS:
        for _ in range(warmup):
            await RUNNERS[name](target)
    for i in range(runs):
        for name in SYSTEMS if i % 2 == 0 else reversed(SYSTEMS):
            timed[name].append(await RUNNERS[name](target))
    return timed


# --- the in-process API: apps set up over HTTP, runs through its runner -----------------------


def bench_settings() -> Settings:
    return Settings(
        _env_file=None,
        secret_key=SECRET,
        sandbox_pool_size=0,  # no code nodes here
        workflow_max_execution_steps=MAX_STEPS,
        log_level="WARNING",
    )


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _ok(response: Awaitable[httpx.Response]) -> dict[str, Any]:
    answered = await response
    if answered.status_code >= 300:
        raise BenchError(f"{answered.request.url.path}: {answered.status_code} {answered.text}")
    body: dict[str, Any] = answered.json() if answered.content else {}
    return body


async def console_login(client: httpx.AsyncClient, *, first: bool) -> str:
    """The admin's console token; `first`: set the admin up first (a new database)."""
    if first:
        await _ok(client.post("/console/api/setup", json=ADMIN))
    login = {"email": ADMIN["email"], "password": ADMIN["password"]}
    token: str = (await _ok(client.post("/console/api/login", json=login)))["data"]["access_token"]
    return token


async def published_app(
    client: httpx.AsyncClient, token: str, graph: dict[str, Any]
) -> tuple[str, str]:
    """A workflow app with `graph` saved, published and given a Service API key: the app's
    id and the key."""
    auth = _bearer(token)
    body = {"name": "Bench", "mode": "workflow"}
    app_id = (await _ok(client.post("/console/api/apps", json=body, headers=auth)))["id"]
    draft = {"graph": graph, "features": {}}
    base = f"/console/api/apps/{app_id}"
    await _ok(client.post(f"{base}/workflows/draft", json=draft, headers=auth))
    await _ok(client.post(f"{base}/workflows/publish", json={}, headers=auth))
    key: str = (await _ok(client.post(f"{base}/api-keys", headers=auth)))["token"]
    return app_id, key


@asynccontextmanager
async def in_process_api(conninfo: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    api = create_app(Runtime(bench_settings(), conninfo, SECRET, embedded=False))
    async with api.router.lifespan_context(api):
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://tusk") as client:
            yield api, client


async def target_of(api: FastAPI, client: httpx.AsyncClient, token: str, graph: dict[str, Any],
                    expected: Any) -> Target:  # fmt: skip
    app_id, _ = await published_app(client, token, graph)
    runner: WorkflowRunner = api.state.workflows
    async with runner.resources.sessions() as db:
        app = (await db.execute(select(App).where(App.id == uuid.UUID(app_id)))).scalar_one()
        workflow = await store.get_published(db, app)
    return Target(runner, app, workflow, expected)


# --- part one: chains, big graphs, in this process --------------------------------------------


@dataclass(frozen=True)
class Big:
    name: str
    nodes: int
    timed: dict[str, list[Timed]]
    rss_growth: int  # of this process, over the first run (which also builds the plan)
    heap_peak: int  # Python's allocations at their peak during one run (tracemalloc)


@dataclass
class InProcess:
    chains: dict[int, dict[str, list[Timed]]] = field(default_factory=dict)
    big: list[Big] = field(default_factory=list)
    profile: str = ""
    batch_edge_ended: bool = True  # the hang check's run ended within HANG_SECONDS


def runs_for(size: int, runs: int) -> int:
    """Fewer runs of long chains: about as many node runs for each size from 50 nodes up."""
    return max(MIN_RUNS, min(runs, runs * 10 // size))


async def _first_run_growth(target: Target) -> int:
    me = psutil.Process()
    before = me.memory_info().rss
    with MemorySampler(lambda: [os.getpid()], interval=0.005) as sampler:
        await run_tusk(target)
    return max(sampler.peak_rss - before, 0)


async def _heap_peak(target: Target) -> int:
    tracemalloc.start()
    try:
        await run_tusk(target)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def big_graph(name: str, target: Target, runs: int) -> Big:
    growth = await _first_run_growth(target)
    peak = await _heap_peak(target)
    timed = await alternated(target, runs, warmup=1)
    nodes = timed[TUSK][0].nodes
    _progress(name, timed)
    return Big(name, nodes, timed, growth, peak)


async def ends_in_time(target: Target) -> bool:
    """Whether one Tusk run ends within HANG_SECONDS; if not, it is cancelled."""
    handle = target.runner.start(_request(target))
    try:
        async with asyncio.timeout(HANG_SECONDS):
            async for _ in handle.events():
                pass
        return True
    except TimeoutError:
        assert handle.task is not None
        handle.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(handle.task, HANG_SECONDS)
        return False


def _profiled(target: Target) -> Callable[[], Awaitable[str]]:
    async def profile() -> str:
        profiler = cProfile.Profile()
        profiler.enable()
        await run_tusk(target)
        profiler.disable()
        return top_functions(pstats.Stats(profiler))

    return profile


class _Text:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)


async def measure_in_process(conninfo: str, runs: int, profile: bool) -> InProcess:
    results = InProcess()
    async with in_process_api(conninfo) as (api, client):
        token = await console_login(client, first=True)
        bigs = {f"{BIG_CHAIN}-node chain": chain_graph(BIG_CHAIN),
                f"{FAN_OUT}-way fan-out": fan_out_graph(FAN_OUT)}  # fmt: skip
        for name, graph in bigs.items():
            target = await target_of(api, client, token, graph, NAME)
            results.big.append(await big_graph(name, target, BIG_RUNS))
            if profile and name.endswith("chain"):
                results.profile = await _profiled(target)()
        for size in CHAIN_SIZES:
            target = await target_of(api, client, token, chain_graph(size), NAME)
            results.chains[size] = await alternated(target, runs_for(size, runs))
            _progress(f"chain of {size} nodes", results.chains[size])
        target = await target_of(api, client, token, chain_graph(HANG_CHECK_NODES), NAME)
        results.batch_edge_ended = await ends_in_time(target)
    return results


def _progress(name: str, timed: dict[str, list[Timed]]) -> None:
    done = ", ".join(f"{s} {_p50_ms(t):.1f} ms" for s, t in timed.items())
    print(f"workflow {name}: p50 {done}", file=sys.stderr, flush=True)


# --- part two: over HTTP, the API and the model test server in child processes ----------------


def serve_model() -> int:
    """Child process: FakeOpenAI answering every call at once with an echo of the prompt; print
    its base URL, serve until stdin closes. Its record of requests is emptied every second."""
    with FakeOpenAI(api_key=API_KEY) as server:

        def forget() -> None:
            while True:
                time.sleep(1.0)
                server.clear()

        threading.Thread(target=forget, daemon=True).start()
        print(server.base_url, flush=True)
        for _ in sys.stdin:
            pass
    return 0


def serve_api(conninfo: str, port: int, profile_to: str | None = None) -> int:
    """Child process: the Tusk API under uvicorn, as `tusk api` serves it, on 127.0.0.1; with
    `profile_to`, profiled (cProfile) until it stops, the statistics written there."""
    from tusk.cli.serve import serve_api as serve
    from tusk.logs import setup_logging

    settings = bench_settings()
    setup_logging(settings.log_level)
    runtime = Runtime(settings, conninfo, SECRET, embedded=False)
    profiler = cProfile.Profile() if profile_to else None
    if profiler is not None:
        profiler.enable()
    try:  # uvicorn raises the SIGINT it was stopped with again once it has shut down
        asyncio.run(serve(runtime, host="127.0.0.1", port=port))
    except KeyboardInterrupt:
        pass
    finally:
        if profiler is not None and profile_to:
            profiler.disable()
            profiler.dump_stats(profile_to)
    return 0


def top_functions(stats: pstats.Stats, count: int = 30) -> str:
    out = _Text()
    stats.stream = out  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(count)
    return out.text


@contextmanager
def child(args: list[str], log: Path) -> Iterator[subprocess.Popen[str]]:
    with log.open("wb") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.workflow", *args],
            cwd=REPO_ROOT,
            env=clean_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    try:
        yield proc
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_http(url: str, proc: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the Tusk API exited with {proc.returncode}:\n{log_tail(log)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise BenchError(f"the Tusk API did not answer at {url}:\n{log_tail(log)}")


@dataclass(frozen=True)
class Level:
    concurrency: int
    system: str
    latencies: list[float]
    errors: int
    seconds: float
    first_error: str = ""

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


Call = Callable[[], Awaitable[str | None]]  # None when right, else what went wrong


async def closed_loop(each: Sequence[Call], calls: int, system: str) -> Level:
    """One client per call of `each` (an HTTP client of its own), each calling back to back,
    until `calls` calls are done; after five untimed calls per client at the same concurrency
    (connections, caches and pools grown to this load, statements prepared on each database
    connection: the first calls, with a cold pool, made most of the slowest 5%)."""
    await _calling(each, len(each) * 5, [], [])
    latencies: list[float] = []
    errors: list[str] = []
    started = time.perf_counter()
    await _calling(each, max(calls, len(each) * 5), latencies, errors)
    seconds = time.perf_counter() - started
    first = errors[0] if errors else ""
    return Level(len(each), system, latencies, len(errors), seconds, first)


async def _calling(
    each: Sequence[Call], calls: int, latencies: list[float], errors: list[str]
) -> None:
    left = [calls]

    async def client(call: Call) -> None:
        while left[0] > 0:
            left[0] -= 1
            before = time.perf_counter()
            problem = await call()
            latencies.append(time.perf_counter() - before)
            if problem is not None:
                errors.append(problem)

    await asyncio.gather(*(client(call) for call in each))


def _tusk_call(client: httpx.AsyncClient, key: str, expected: str = f"Echo: {NAME}") -> Call:
    body = {"inputs": {"name": NAME}, "user": "bench", "response_mode": "blocking"}

    async def call() -> str | None:
        try:
            reply = await client.post("/v1/workflows/run", json=body, headers=_bearer(key))
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if reply.status_code != 200:
            return f"{reply.status_code} {reply.text[:200]}"
        data = reply.json()["data"]
        if data.get("status") != "succeeded" or data["outputs"] != {"result": expected}:
            return f"run {data.get('status')}: {data.get('error') or data.get('outputs')}"
        return None

    return call


def _model_call(client: httpx.AsyncClient, base_url: str) -> Call:
    body = {"model": GPT["name"], "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": NAME}]}  # fmt: skip

    async def call() -> str | None:
        try:
            reply = await client.post(f"{base_url}/chat/completions", json=body,
                                      headers=_bearer(API_KEY))  # fmt: skip
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if reply.status_code != 200 or "[DONE]" not in reply.text:
            return f"{reply.status_code} {reply.text[:200]}"
        return None

    return call


@dataclass
class OverHttp:
    levels: list[Level] = field(default_factory=list)
    memory: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    profile: str = ""  # of the API process, when asked for
    transactions_per_run: float = 0.0


async def _next_xid(conninfo: str) -> int:
    """The next transaction id PostgreSQL will assign (reading it assigns none). Unlike
    `pg_stat_database`, whose counts idle backends report seconds late, it is exact."""
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        sql = "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
        row = await (await conn.execute(sql)).fetchone()
    return int(row[0]) if row else 0


async def transactions_per_run(conninfo: str, call: Call) -> float:
    """Write transactions per blocking run, over a few runs one by one (the API's others
    included: usage records, heartbeats)."""
    before = await _next_xid(conninfo)
    for _ in range(TRANSACTION_RUNS):
        await call()
    await asyncio.sleep(USAGE_FLUSH_SECONDS)  # the usage records are written in batches
    return (await _next_xid(conninfo) - before) / TRANSACTION_RUNS


async def _http_levels(
    api_url: str, model_url: str, calls: int, conninfo: str
) -> tuple[list[Level], float]:
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=api_url, limits=limits, timeout=120) as client:
        token = await console_login(client, first=False)
        credentials = {"credentials": {"api_key": API_KEY, "base_url": model_url}}
        path = "/console/api/workspaces/current/model-providers/openai/credentials"
        await _ok(client.post(path, json=credentials, headers=_bearer(token)))
        _, key = await published_app(client, token, llm_graph())
        _, trivial_key = await published_app(client, token, chain_graph(3))
        _, three_trivial_key = await published_app(client, token, chain_graph(5))
        tusk = _tusk_call(client, key)
        if problem := await tusk():
            raise BenchError(f"the 3-node workflow did not run: {problem}")
        transactions = await transactions_per_run(conninfo, tusk)
    gc.collect()
    gc.freeze()  # this process's heap so far: a full collection of it stalled every client
    trivial = partial(_tusk_call, key=trivial_key, expected=NAME)
    three_trivial = partial(_tusk_call, key=three_trivial_key, expected=NAME)
    systems = ((HTTP_BASE, model_url, partial(_model_call, base_url=model_url)),
               (HTTP_TUSK, api_url, partial(_tusk_call, key=key)),
               (HTTP_TRIVIAL, api_url, trivial),
               (HTTP_THREE_TRIVIAL, api_url, three_trivial))  # fmt: skip
    levels = []
    for concurrency in LEVELS:
        for system, url, call_with in systems:
            async with http_clients(concurrency, url) as each:
                level = await closed_loop([call_with(c) for c in each], calls, system)
            levels.append(level)
            print(f"workflow over HTTP, {concurrency} clients, {system}: p95 "
                  f"{percentile(level.latencies, 95) * 1e3:.0f} ms, {level.errors} errors",
                  file=sys.stderr, flush=True)  # fmt: skip
    return levels, transactions


def measure_http(
    conninfo: str, server: EmbeddedPostgres, root: Path, calls: int, *, profile: bool = False
) -> OverHttp:
    results = OverHttp()
    profile_to = root / "api.pstats"
    with ExitStack() as stack:
        model = stack.enter_context(child(["serve"], root / "model.log"))
        assert model.stdout is not None
        model_url = model.stdout.readline().strip()
        if not model_url:
            raise BenchError(
                f"the model test server did not start:\n{log_tail(root / 'model.log')}"
            )
        port = free_port()
        api_args = ["api", conninfo, str(port), *([str(profile_to)] if profile else [])]
        api = stack.enter_context(child(api_args, root / "api.log"))
        api_url = f"http://127.0.0.1:{port}"
        _wait_http(f"{api_url}/health", api, root / "api.log")
        samplers = {
            "Tusk API process (uvicorn)": MemorySampler(lambda: [api.pid], 0.5),
            "model test server": MemorySampler(lambda: [model.pid], 0.5),
            "PostgreSQL (postmaster + backends)": MemorySampler(
                lambda: postmaster_pid(server.pgdata), 0.5
            ),
        }
        for sampler in samplers.values():
            stack.enter_context(sampler)
        measured = _http_levels(api_url, model_url, calls, conninfo)
        results.levels, results.transactions_per_run = asyncio.run(measured)
    results.memory = {name: (s.peak_rss, s.peak_pss) for name, s in samplers.items()}
    if profile and profile_to.exists():
        results.profile = top_functions(pstats.Stats(str(profile_to)))
    return results


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Results:
    in_process: InProcess
    http: OverHttp
    postgres: str


@contextmanager
def embedded_postgres(pgdata: Path) -> Iterator[tuple[EmbeddedPostgres, str]]:
    """The bundled PostgreSQL with Tusk's settings and full durability, migrated."""
    server = EmbeddedPostgres(pgdata, dict(EMBEDDED_SERVER_SETTINGS))
    server.start()
    try:
        server.create_database(DATABASE)
        conninfo = server.conninfo(DATABASE)
        migrate.upgrade(conninfo)
        yield server, conninfo
    finally:
        server.stop()


def _server_version(conninfo: str) -> str:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def measure(runs: int, calls: int, *, profile: bool = False) -> Results:
    with scratch_dir("tw") as root, embedded_postgres(root / "pg") as (server, conninfo):
        gc.collect()
        gc.freeze()  # the start-up heap: out of the collector's way, as the API does
        in_process = asyncio.run(measure_in_process(conninfo, runs, profile))
        gc.unfreeze()
        http = measure_http(conninfo, server, root, calls, profile=profile)
        return Results(in_process, http, _server_version(conninfo))


# --- the report -------------------------------------------------------------------------------


def _p50_ms(timed: Sequence[Timed]) -> float:
    return percentile([t.seconds for t in timed], 50) * 1e3


def _overheads(timed: Sequence[Timed]) -> list[float]:
    return [t.seconds - t.node_work for t in timed]


def fit(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Least squares of y = a + b·x: (a, b)."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    slope = sxy / sxx if sxx else 0.0
    return mean_y - slope * mean_x, slope


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.2f}" if seconds < 0.1 else f"{seconds * 1e3:,.0f}"


def _chain_table(chains: dict[int, dict[str, list[Timed]]]) -> str:
    headers = ["nodes", "system", "runs", "p50 (ms)", "p99 (ms)", "node work p50 (ms)"]
    headers += ["overhead p50 (ms)", "overhead p99 (ms)", "p50 ÷ naive p50"]
    rows = []
    for size, by_system in chains.items():
        naive = _p50_ms(by_system[NAIVE])
        for system, timed in by_system.items():
            total, over = Stats.of([t.seconds for t in timed]), Stats.of(_overheads(timed))
            work = percentile([t.node_work for t in timed], 50)
            cells = [_ms(total.p50), _ms(total.p99), _ms(work), _ms(over.p50), _ms(over.p99)]
            rows.append([size, system, len(timed), *cells, ratio(total.p50 * 1e3, naive)])
    return markdown_table(headers, rows, left=2)


def fits(chains: dict[int, dict[str, list[Timed]]]) -> dict[str, tuple[float, float]]:
    """Per system, the overhead's fixed part and per-node part in ms, fitted on the p50s."""
    found = {}
    for system in SYSTEMS:
        points = [(size, percentile(_overheads(by[system]), 50) * 1e3)
                  for size, by in chains.items()]  # fmt: skip
        found[system] = fit(points)
    return found


def _fit_table(fitted: dict[str, tuple[float, float]]) -> str:
    naive_a, naive_b = fitted[NAIVE]
    rows = [[system, f"{a:.2f}", f"{b:.3f}", ratio(a, naive_a), ratio(b, naive_b)]
            for system, (a, b) in fitted.items()]  # fmt: skip
    engine_a, engine_b = fitted[ENGINE]
    tusk_a, tusk_b = fitted[TUSK]
    rows.append(["what Tusk's recording adds (Tusk − engine)", f"{tusk_a - engine_a:.2f}",
                 f"{tusk_b - engine_b:.3f}", "", ""])  # fmt: skip
    headers = ["system", "fixed a (ms per run)", "b (ms per node)", "a ÷ naive a", "b ÷ naive b"]
    return markdown_table(headers, rows)


def _goal_overhead(fitted: dict[str, tuple[float, float]]) -> str:
    a, b = fitted[TUSK]
    met = a <= GOAL_FIXED_MS and b <= GOAL_NODE_MS
    return (
        f"Goal of the issue, with persistence on: at most {GOAL_FIXED_MS:g} ms fixed and "
        f"{GOAL_NODE_MS:g} ms per node: {'**met**' if met else '**NOT met**'} "
        f"({a:.2f} ms + {b:.3f} ms per node)."
    )


def _big_table(bigs: list[Big]) -> str:
    headers = ["graph", "nodes run", "system", "runs", "p50 (s)", "max (s)", "ms per node (p50)"]
    headers += ["p50 ÷ naive p50"]
    rows = []
    for big in bigs:
        naive = _p50_ms(big.timed[NAIVE])
        for system, timed in big.timed.items():
            stats = Stats.of([t.seconds for t in timed])
            per_node = stats.p50 * 1e3 / big.nodes
            cells = [len(timed), f"{stats.p50:.3f}", f"{stats.max:.3f}", f"{per_node:.3f}"]
            rows.append([big.name, big.nodes, system, *cells, ratio(stats.p50 * 1e3, naive)])
    return markdown_table(headers, rows, left=3)


def _big_memory(bigs: list[Big]) -> str:
    rows = [[big.name, mib(big.rss_growth), f"{big.heap_peak / 2**20:,.1f}"] for big in bigs]
    headers = ["graph", "peak RSS growth, first run (MiB)", "Python heap peak, one run (MiB)"]
    return markdown_table(headers, rows)


def _http_table(levels: list[Level]) -> tuple[str, list[str]]:
    headers = ["clients", "system", "requests", "runs/s", "p50 (ms)", "p95 (ms)", "p99 (ms)"]
    headers += ["errors", "p50 ÷ model call p50"]
    base = {lv.concurrency: percentile(lv.latencies, 50) for lv in levels if lv.system == HTTP_BASE}
    rows, failures = [], []
    for lv in levels:
        p50, p95, p99 = (percentile(lv.latencies, q) for q in (50, 95, 99))
        shown = ratio(p50, base[lv.concurrency]) if lv.system != HTTP_BASE else ""
        cells = [f"{lv.per_second:,.0f}", _ms(p50), _ms(p95), _ms(p99), lv.errors, shown]
        rows.append([lv.concurrency, lv.system, len(lv.latencies), *cells])
        if lv.errors:
            failures.append(f"{lv.system}, {lv.concurrency} clients: {lv.errors} errors, "
                            f"the first: {lv.first_error}")  # fmt: skip
    return markdown_table(headers, rows, left=2), failures


def _goal_http(levels: list[Level]) -> str:
    verdicts = []
    graphs = ((HTTP_TUSK, "start → LLM → end"), (HTTP_TRIVIAL, "start → template → end"),
              (HTTP_THREE_TRIVIAL, "the three trivial nodes between start and end"))  # fmt: skip
    for system, graph in graphs:
        at_60 = [lv for lv in levels if lv.system == system and lv.concurrency == max(LEVELS)]
        if not at_60:
            continue
        p95 = percentile(at_60[0].latencies, 95) * 1e3
        met = p95 < GOAL_P95_60_MS and at_60[0].errors == 0
        verdicts.append(f"{graph}: {'**met**' if met else '**NOT met**'} "
                        f"(p95 {p95:.0f} ms, {at_60[0].errors} errors)")  # fmt: skip
    return (
        f"Goal of the issue: {max(LEVELS)} concurrent 3-node runs with p95 under "
        f"{GOAL_P95_60_MS:g} ms and no errors. " + "; ".join(verdicts) + "."
    )


HANG_FAILURE = (
    f"a run of a {HANG_CHECK_NODES}-node chain (as many nodes as the recorder's batch) did not "
    f"end within {HANG_SECONDS:g} s: `RunRecorder.finish` waits for its writer task, whose "
    "cancellation `asyncio.wait_for` can swallow on Python 3.11 when the batch's wake-up is set "
    "at the same moment; the chains above use 199 nodes for that reason"
)
INTRO = (
    "PostgreSQL {postgres} embedded, Tusk's settings and full durability (fsync and "
    "`synchronous_commit` on). The trivial nodes are template-transform (`{{{{ v }}}}`), if-else "
    "(`not empty`, both branches onward) and variable-aggregator, in turn, each passing the input "
    "on. **Tusk**: `WorkflowRunner.start()` of the published workflow, through its end, recorded "
    "(`RunRecorder`: the run's row inserted as it starts, while its nodes run; the node "
    "executions in one multi-row "
    "INSERT with the run's final UPDATE), as a blocking request waits for it. **Engine alone**: "
    "the same plan and executor, events kept in a list, nothing written. **Naive recorder**: the "
    "same executor and events, written the way Dify 0.15 writes them: the run's row inserted, "
    "then for each node an ORM INSERT at its start and a lookup + UPDATE at its end, each in a "
    "session and transaction of its own, in order by one task; then the run's row updated. "
    "**Overhead** = run time − the sum of the nodes' own elapsed time. Systems alternate run by "
    "run, after {warmup} untimed runs each; all in one Python process (asyncio) with the API's "
    "services (`create_app` + its lifespan; apps set up over its console API through httpx's "
    "ASGI transport)."
)


def report(results: Results, runs: int, calls: int) -> tuple[str, list[str]]:
    ip, fitted = results.in_process, fits(results.in_process.chains)
    http, failures = _http_table(results.http.levels)
    if not ip.batch_edge_ended:
        failures.insert(0, HANG_FAILURE)
    memory = [[name, mib(rss), mib(pss)] for name, (rss, pss) in results.http.memory.items()]
    sizes = ", ".join(str(size) for size in CHAIN_SIZES)
    parts = [
        "## Workflow engine: overhead per run and per node, concurrency over HTTP, big graphs",
        INTRO.format(postgres=results.postgres, warmup=WARMUP),
        f"### Chains of {sizes} nodes (start and end included)",
        f"Runs: {runs} of the shortest chains, fewer of the longer ones (at least {MIN_RUNS}).",
        _chain_table(ip.chains),
        "Overhead = a + b × nodes, least squares over the p50 overheads of the chain sizes:",
        _fit_table(fitted),
        _goal_overhead(fitted),
        f"### A {BIG_CHAIN}-node chain and a {FAN_OUT}-way fan-out",
        f"The chain as above; the fan-out: start → {FAN_OUT} template nodes side by side → one "
        f"aggregator of all of them → end. {BIG_RUNS} runs each after one untimed "
        f"(WORKFLOW_MAX_EXECUTION_STEPS raised to {MAX_STEPS}; parallelism at its default, 10).",
        _big_table(ip.big),
        "Memory of this (the measuring) process for a Tusk run: the growth of its RSS over the "
        "first run of each graph (sampled every 5 ms; the plan is built then too), and the peak "
        "of Python's allocations during one later run (tracemalloc):",
        _big_memory(ip.big),
        f"Check: one Tusk run of a {HANG_CHECK_NODES}-node chain (as many nodes as the "
        f"recorder's batch) {'ended' if ip.batch_edge_ended else '**did not end**'} within "
        f"{HANG_SECONDS:g} s.",
        f"### Over HTTP: a 3-node workflow at {', '.join(map(str, LEVELS))} concurrent clients",
        "`tusk api`'s server (uvicorn, `tusk.cli.serve.serve_api`) in a child process on "
        "127.0.0.1, on the same database; the workflow: start → LLM (OpenAI provider, the "
        "workspace's credentials) → end, published, run with `POST /v1/workflows/run` "
        "(blocking) and a Service API key. The model is `FakeOpenAI` in another child process, "
        "answering at once with a streamed echo of the prompt (`Echo: Ada`). Also two workflows "
        "of trivial nodes, which call no model: start → template → end (three nodes), and the "
        "three trivial nodes between start and end. **Baseline**: the "
        "same clients calling that server's `/v1/chat/completions` (streamed) directly: the "
        "model call alone. Clients: httpx in this process, one client (a connection) each, "
        "each calling back to back; "
        f"{calls} requests at least per row, after five untimed calls per client at the same "
        "concurrency (pools grown, statements prepared). A request "
        "counts as an error unless it answers 200 with the run `succeeded` and its output.",
        http,
        _goal_http(results.http.levels),
        f"Write transactions per blocking run (transaction ids PostgreSQL assigned over "
        f"{TRANSACTION_RUNS} runs one by one, the API's batched usage records included): "
        f"{results.http.transactions_per_run:.1f}.",
        "Peak memory during the HTTP part:",
        markdown_table(["process tree", "peak RSS (MiB)", "peak PSS (MiB)"], memory),
    ]
    parts += [f"**FAILURE**: {failure}" for failure in failures]
    return "\n\n".join(parts), failures


# --- the command ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.workflow", description=__doc__)
    parser.add_argument(
        "--runs",
        type=positive_int,
        default=int(os.environ.get("BENCH_RUNS_WORKFLOW", DEFAULT_RUNS)),
        help=f"runs of the short chains, per system (default {DEFAULT_RUNS})",
    )
    parser.add_argument(
        "--calls",
        type=positive_int,
        default=int(os.environ.get("BENCH_CALLS", DEFAULT_CALLS)),
        help=f"HTTP requests per level and system, at least (default {DEFAULT_CALLS})",
    )
    parser.add_argument("--quick", action="store_true", help="a quarter of the runs and calls")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print to stderr a cProfile of one 1000-node run, and of the API process over HTTP "
        "(which slows the HTTP part down)",
    )
    return parser


def quick(runs: int, calls: int) -> tuple[int, int]:
    return max(runs // 4, MIN_RUNS), max(calls // 4, max(LEVELS) * 2)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["serve"]:
        return serve_model()
    if args[:1] == ["api"]:
        return serve_api(args[1], int(args[2]), *args[3:4])
    options = _parser().parse_args(args)
    runs, calls = quick(options.runs, options.calls) if options.quick else (
        options.runs, options.calls)  # fmt: skip
    try:
        results = measure(runs, calls, profile=options.profile)
    except BenchError as exc:
        print(f"bench.workflow: {exc}", file=sys.stderr)
        return 1
    for profiled in (results.in_process.profile, results.http.profile):
        if profiled:
            print(profiled, file=sys.stderr)
    text, failures = report(results, runs, calls)
    print(f"{text}\n\n## Machine\n\n{markdown_fields(machine_description())}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
