"""Apps over the Service API: the time to first token that `POST /v1/chat-messages` adds to the
model's own (streaming), and messages per second (blocking), for a chat app and a chatflow app,
at 1, 16 and 64 concurrent clients. The baseline is the same call sent straight to the model
test server in the same run, interleaved with Tusk's rounds.

A level's clients start spread over one call's length, as independent users arrive: their calls
are all about as long, so clients that started together would stay in step for the whole round
and every call would be one of a burst of as many requests within a few milliseconds. That
pattern is measured too, as its own level ("64 at once"), with no goal of its own.

    .venv/bin/python -m bench.apps [--calls N] [--against REF]

With `--against REF` (a commit or branch), a second `tusk api` runs REF's code (from a git
worktree) on the same database, and its chat and chatflow calls alternate with this code's in
the same rounds: the fair way to compare two commits on a machine whose speed drifts. REF's
tree is given this tree's newer migrations, so that it accepts the schema (they only add).

A real `tusk api` process (uvicorn) on loopback, on an embedded PostgreSQL; the model test
server (fixed time to first token, chunks at a fixed rate) in a child process of its own
(`python -m bench.models serve`)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import psutil

from bench.common import (
    BenchError,
    Stats,
    http_clients,
    log_tail,
    machine_description,
    markdown_fields,
    markdown_table,
    mib,
    positive_int,
    ratio,
    scratch_dir,
)
from bench.models import (
    API_KEY,
    CHUNKS,
    CHUNKS_PER_SECOND,
    MODEL,
    REPLY_TEXT,
    TTFT_SECONDS,
    ServerProcess,
    embedded_postgres,
)
from tusk.testing.processes import clean_env, free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
SECRET_KEY = "bench-apps-secret-key-that-is-long-enough-0123456789"  # noqa: S105
ADMIN = {"email": "bench@example.com", "name": "Bench", "password": "bench-passw0rd"}
GPT = {"provider": "langgenius/openai/openai", "name": MODEL, "mode": "chat"}


class Level(NamedTuple):
    clients: int
    at_once: bool = False  # every client starts at the same time: bursts of `clients` requests

    def __str__(self) -> str:
        return f"{self.clients} at once" if self.at_once else str(self.clients)


LEVELS = (Level(1), Level(16), Level(64), Level(64, at_once=True))
DEFAULT_CALLS = 200
ROUNDS = 2  # of each system per level, alternated
GOAL_P50_1_MS = {"chat": 5.0, "chatflow": 10.0}  # added TTFT at 1 client
GOAL_P99_64_MS = 25.0  # added TTFT at 64 clients
GOAL_RSS_MB = 250
BASELINE, CHAT, CHATFLOW = "model server, direct", "chat", "chatflow"


# --- the Tusk API and its apps ------------------------------------------------------------------


@contextmanager
def tusk_api(
    conninfo: str, model_url: str, log: Path, root: Path = REPO_ROOT
) -> Iterator[tuple[str, int]]:
    """`tusk api` (the code under `root`) on a free port of loopback: its URL and process id."""
    port = free_port()
    env = clean_env(
        DATABASE_URL=conninfo,
        SECRET_KEY=SECRET_KEY,
        OPENAI_API_KEY=API_KEY,
        OPENAI_API_BASE=model_url,
        LOG_LEVEL="WARNING",
    )
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tusk", "api", "--port", str(port)],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_health(url, proc, log)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def worktree_at(ref: str, where: Path) -> Iterator[Path]:
    """REF's code checked out at `where`, with this tree's migrations that REF lacks."""
    git = ["git", "-C", str(REPO_ROOT)]
    made = subprocess.run([*git, "worktree", "add", "--detach", str(where), ref],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if made.returncode != 0:
        raise BenchError(f"cannot check out {ref}: {made.stderr.strip()}")
    try:
        versions = Path("tusk/db/migrations/versions")
        for migration in (REPO_ROOT / versions).glob("*.py"):
            if not (where / versions / migration.name).exists():
                shutil.copy(migration, where / versions / migration.name)
        yield where
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(where)], check=False)


def _wait_health(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"tusk api exited with {proc.returncode}:\n{log_tail(log)}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise BenchError(f"tusk api did not start within 60 s:\n{log_tail(log)}")


def _checked(response: httpx.Response) -> Any:
    if response.status_code >= 300:
        raise BenchError(f"{response.request.url}: {response.status_code} {response.text}")
    return response.json()


def _chatflow_graph() -> dict[str, Any]:
    def node(node_id: str, kind: str, **data: Any) -> dict[str, Any]:
        return {"id": node_id, "type": "custom", "data": {"type": kind, "title": node_id, **data}}

    def edge(source: str, target: str) -> dict[str, Any]:
        return {"id": f"{source}-{target}", "source": source, "target": target,
                "sourceHandle": "source"}  # fmt: skip

    nodes = [
        node("start", "start", variables=[]),
        node(
            "llm", "llm", model=GPT, prompt_template=[{"role": "user", "text": "{{#sys.query#}}"}]
        ),
        node("answer", "answer", answer="{{#llm.text#}}"),
    ]
    edges = [edge("start", "llm"), edge("llm", "answer")]
    return {"graph": {"nodes": nodes, "edges": edges}, "features": {}}


def app_keys(url: str) -> dict[str, str]:
    """A chat app and a chatflow app on the model test server: their `app-` keys."""
    with httpx.Client(base_url=url, timeout=30) as console:
        _checked(console.post("/console/api/setup", json=ADMIN))
        token = _checked(console.post("/console/api/login", json=ADMIN))["data"]["access_token"]
        console.headers["Authorization"] = f"Bearer {token}"
        keys = {}
        for name, mode in ((CHAT, "chat"), (CHATFLOW, "advanced-chat")):
            app = _checked(console.post("/console/api/apps", json={"name": name, "mode": mode}))
            base = f"/console/api/apps/{app['id']}"
            if mode == "chat":
                config = {"model": GPT, "prompt_type": "simple", "pre_prompt": ""}
                _checked(console.post(f"{base}/model-config", json=config))
            else:
                _checked(console.post(f"{base}/workflows/draft", json=_chatflow_graph()))
                _checked(console.post(f"{base}/workflows/publish", json={}))
            keys[name] = _checked(console.post(f"{base}/api-keys"))["token"]
        return keys


# --- one call of each kind ----------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    ttft: float | None  # streaming: seconds until the first text
    total: float


Call = Callable[[], Awaitable[Sample | None]]  # None: an error or a wrong answer


def tusk_call(client: httpx.AsyncClient, key: str, streaming: bool) -> Call:
    body = {"query": "Say twenty words.", "inputs": {}, "user": "bench",
            "auto_generate_name": False,
            "response_mode": "streaming" if streaming else "blocking"}  # fmt: skip
    headers = {"Authorization": f"Bearer {key}"}

    async def blocking() -> Sample | None:
        started = time.perf_counter()
        response = await client.post("/v1/chat-messages", json=body, headers=headers)
        ok = response.status_code == 200 and response.json().get("answer") == REPLY_TEXT
        return Sample(None, time.perf_counter() - started) if ok else None

    async def stream() -> Sample | None:
        started, first, pieces, ended = time.perf_counter(), None, [], False
        async with client.stream("POST", "/v1/chat-messages", json=body, headers=headers) as r:
            if r.status_code != 200:
                return None
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                event = json.loads(line[6:])
                if event["event"] == "message" and event["answer"]:
                    first = first or time.perf_counter()
                    pieces.append(event["answer"])
                ended = ended or event["event"] == "message_end"
        if first is None or not ended or "".join(pieces) != REPLY_TEXT:
            return None
        return Sample(first - started, time.perf_counter() - started)

    return stream if streaming else blocking


def model_call(client: httpx.AsyncClient, streaming: bool) -> Call:
    """The baseline: the same chat call, straight to the model test server."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Say twenty words."}],
            "stream": streaming}  # fmt: skip
    if streaming:
        body["stream_options"] = {"include_usage": True}
    headers = {"Authorization": f"Bearer {API_KEY}"}

    async def blocking() -> Sample | None:
        started = time.perf_counter()
        response = await client.post("/chat/completions", json=body, headers=headers)
        ok = response.status_code == 200
        ok = ok and response.json()["choices"][0]["message"]["content"] == REPLY_TEXT
        return Sample(None, time.perf_counter() - started) if ok else None

    async def stream() -> Sample | None:
        started, first, pieces = time.perf_counter(), None, []
        async with client.stream("POST", "/chat/completions", json=body, headers=headers) as r:
            if r.status_code != 200:
                return None
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                for choice in json.loads(line[6:])["choices"]:
                    if text := choice["delta"].get("content"):
                        first = first or time.perf_counter()
                        pieces.append(text)
        if first is None or "".join(pieces) != REPLY_TEXT:
            return None
        return Sample(first - started, time.perf_counter() - started)

    return stream if streaming else blocking


