"""Time to ready: `tusk up` until `GET /ready` answers 200, against the bare bundled PostgreSQL
until `SELECT 1` succeeds; each cold (a new, empty data dir) and warm (the same dir again).

    .venv/bin/python -m bench.startup [--runs N]      (or BENCH_RUNS=N)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import psycopg

from bench.common import (
    BenchError,
    MemorySampler,
    Stats,
    Stopwatch,
    log_tail,
    machine_description,
    markdown_fields,
    markdown_table,
    mib,
    positive_int,
    postmaster_pid,
    ratio,
    scratch_dir,
)
from tusk.db.embedded import EmbeddedPostgres, bundled_major_version
from tusk.runtime import EMBEDDED_SERVER_SETTINGS
from tusk.testing.processes import clean_env, free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
TARGET_COLD_SECONDS = 20.0  # the target for `tusk up` on a new data dir, on 2 cores
READY_TIMEOUT_SECONDS = 180.0
STOP_TIMEOUT_SECONDS = 60.0
POLL_SECONDS = 0.05
SAMPLE_SECONDS = 0.1
DEFAULT_RUNS = 5

TUSK, POSTGRES = "Tusk (`tusk up`)", "bare PostgreSQL"
COLD, WARM = "cold", "warm"
WHAT = {
    (POSTGRES, COLD): "initdb + start, until `SELECT 1`",
    (POSTGRES, WARM): "start, until `SELECT 1`",
    (TUSK, COLD): "initdb + start + migrate + API + worker, until `/ready` is 200",
    (TUSK, WARM): "start + API + worker, until `/ready` is 200",
}


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_rss: int
    peak_pss: int | None
    clean_stop: bool


# --- Tusk -------------------------------------------------------------------------------------


def tusk_up(data_dir: Path, log_path: Path) -> Run:
    """Start `tusk up` on `data_dir`, time it to a 200 from /ready, then stop it with SIGINT."""
    port = free_port()
    env = clean_env(TUSK_DATA_DIR=str(data_dir), TUSK_PORT=str(port), PYTHONUNBUFFERED="1")
    pgdata = data_dir / "pg"
    with log_path.open("ab") as log:
        watch = Stopwatch()
        proc = subprocess.Popen(
            [sys.executable, "-m", "tusk", "up"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def tree() -> list[int]:
            return [proc.pid, *postmaster_pid(pgdata)]

        try:
            with MemorySampler(tree, SAMPLE_SECONDS) as memory:
                seconds = _wait_ready(f"http://127.0.0.1:{port}/ready", proc, watch, log_path)
            return Run(seconds, memory.peak_rss, memory.peak_pss, _interrupt(proc))
        finally:
            _reap(proc, pgdata)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], watch: Stopwatch, log: Path) -> float:
    with httpx.Client(timeout=2.0) as client:
        while watch.elapsed() < READY_TIMEOUT_SECONDS:
            if proc.poll() is not None:
                raise BenchError(
                    f"`tusk up` exited with {proc.returncode} before it was ready:\n{log_tail(log)}"
                )
            with contextlib.suppress(httpx.TransportError):
                if client.get(url).status_code == 200:
                    return watch.elapsed()
            time.sleep(POLL_SECONDS)
    raise BenchError(f"{url} was not 200 within {READY_TIMEOUT_SECONDS:.0f} s:\n{log_tail(log)}")


def _interrupt(proc: subprocess.Popen[bytes]) -> bool:
    """SIGINT, as Ctrl-C would; True when `tusk up` then exits 0."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(STOP_TIMEOUT_SECONDS) == 0
    except subprocess.TimeoutExpired:
        return False


def _reap(proc: subprocess.Popen[bytes], pgdata: Path) -> None:
    """Leave nothing running, even after a failure: the postmaster outlives a killed parent."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if (pgdata / "postmaster.pid").exists():
        EmbeddedPostgres(pgdata).stop()


# --- the baseline -----------------------------------------------------------------------------


def bare_postgres(pgdata: Path) -> Run:
    """Start the bundled PostgreSQL with Tusk's settings and time it to a `SELECT 1`."""
    server = EmbeddedPostgres(pgdata, dict(EMBEDDED_SERVER_SETTINGS))
    me = psutil.Process()

    def tree() -> list[int]:  # initdb and pg_ctl while they run, then the postmaster
        return [child.pid for child in me.children()] + postmaster_pid(server.pgdata)

    try:
        with MemorySampler(tree, SAMPLE_SECONDS) as memory, Stopwatch() as watch:
            server.start()
            _select_one(server.conninfo(), watch)
    finally:
        server.stop()
    return Run(watch.seconds, memory.peak_rss, memory.peak_pss, not server.is_running())


