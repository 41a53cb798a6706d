"""Agents and tools: agent runs of N tool rounds through Tusk's `function_call` strategy against
a hand-written loop on the `openai` SDK, both on one FakeOpenAI scripted to call a tool; the cost
of `tusk.tools.call` around a local tool, an OpenAPI operation and an MCP tool against calling
each directly; and the ReAct parser's throughput.

    .venv/bin/python -m bench.agents [--runs N] [--calls N] [--quick]   (or BENCH_CALLS=N)

The test servers (FakeOpenAI, an HTTP API described by an OpenAPI spec, an MCP server built with
the `mcp` SDK) run in a child process (`python -m bench.agents serve`), started by this one, so
that they share no GIL with the measured client.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import resource
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import openai
import uvicorn
from mcp.server.mcpserver import MCPServer
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench import agents_react, agents_tools
from bench.common import (
    BenchError,
    Stats,
    load_average,
    log_tail,
    machine_description,
    markdown_fields,
    markdown_table,
    mib,
    positive_int,
    ratio,
    scratch_dir,
    tree_memory,
)
from tusk.agent import AgentSetup, AgentTool, make_agent
from tusk.models.guarded import CallContext, GuardedChat
from tusk.models.providers.openai import OpenAIProvider
from tusk.models.resilience import RetryPolicy
from tusk.models.types import Message
from tusk.models.usage import UsageRecorder
from tusk.testing.llm_server import BackgroundServer, RecordedRequest, Reply, ToolCall
from tusk.testing.openai_server import FakeOpenAI
from tusk.tools import ToolContext
from tusk.tools.builtin.clock import DEFAULT_FORMAT, CurrentTime, now_text

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUNS = 100  # agent runs of each system for each number of tool rounds
DEFAULT_CALLS = 200  # remote tool calls of each way (local ones: LOCAL_FACTOR times more)
WARMUP = 5

MODEL = "gpt-bench"
API_KEY = "sk-bench-agents-0123456789"
TTFT_SECONDS = 0.020
ROUND_COUNTS = (1, 3, 5)
SYSTEM = "You tell the time."
ANSWER = "It is noon in Paris."
ASKED = re.compile(r"look it up (\d+) times", re.I)
UNUSED_DATABASE = "postgresql+psycopg://bench@127.0.0.1:9/unused"  # never connected to

SDK_LOOP, TUSK_AGENT = "`openai` SDK, hand-written loop", "Tusk `function_call` strategy"


def question(rounds: int) -> str:
    return f"What time is it in Paris? Look it up {rounds} times."


# --- the test servers, in a child process -----------------------------------------------------


def rounds_asked(messages: Sequence[Any]) -> int:
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "user":
            found = ASKED.search(str(message.get("content")))
            return int(found.group(1)) if found else 0
    return 0


def scripted_reply(body: Any) -> Reply:
    """A tool call while the conversation holds fewer tool results than the rounds its question
    asks for; then the answer."""
    messages = body.get("messages") if isinstance(body, dict) else None
    messages = messages if isinstance(messages, list) else []
    done = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "tool")
    if done < rounds_asked(messages):
        return Reply(
            "", (ToolCall("current_time", agents_tools.TIME_ARGUMENTS),), ttft=TTFT_SECONDS
        )
    return Reply(ANSWER, ttft=TTFT_SECONDS)


class RoundsServer(FakeOpenAI):
    """FakeOpenAI answering each chat call from the conversation it is sent (`scripted_reply`),
    not from a queue: a benchmark makes thousands of calls of two clients in turn."""

    def __init__(self) -> None:
        self._pending = Reply(ANSWER)
        super().__init__(api_key=API_KEY, models=(MODEL,))

    def routes(self) -> list[Route]:
        return [self.route("/v1/chat/completions", self._scripted), *super().routes()]

    async def _scripted(self, request: RecordedRequest) -> Response:
        # `_chat` asks `next_reply` before its first await: no other request comes in between.
        self._pending = scripted_reply(request.json)
        return await self._chat(request)

    def next_reply(self, last_user: str) -> Reply:
        return self._pending


async def _weather(request: Request) -> Response:
    city = request.path_params["city"]
    days = int(request.query_params.get("days", "1"))
    return JSONResponse({"city": city, "days": days, "sky": "clear"})


def _mcp_server() -> MCPServer:
    server = MCPServer("bench")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    return server


@contextmanager
def _mcp_running() -> Iterator[str]:
    """The MCP server on streamable HTTP (with its lifespan, which BackgroundServer turns off)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        _mcp_server().streamable_http_app(), log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise BenchError("the MCP server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        thread.join(10)


def _forget_requests(server: FakeOpenAI) -> None:
    while True:
        time.sleep(1.0)
        server.clear()


def serve() -> int:
    """Child process: print the three servers' URLs on one line; serve until stdin closes."""
    api = BackgroundServer(Starlette(routes=[Route("/weather/{city}", _weather)]), "api")
    with RoundsServer() as fake, _mcp_running() as mcp_url:
        api.start()
        try:
            gc.collect()
            gc.freeze()
            threading.Thread(target=_forget_requests, args=(fake,), daemon=True).start()
            print(fake.base_url, f"http://127.0.0.1:{api.port}", mcp_url, flush=True)
            for _ in sys.stdin:
                pass
        finally:
            api.stop()
    return 0


@dataclass(frozen=True)
class Urls:
    model: str  # FakeOpenAI's base URL (…/v1)
    api: str  # the HTTP API of the OpenAPI spec
    mcp: str  # the MCP server's streamable HTTP endpoint


class ServerProcess:
    def __init__(self, log: Path) -> None:
        self.log = log
        with log.open("wb") as errors:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.agents", "serve"],
                cwd=REPO_ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )
        assert self.proc.stdout is not None
        parts = self.proc.stdout.readline().split()
        if len(parts) != 3:
            self.close()
            raise BenchError(f"the test servers did not start:\n{log_tail(log)}")
        self.urls = Urls(*parts)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- 1. agent runs, both ways -----------------------------------------------------------------