# --- closed loops -------------------------------------------------------------------------------


@dataclass
class Measured:
    samples: list[Sample] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return len(self.samples) / self.seconds if self.seconds else 0.0

    def ttft_ms(self) -> list[float]:
        return [s.ttft * 1000 for s in self.samples if s.ttft is not None]

    def total_ms(self) -> list[float]:
        return [s.total * 1000 for s in self.samples]


async def closed_loop(
    each: Sequence[Call], calls: int, into: Measured, spread: float = 0.0
) -> None:
    """One task per call of `each` (a client of its own), calling back to back until `calls`
    calls are made in all; the clients' first calls start evenly over `spread` seconds."""
    left = calls

    async def client(call: Call, delay: float) -> None:
        nonlocal left
        await asyncio.sleep(delay)
        while left > 0:
            left -= 1
            try:
                sample = await call()
            except httpx.HTTPError:
                sample = None
            if sample is None:
                into.errors += 1
            else:
                into.samples.append(sample)

    started = time.perf_counter()
    await asyncio.gather(*(client(call, spread * i / len(each)) for i, call in enumerate(each)))
    into.seconds += time.perf_counter() - started


Results = dict[tuple[str, bool, Level], Measured]  # (system, streaming, level)


async def measure_levels(
    api_url: str,
    model: ServerProcess,
    keys: dict[str, str],
    calls_per_level: int,
    other: tuple[str, str] | None = None,
) -> Results:
    """Every level; `other` (a name and URL) adds another API's chat and chatflow calls. Each
    system's clients are HTTP clients of their own (bench.common.http_clients)."""
    gc.collect()
    gc.freeze()  # this process's start-up heap: a full collection of it stalled every client
    results: Results = {}
    for streaming in (True, False):
        systems: dict[str, tuple[str, Callable[[httpx.AsyncClient], Call]]] = {
            BASELINE: (model.base_url, partial(model_call, streaming=streaming)),
            CHAT: (api_url, partial(tusk_call, key=keys[CHAT], streaming=streaming)),
            CHATFLOW: (api_url, partial(tusk_call, key=keys[CHATFLOW], streaming=streaming)),
        }
        if other is not None:
            for app in (CHAT, CHATFLOW):
                compared = partial(tusk_call, key=keys[app], streaming=streaming)
                systems[f"{app} @ {other[0]}"] = (other[1], compared)
        for level in LEVELS:
            model.pace(level.clients / CHUNKS_PER_SECOND)
            async with AsyncExitStack() as stack:
                calls: dict[str, tuple[list[Call], float]] = {}  # and their spread
                for name, (url, call_with) in systems.items():
                    each = await stack.enter_async_context(http_clients(level.clients, url))
                    each_call, warm_up = [call_with(client) for client in each], Measured()
                    await closed_loop(each_call, 2 * level.clients, warm_up)
                    spread = 0.0 if level.at_once else Stats.of(warm_up.total_ms()).p50 / 1000
                    calls[name] = (each_call, spread)
                for round_ in range(ROUNDS):
                    order = list(calls.items())
                    for name, (each_call, spread) in order if round_ % 2 == 0 else order[::-1]:
                        measured = results.setdefault((name, streaming, level), Measured())
                        n = max(calls_per_level // ROUNDS, level.clients * 2)
                        await closed_loop(each_call, n, measured, spread)
            _progress(results, streaming, level)
    return results


def systems_in(results: Results) -> list[str]:
    """The systems measured, in the order they were first measured (the baseline first)."""
    return list(dict.fromkeys(name for name, _, _ in results))


def _progress(results: Results, streaming: bool, level: Level) -> None:
    parts = []
    for name in systems_in(results):
        m = results[(name, streaming, level)]
        values = m.ttft_ms() if streaming else m.total_ms()
        p50 = Stats.of(values).p50 if values else float("nan")
        parts.append(f"{name} p50 {p50:.1f} ms, {m.per_second:.0f}/s, {m.errors} errors")
    kind = "streaming" if streaming else "blocking"
    print(f"bench.apps: {kind}, clients {level}: " + "; ".join(parts), file=sys.stderr)


@dataclass
class AppResults:
    levels: Results
    rss: int  # of the API process after the run, bytes
    load: str


def measure(calls: int, against: str | None = None) -> AppResults:
    with scratch_dir("ba") as root, ExitStack() as stack:
        _, conninfo = stack.enter_context(embedded_postgres(root / "pg"))
        model = stack.enter_context(ServerProcess(root / "model.log"))
        api_url, api_pid = stack.enter_context(tusk_api(conninfo, model.base_url, root / "api.log"))
        keys = app_keys(api_url)
        other = None
        if against is not None:
            code = stack.enter_context(worktree_at(against, root / "against"))
            url, _ = stack.enter_context(
                tusk_api(conninfo, model.base_url, root / "against.log", root=code)
            )
            other = (against, url)
        levels = asyncio.run(measure_levels(api_url, model, keys, calls, other))
        rss = psutil.Process(api_pid).memory_info().rss
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        return AppResults(levels, rss, load)


# --- the report ---------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return f"{value:.1f}"


def _ttft_rows(results: Results) -> tuple[list[list[str]], list[str]]:
    rows, failures = [], []
    for level in LEVELS:
        base = Stats.of(results[(BASELINE, True, level)].ttft_ms())
        for name in systems_in(results)[1:]:
            measured = results[(name, True, level)]
            mine = Stats.of(measured.ttft_ms())
            added50, added99 = mine.p50 - base.p50, mine.p99 - base.p99
            figures = [base.p50, base.p99, mine.p50, mine.p99, added50, added99]
            rows.append([name, str(level), *map(_ms, figures), str(measured.errors)])
            if name not in GOAL_P50_1_MS:
                continue  # another commit's, for comparison
            if level == Level(1) and added50 > GOAL_P50_1_MS[name]:
                failures.append(f"{name}: added TTFT p50 {added50:.1f} ms at 1 client")
            if level == Level(64) and added99 > GOAL_P99_64_MS:
                failures.append(f"{name}: added TTFT p99 {added99:.1f} ms at 64 clients")
            if measured.errors:
                failures.append(f"{name}: {measured.errors} errors (clients: {level})")
    return rows, failures


def _blocking_rows(results: Results) -> tuple[list[list[str]], list[str]]:
    rows, failures = [], []
    for level in LEVELS:
        base = results[(BASELINE, False, level)]
        for name in systems_in(results):
            m = results[(name, False, level)]
            total = Stats.of(m.total_ms())
            rows.append([name, str(level), f"{m.per_second:.1f}",
                         ratio(m.per_second, base.per_second), _ms(total.p50), _ms(total.p99),
                         str(m.errors)])  # fmt: skip
            if m.errors:
                failures.append(f"{name} blocking: {m.errors} errors (clients: {level})")
    return rows, failures


def report(results: AppResults, calls: int) -> tuple[str, list[str]]:
    ttft, failures = _ttft_rows(results.levels)
    blocking, more = _blocking_rows(results.levels)
    failures += more
    rss_mb = results.rss / 2**20
    if rss_mb > GOAL_RSS_MB:
        failures.append(f"API process RSS {rss_mb:.0f} MB after the run")
    spacing = "the chunks of all streams together arrive at 1000/s"
    text = "\n\n".join(
        [
            "## Apps and the Service API",
            f"A `tusk api` process (uvicorn) on loopback and the model test server (time to first "
            f"token {TTFT_SECONDS * 1000:.0f} ms, {CHUNKS} chunks; {spacing}); at least {calls} "
            f"calls per system and level, in {ROUNDS} alternated rounds. The chat app has an empty "
            "prompt; the chatflow is Start → LLM → Answer. Every call starts a new conversation. "
            "A level's clients start spread over one call's length (its warm-up's median), except "
            'at "64 at once", where all start together and stay in step: bursts of 64 requests.',
            "### Added time to first token, `/v1/chat-messages` streaming (ms)",
            markdown_table(
                [
                    "app",
                    "clients",
                    "model p50",
                    "model p99",
                    "Tusk p50",
                    "Tusk p99",
                    "added p50",
                    "added p99",
                    "errors",
                ],
                ttft,
                left=1,
            ),
            "### Blocking messages per second",
            markdown_table(
                [
                    "system",
                    "clients",
                    "messages/s",
                    "vs model",
                    "latency p50 (ms)",
                    "latency p99 (ms)",
                    "errors",
                ],
                blocking,
            ),
            f"API process RSS after the run: {mib(results.rss)} MiB. Load average after the run: "
            f"{results.load}.",
            "Goals: added p50 under 5 ms (chat) and 10 ms (chatflow) at 1 client, p99 under 25 ms "
            "at 64 (spread; none for the bursts), no errors, RSS under 250 MB. "
            + ("All met." if not failures else "Missed: " + "; ".join(failures) + "."),
        ]
    )
    return text, failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.apps", description=__doc__)
    parser.add_argument("--calls", type=positive_int, default=DEFAULT_CALLS)
    parser.add_argument(
        "--against", metavar="REF", help="also measure this commit's API, in the same rounds"
    )
    options = parser.parse_args(argv)
    try:
        measured = measure(options.calls, options.against)
    except BenchError as exc:
        print(f"bench.apps: {exc}", file=sys.stderr)
        return 1
    text, failures = report(measured, options.calls)
    print(f"{text}\n\n## Machine\n\n{markdown_fields(machine_description())}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