def _select_one(conninfo: str, watch: Stopwatch) -> None:
    while True:
        try:
            with psycopg.connect(conninfo, connect_timeout=2) as conn:
                conn.execute("SELECT 1").fetchone()
                return
        except psycopg.OperationalError:
            if watch.elapsed() > READY_TIMEOUT_SECONDS:
                raise
            time.sleep(POLL_SECONDS)


# --- the benchmark ----------------------------------------------------------------------------

Results = dict[tuple[str, str], list[Run]]


def measure(runs: int) -> Results:
    """Alternate the systems in each round so that a slow moment of the machine hits both."""
    results: Results = defaultdict(list)
    for round_ in range(1, runs + 1):
        with scratch_dir() as root:
            log = root / "tusk.log"
            results[POSTGRES, COLD].append(bare_postgres(root / "b"))
            results[POSTGRES, WARM].append(bare_postgres(root / "b"))
            results[TUSK, COLD].append(tusk_up(root / "t", log))
            results[TUSK, WARM].append(tusk_up(root / "t", log))
        done = ", ".join(f"{s} {m} {r[-1].seconds:.2f} s" for (s, m), r in results.items())
        print(f"startup round {round_}/{runs}: {done}", file=sys.stderr, flush=True)
    return results


def _row(system: str, mode: str, runs: list[Run]) -> list[object]:
    stats = Stats.of([run.seconds for run in runs])
    pss = [run.peak_pss for run in runs]
    peak_pss = None if None in pss else max(p for p in pss if p is not None)
    return [
        f"{system}, {mode}",
        WHAT[system, mode],
        stats.n,
        f"{stats.p50:.2f}",
        f"{stats.p99:.2f}",
        f"{stats.min:.2f}",
        f"{stats.max:.2f}",
        mib(max(run.peak_rss for run in runs)),
        mib(peak_pss),
        f"{sum(run.clean_stop for run in runs)}/{len(runs)}",
    ]


def report(results: Results) -> str:
    pg = f"PostgreSQL {bundled_major_version()}"
    headers = ["system, start", "what is timed", "runs", "p50 (s)", "p99 (s)", "min (s)"]
    headers += ["max (s)", "peak RSS (MiB)", "peak PSS (MiB)", "clean stop"]
    rows = [_row(system, mode, runs) for (system, mode), runs in results.items()]
    p50 = {key: Stats.of([run.seconds for run in runs]).p50 for key, runs in results.items()}
    ratios = [
        [
            mode,
            f"{p50[TUSK, mode]:.2f}",
            f"{p50[POSTGRES, mode]:.2f}",
            ratio(p50[TUSK, mode], p50[POSTGRES, mode]),
        ]
        for mode in (COLD, WARM)
    ]
    cold_max = max(run.seconds for run in results[TUSK, COLD])
    met = "**met**" if cold_max < TARGET_COLD_SECONDS else "**NOT met**"
    return "\n\n".join(
        [
            "## Time to ready: `tusk up` vs the bare bundled PostgreSQL",
            f"Baseline: the same bundled {pg} with Tusk's server settings, started in-process "
            "with `EmbeddedPostgres.start()`. Memory is the peak, over all runs, of the summed "
            "memory of the whole process tree: `tusk up` with its API and worker children plus "
            "the postmaster and its backends (found through `postmaster.pid`, as pg_ctl "
            "daemonises it); for the baseline, initdb/pg_ctl and the postmaster's tree. "
            '"clean stop": runs whose server stopped cleanly (for Tusk: SIGINT, exit code 0).',
            markdown_table(headers, rows, left=2),
            markdown_table(["start", "Tusk p50 (s)", f"{pg} p50 (s)", "Tusk/PostgreSQL"], ratios),
            f"Target of the issue: Tusk cold start to `/ready` under {TARGET_COLD_SECONDS:.0f} s "
            f"on this 2-core machine: {met} (slowest of {len(results[TUSK, COLD])} cold runs: "
            f"{cold_max:.2f} s).",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__)
    parser.add_argument(
        "--runs",
        type=positive_int,
        default=int(os.environ.get("BENCH_RUNS", DEFAULT_RUNS)),
        help=f"runs of each kind (default: $BENCH_RUNS or {DEFAULT_RUNS})",
    )
    args = parser.parse_args(argv)
    try:
        text = report(measure(args.runs))
    except BenchError as exc:
        print(f"bench.startup: {exc}", file=sys.stderr)
        return 1
    print(f"{text}\n\n## Machine\n\n{markdown_fields(machine_description())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