def tusk_model(base_url: str) -> GuardedChat:
    """What `ModelRuntime.chat` gives apps (retries, fallbacks, a usage record per call) over the
    `openai` provider, built without a database: the usage records are queued, never written."""
    provider = OpenAIProvider({"api_key": API_KEY, "base_url": base_url})
    chat = cast(Any, provider.create("llm", MODEL))
    recorder = UsageRecorder(create_async_engine(UNUSED_DATABASE))
    return GuardedChat([chat], CallContext(uuid.uuid4(), None, recorder, {}, RetryPolicy()))


def _problem(answer: str, model_calls: int, rounds: int) -> str | None:
    if answer != ANSWER or model_calls != rounds + 1:
        return f"{rounds} rounds: answer {answer!r} after {model_calls} model calls"
    return None


class TuskAgent:
    name = TUSK_AGENT

    def __init__(self, model: GuardedChat, context: ToolContext) -> None:
        self.model = model
        self.tool = AgentTool(CurrentTime(), context)

    async def run(self, rounds: int) -> str | None:
        """One run; what was wrong with it, or None."""
        messages = [Message("system", SYSTEM), Message("user", question(rounds))]
        agent = make_agent("function_call", AgentSetup(self.model, messages, [self.tool]))
        async for _ in agent.events():
            pass
        errors = [m["error"] for s in agent.steps for m in s.tool_meta.values() if m["error"]]
        if errors:
            return f"a tool call failed: {errors[0]}"
        return _problem(agent.answer, len(agent.steps), rounds)


