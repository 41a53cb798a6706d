"""The code sandbox: latency of a trivial Python and JavaScript snippet run through
`Sandbox.run()` (bubblewrap, pre-started pool), against a bare `python3 -c` / `node -e` subprocess
of the same snippet, sequentially and with concurrent calls, in the same run.

    .venv/bin/python -m bench.sandbox [--calls N] [--workers N]     (or BENCH_CALLS=N)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from bench.common import (
    BenchError,
    Stats,
    machine_description,
    markdown_fields,
    markdown_table,
    mib,
    positive_int,
    ratio,
    tree_memory,
)
from tusk.sandbox import Language, Limits, Sandbox, SandboxConfig

DEFAULT_CALLS = 200
DEFAULT_WORKERS = 8
WARMUP = 5
POOL_SIZE = 2  # TUSK_SANDBOX_POOL_SIZE's default
TARGET_P50_MS = 15.0
INPUTS = {"a": 20, "b": 22}
EXPECTED = {"sum": 42}
SNIPPETS = {
    Language.PYTHON: "def main(a: int, b: int) -> dict:\n    return {'sum': a + b}\n",
    Language.JAVASCRIPT: "function main({a, b}) {\n  return {sum: a + b};\n}\n",
}
# The baselines run the same snippet and print its result, with nothing around them.
BARE_CALLS = {
    Language.PYTHON: "\nimport json, sys\nprint(json.dumps(main(**json.loads(sys.argv[1]))))\n",
    Language.JAVASCRIPT: "\nconsole.log(JSON.stringify(main(JSON.parse(process.argv.at(-1)))));\n",
}
MODES = {
    "warm": "sandbox, pool refilled before each call",
    "back-to-back": "sandbox, calls back to back",
    "concurrent": "sandbox, {workers} concurrent callers",
    "bare": "bare `{bare}` subprocess, one at a time",
    "bare concurrent": "bare `{bare}` subprocess, {workers} concurrent callers",
}


@dataclass
class Row:
    language: Language
    mode: str
    latencies: list[float]
    seconds: float  # the whole loop, for calls per second

    @property
    def stats(self) -> Stats:
        return Stats.of(self.latencies)


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    pool_memory: dict[Language, tuple[int, int | None]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


# --- the calls --------------------------------------------------------------------------------


def bare_argv(language: Language) -> list[str]:
    program = SNIPPETS[language] + BARE_CALLS[language]
    inputs = json.dumps(INPUTS)
    if language is Language.PYTHON:
        return ["/usr/bin/python3", "-c", program, inputs]
    node = shutil.which("node") or "node"
    return [node, "-e", program, "--", inputs]


async def bare_call(language: Language) -> dict[str, object]:
    process = await asyncio.create_subprocess_exec(
        *bare_argv(language),
        stdout=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin"},
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise BenchError(f"the bare {language} call exited with code {process.returncode}")
    result: dict[str, object] = json.loads(out)
    return result


async def sandbox_call(sandbox: Sandbox, language: Language) -> dict[str, object]:
    return (await sandbox.run(language, SNIPPETS[language], INPUTS)).outputs


Call = Callable[[], Awaitable[dict[str, object]]]


async def sequential(
    call: Call, calls: int, failures: list[str], before: Call | None = None
) -> tuple[list[float], float]:
    """Time `calls` calls one after the other; `before` runs untimed before each."""
    latencies, total = [], 0.0
    for _ in range(calls):
        if before is not None:
            await before()
        started = time.perf_counter()
        outputs = await call()
        latencies.append(time.perf_counter() - started)
        total += latencies[-1]
        if outputs != EXPECTED:
            failures.append(f"a call returned {outputs!r}, not {EXPECTED!r}")
    return latencies, total


async def concurrent(
    call: Call, calls: int, workers: int, failures: list[str]
) -> tuple[list[float], float]:
    """`workers` callers, each calling back to back, `calls` calls in all."""
    started = time.perf_counter()
    shares = [calls // workers + (i < calls % workers) for i in range(workers)]
    parts = await asyncio.gather(*(sequential(call, share, failures) for share in shares))
    return [latency for part, _ in parts for latency in part], time.perf_counter() - started


# --- the benchmark ----------------------------------------------------------------------------


async def _pool_ready(sandbox: Sandbox) -> dict[str, object]:
    await sandbox.wait_ready()
    return {}


async def _measure_language(
    sandbox: Sandbox, language: Language, calls: int, workers: int, results: Results
) -> None:
    def in_sandbox() -> Awaitable[dict[str, object]]:
        return sandbox_call(sandbox, language)

    def bare() -> Awaitable[dict[str, object]]:
        return bare_call(language)

    failures = results.failures
    await sequential(in_sandbox, WARMUP, failures)
    await sequential(bare, WARMUP, failures)
    await sandbox.wait_ready()
    pool = list(sandbox.worker_pids(language))
    results.pool_memory[language] = tree_memory(pool)
    measured = {
        "warm": await sequential(in_sandbox, calls, failures, lambda: _pool_ready(sandbox)),
        "bare": await sequential(bare, calls, failures),
    }
    await sandbox.wait_ready()
    measured["back-to-back"] = await sequential(in_sandbox, calls, failures)
    await sandbox.wait_ready()
    measured["concurrent"] = await concurrent(in_sandbox, calls, workers, failures)
    measured["bare concurrent"] = await concurrent(bare, calls, workers, failures)
    for mode in MODES:
        latencies, seconds = measured[mode]
        results.rows.append(Row(language, mode, latencies, seconds))


async def _measure(calls: int, workers: int) -> Results:
    results = Results()
    # Ten-second timeout: a run that waits for a sandbox to start is slow, not failed.
    config = SandboxConfig(limits=Limits(timeout=10), pool_size=POOL_SIZE)
    async with Sandbox(config) as sandbox:
        await sandbox.wait_ready()
        for language in Language:
            problem = sandbox.problem(language)
            if problem:
                results.skipped.append(f"{language} skipped: {problem}")
                continue
            print(f"sandbox: measuring {language}", file=sys.stderr, flush=True)
            await _measure_language(sandbox, language, calls, workers, results)
    return results


def problems() -> list[str]:
    """What is missing to run this benchmark (nothing: an empty list)."""
    if shutil.which("bwrap") is None:
        return ["bubblewrap is not installed: apt-get install bubblewrap (as root)"]
    return []


def measure(calls: int, workers: int) -> Results:
    if missing := problems():
        raise BenchError("; ".join(missing))
    return asyncio.run(_measure(calls, workers))


# --- the report -------------------------------------------------------------------------------


def _row(row: Row, baseline: dict[tuple[Language, str], float], workers: int) -> list[object]:
    stats = row.stats
    bare = "python3 -c" if row.language is Language.PYTHON else "node -e"
    what = MODES[row.mode].format(workers=workers, bare=bare)
    reference = baseline[row.language, "bare concurrent" if "concurrent" in row.mode else "bare"]
    return [
        row.language,
        what,
        stats.n,
        f"{stats.p50 * 1e3:.1f}",
        f"{stats.p99 * 1e3:.1f}",
        f"{stats.mean * 1e3:.1f}",
        f"{stats.max * 1e3:.1f}",
        "" if row.mode == "warm" else f"{len(row.latencies) / row.seconds:.0f}",
        "" if row.mode.startswith("bare") else ratio(stats.p50, reference),
    ]


def _goal(results: Results) -> str:
    warm = [r for r in results.rows if r.language is Language.PYTHON and r.mode == "warm"]
    if not warm:
        return "Target of the issue: not measured (Python could not run)."
    p50 = warm[0].stats.p50 * 1e3
    met = "**met**" if p50 < TARGET_P50_MS else "**NOT met**"
    return (
        f"Target of the issue: p50 under {TARGET_P50_MS:.0f} ms for a trivial Python snippet "
        f"with the warm pool on this machine: {met} ({p50:.1f} ms)."
    )


def report(results: Results, calls: int, workers: int) -> tuple[str, list[str]]:
    baseline = {
        (r.language, r.mode): r.stats.p50 for r in results.rows if r.mode.startswith("bare")
    }
    headers = ["language", "what is timed", "calls", "p50 (ms)", "p99 (ms)", "mean (ms)"]
    headers += ["max (ms)", "calls/s", "p50 / bare p50"]
    memory = [
        [language, POOL_SIZE, mib(rss), mib(pss)]
        for language, (rss, pss) in results.pool_memory.items()
    ]
    parts = [
        "## Code sandbox: `Sandbox.run()` vs a bare interpreter subprocess",
        f"A trivial snippet (`main(a, b)` returning `{{'sum': a + b}}`) in each language. "
        "**Sandbox**: `Sandbox.run()`, each call in a bubblewrap sandbox of its own (new user, "
        "PID, network, IPC, UTS and mount namespaces, rlimits, an unprivileged user when run as "
        "root) taken from a pool of "
        f"{POOL_SIZE} pre-started ones per language (the default), then destroyed and replaced "
        "in the background; timed from the call until the outputs are back and the sandbox is "
        "gone. **Baseline**: a bare `/usr/bin/python3 -c` or `node -e` subprocess running the "
        "same snippet and printing its result as JSON, timed from the spawn to its exit. "
        "*Pool refilled before each call*: the typical call, with calls spaced out (the wait for "
        "the refill is not timed). *Back to back* and *concurrent*: as fast as they come, "
        f"so that the pool runs dry and the cost of starting a sandbox shows ({calls} calls "
        f"each, after {WARMUP} untimed). Calls per second: calls over the loop's time (none for "
        "the refilled pool, whose waits are not timed).",
        markdown_table(headers, [_row(row, baseline, workers) for row in results.rows], left=2),
        _goal(results),
        "Memory of the idle pool (the pre-started sandboxes of one language, summed over their "
        "process trees):",
        markdown_table(["language", "sandboxes", "RSS (MiB)", "PSS (MiB)"], memory),
    ]
    parts += [f"_{note}_" for note in results.skipped]
    parts += [f"**FAILURE**: {failure}" for failure in sorted(set(results.failures))]
    return "\n\n".join(parts), results.failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sandbox", description=__doc__)
    parser.add_argument(
        "--calls",
        type=positive_int,
        default=int(os.environ.get("BENCH_CALLS", DEFAULT_CALLS)),
        help=f"calls of each kind (default: $BENCH_CALLS or {DEFAULT_CALLS})",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=DEFAULT_WORKERS,
        help=f"concurrent callers (default {DEFAULT_WORKERS})",
    )
    args = parser.parse_args(argv)
    if missing := problems():
        print("\n".join(f"bench.sandbox: {problem}" for problem in missing), file=sys.stderr)
        return 2
    try:
        results = measure(args.calls, args.workers)
    except BenchError as exc:
        print(f"bench.sandbox: {exc}", file=sys.stderr)
        return 1
    text, failures = report(results, args.calls, args.workers)
    print(f"{text}\n\n## Machine\n\n{markdown_fields(machine_description())}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