class SdkLoop:
    """The baseline: the loop the `openai` SDK's documentation shows, streamed, with the tool's
    own function called inline."""

    name = SDK_LOOP

    def __init__(self, client: openai.AsyncOpenAI) -> None:
        self.client = client
        self.tools: Any = [{"type": "function", "function": CurrentTime().describe()}]

    async def run(self, rounds: int) -> str | None:
        messages: list[Any] = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": question(rounds)},
        ]
        answer, model_calls = "", 0
        while True:
            text, calls = await self._round(messages)
            answer, model_calls = answer + text, model_calls + 1
            if not calls:
                return _problem(answer, model_calls, rounds)
            messages.append({"role": "assistant", "content": text or None, "tool_calls": calls})
            for made in calls:
                arguments = json.loads(made["function"]["arguments"] or "{}")
                result = now_text(arguments.get("timezone") or "UTC", DEFAULT_FORMAT)
                messages.append({"role": "tool", "tool_call_id": made["id"], "content": result})

    async def _round(self, messages: list[Any]) -> tuple[str, list[dict[str, Any]]]:
        stream = await self.client.chat.completions.create(
            model=MODEL,
            messages=messages,
            tools=self.tools,
            stream=True,
            stream_options={"include_usage": True},
        )
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        async with stream:
            async for chunk in stream:
                for choice in chunk.choices:
                    text.append(choice.delta.content or "")
                    for part in choice.delta.tool_calls or []:
                        _gather(calls, part)
        return "".join(text), [calls[i] for i in sorted(calls)]


def _gather(calls: dict[int, dict[str, Any]], part: Any) -> None:
    """Add one streamed tool-call fragment to the call it belongs to."""
    function = {"name": "", "arguments": ""}
    made = calls.setdefault(part.index, {"id": "", "type": "function", "function": function})
    made["id"] = part.id or made["id"]
    if part.function is not None:
        made["function"]["name"] += part.function.name or ""
        made["function"]["arguments"] += part.function.arguments or ""


@dataclass
class AgentRuns:
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # this process's CPU seconds per run


AgentSystem = TuskAgent | SdkLoop


async def _agent_runs(
    systems: Sequence[AgentSystem], runs: int, failures: list[str]
) -> dict[tuple[int, str], AgentRuns]:
    """For each number of rounds: untimed warm-up runs, then runs alternating A B B A ..."""
    results = {(n, s.name): AgentRuns() for n in ROUND_COUNTS for s in systems}
    for rounds in ROUND_COUNTS:
        for system in systems:
            for _ in range(WARMUP):
                await system.run(rounds)
        for i in range(runs):
            for system in systems if i % 2 == 0 else systems[::-1]:
                cpu, wall = time.process_time(), time.perf_counter()
                problem = await system.run(rounds)
                measured = results[rounds, system.name]
                measured.seconds.append(time.perf_counter() - wall)
                measured.cpu.append(time.process_time() - cpu)
                if problem:
                    failures.append(f"{system.name}: {problem}")
        print(f"agents: {rounds} rounds measured", file=sys.stderr, flush=True)
    return results


async def _heap_peaks(systems: Sequence[AgentSystem], rounds: int) -> dict[str, int]:
    """Python's heap peak (tracemalloc) over one run of each system, untimed."""
    peaks = {}
    for system in systems:
        gc.collect()
        tracemalloc.start()
        await system.run(rounds)
        peaks[system.name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peaks


# --- 2. tool calls ----------------------------------------------------------------------------


# --- the whole benchmark ----------------------------------------------------------------------


@dataclass
class Results:
    runs: int
    calls: int
    agents: dict[tuple[int, str], AgentRuns] = field(default_factory=dict)
    heap_peaks: dict[str, int] = field(default_factory=dict)
    tools: list[agents_tools.WayResult] = field(default_factory=list)
    parser: list[agents_react.ParseResult] = field(default_factory=list)
    memory: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    load: tuple[str, str] = ("", "")


async def _measure(urls: Urls, results: Results) -> None:
    client = openai.AsyncOpenAI(api_key=API_KEY, base_url=urls.model, max_retries=0)
    model = tusk_model(urls.model)
    systems: list[AgentSystem] = [SdkLoop(client), TuskAgent(model, agents_tools.tool_context())]
    try:
        for system in systems:
            await system.run(1)  # connect, and let each side build what it builds on first use
        gc.collect()
        gc.freeze()
        results.agents = await _agent_runs(systems, results.runs, results.failures)
        results.heap_peaks = await _heap_peaks(systems, max(ROUND_COUNTS))
        results.tools = await agents_tools.measure(
            urls.api, urls.mcp, results.calls, results.failures
        )
    finally:
        gc.unfreeze()
        await client.close()
        await model.candidates[0].client.close()  # type: ignore[attr-defined]


def measure(runs: int, calls: int) -> Results:
    results = Results(runs, calls)
    before = load_average()
    with scratch_dir("tba") as root, ExitStack() as stack:
        server = ServerProcess(root / "servers.log")
        stack.callback(server.close)
        asyncio.run(_measure(server.urls, results))
        results.memory["test servers (child process)"] = tree_memory([server.proc.pid])
    print("agents: parsing ReAct replies", file=sys.stderr, flush=True)
    results.parser = agents_react.measure()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    results.memory["this process (both clients)"] = (peak, None)
    results.load = (before, load_average())
    return results


# --- the report -------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def _overheads(runs: AgentRuns, rounds: int) -> list[float]:
    """Each run's time beyond the server's scripted waits (a time to first token per call)."""
    return [s - (rounds + 1) * TTFT_SECONDS for s in runs.seconds]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _fit(points: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """(a, b) of y = a + b × x, least squares."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
    return mean_y - slope * mean_x, slope


def _agent_rows(results: Results) -> list[list[object]]:
    rows: list[list[object]] = []
    for rounds in ROUND_COUNTS:
        base = Stats.of(_overheads(results.agents[rounds, SDK_LOOP], rounds))
        for name in (SDK_LOOP, TUSK_AGENT):
            runs = results.agents[rounds, name]
            total, over = Stats.of(runs.seconds), Stats.of(_overheads(runs, rounds))
            per_call = Stats.of([o / (rounds + 1) for o in _overheads(runs, rounds)])
            rows.append(
                [rounds, name, total.n, _ms(total.p50), _ms(total.p99), _ms(over.p50),
                 _ms(over.p99), _ms(per_call.p50), _ms(per_call.p99),
                 _ms(_mean(runs.cpu)),
                 "" if name == SDK_LOOP else ratio(over.p50, base.p50)]
            )  # fmt: skip
    return rows


def _fits(results: Results, name: str) -> tuple[float, float, float, float]:
    """(a, b) of the p50 overhead, then of the mean client CPU, as a + b × N."""
    overhead = [(n, Stats.of(_overheads(results.agents[n, name], n)).p50) for n in ROUND_COUNTS]
    cpu = [(n, _mean(results.agents[n, name].cpu)) for n in ROUND_COUNTS]
    return (*_fit(overhead), *_fit(cpu))


def _per_round(results: Results) -> str:
    fits = {name: _fits(results, name) for name in (SDK_LOOP, TUSK_AGENT)}
    added = tuple(t - b for t, b in zip(fits[TUSK_AGENT], fits[SDK_LOOP], strict=True))
    rows = [[name, *map(_ms, fit)] for name, fit in [*fits.items(), ("Tusk − baseline", added)]]
    headers = ["system", "overhead a: per run (ms)", "overhead b: per tool round (ms)"]
    headers += ["CPU a: per run (ms)", "CPU b: per tool round (ms)"]
    return markdown_table(headers, rows)


def _agents_section(results: Results) -> list[str]:
    headers = ["tool rounds", "system", "runs", "run p50 (ms)", "run p99 (ms)"]
    headers += ["overhead p50 (ms)", "overhead p99 (ms)", "per model call p50 (ms)"]
    headers += ["per model call p99 (ms)", "client CPU / run (ms)", "overhead ÷ baseline (p50)"]
    fitted = _per_round(results)
    peaks = ", ".join(f"{name} {n / 1024:,.0f} KiB" for name, n in results.heap_peaks.items())
    return [
        "### Agent runs: `function_call` against a hand-written SDK loop",
        f"An agent run of N tool rounds is N + 1 model calls: N replies calling the built-in "
        f"`current_time` tool, then the answer. The model is one FakeOpenAI in a child process, "
        f"which streams every reply after {TTFT_SECONDS * 1e3:.0f} ms. **Tusk**: "
        '`make_agent("function_call", AgentSetup(model, messages, [AgentTool(CurrentTime(), '
        "context)]))` and its events to the end, where the model is the `GuardedChat` that "
        "`ModelRuntime.chat` gives apps over the `openai` provider (its usage records queued, not "
        "written). **Baseline**: `AsyncOpenAI.chat.completions.create(stream=True, tools=...)` in "
        "a loop that gathers the streamed tool calls and calls the tool's function inline. Runs "
        f"alternate A B B A ..., {results.runs} of each after {WARMUP} untimed. Overhead = run "
        f"time − (N + 1) × {TTFT_SECONDS * 1e3:.0f} ms: the client, the HTTP exchanges and the "
        "server's own work, the last two the same for both.",
        markdown_table(headers, _agent_rows(results), left=2),
        "The p50 overhead and the mean client CPU time per run, fitted as a + b × N (least "
        "squares over N = "
        f"{', '.join(map(str, ROUND_COUNTS))}):",
        fitted,
        f"Python heap peak over one {max(ROUND_COUNTS)}-round run (tracemalloc): {peaks}.",
    ]


def report(results: Results) -> tuple[str, list[str]]:
    memory = [[name, mib(rss), mib(pss)] for name, (rss, pss) in results.memory.items()]
    failures = sorted(set(results.failures))
    failures += [
        f"the ReAct parser misread {r.sample.name!r}" for r in results.parser if not r.tusk_right
    ]
    parts = [
        "## Agents and tools",
        *_agents_section(results),
        *agents_tools.section(results.tools, results.calls),
        *agents_react.section(results.parser),
        "Peak memory (the child's RSS and PSS at the end of the tool calls; this process's peak "
        "RSS):",
        markdown_table(["process", "RSS (MiB)", "PSS (MiB)"], memory),
        f"Load average (1, 5, 15 min): {results.load[0]} at the start, {results.load[1]} at the "
        "end.",
    ]  # fmt: skip
    parts += [f"**FAILURE**: {failure}" for failure in failures]
    return "\n\n".join(parts), failures


def sizes(runs: int, calls: int, quick: bool) -> tuple[int, int]:
    return (max(10, runs // 4), max(20, calls // 4)) if quick else (runs, calls)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:
        return serve()
    parser = argparse.ArgumentParser(prog="python -m bench.agents", description=__doc__)
    parser.add_argument(
        "--runs",
        type=positive_int,
        default=DEFAULT_RUNS,
        help=f"agent runs of each system per number of rounds (default {DEFAULT_RUNS})",
    )
    parser.add_argument(
        "--calls",
        type=positive_int,
        default=int(os.environ.get("BENCH_CALLS", DEFAULT_CALLS)),
        help=f"remote tool calls of each way, local ones {agents_tools.LOCAL_FACTOR} times more "
        f"(default: $BENCH_CALLS or {DEFAULT_CALLS})",
    )
    parser.add_argument("--quick", action="store_true", help="a quarter of the runs and calls")
    args = parser.parse_args(argv)
    try:
        results = measure(*sizes(args.runs, args.calls, args.quick))
    except BenchError as exc:
        print(f"bench.agents: {exc}", file=sys.stderr)
        return 1
    text, failures = report(results)
    print(f"{text}\n\n## Machine\n\n{markdown_fields(machine_description())}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
