"""What every benchmark needs: percentiles, a stopwatch, the peak memory of process trees, the
machine's description, Markdown tables, scratch directories, free ports and a clean environment."""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import platform
import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx
import psutil

# Tusk's own settings and those of the Dify deployments it replaces: never inherited by children.
SCRATCH_PARENT = "/tmp"  # short paths: a Unix socket's path is limited to ~100 bytes


class BenchError(Exception):
    """A benchmark could not run; the message says why."""


# --- statistics -------------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), interpolated linearly between the closest ranks."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Stats:
    n: int
    p50: float
    p99: float
    mean: float
    min: float
    max: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stats:
        return cls(
            n=len(samples),
            p50=percentile(samples, 50),
            p99=percentile(samples, 99),
            mean=sum(samples) / len(samples),
            min=min(samples),
            max=max(samples),
        )


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def ratio(value: float, baseline: float) -> str:
    """`value / baseline` as "12×", "3.4×" or "0.052×"."""
    if baseline <= 0:
        return "n/a"
    quotient = value / baseline
    if quotient >= 10:
        return f"{quotient:.0f}×"
    if quotient >= 1:
        return f"{quotient:.1f}×"
    return f"{quotient:.2g}×"


class Stopwatch:
    """`with Stopwatch() as sw: ...` then `sw.seconds`; `sw.elapsed()` while running."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.seconds = 0.0

    def __enter__(self) -> Stopwatch:
        self.started = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.seconds = self.elapsed()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


@dataclass(frozen=True)
class Measured:
    """Each operation's latency and the whole loop's time, in seconds."""

    latencies: list[float]
    seconds: float

    @property
    def stats(self) -> Stats:
        return Stats.of(self.latencies)

    @property
    def ops_per_second(self) -> float:
        return len(self.latencies) / self.seconds


async def timed(op: Callable[[int], Awaitable[object]], ops: int, warmup: int) -> Measured:
    """Call `op(i)` for i in [ops, ops + warmup) untimed, then time each of `op(0..ops-1)`."""
    for i in range(ops, ops + warmup):
        await op(i)
    latencies = []
    started = time.perf_counter()
    for i in range(ops):
        before = time.perf_counter()
        await op(i)
        latencies.append(time.perf_counter() - before)
    return Measured(latencies, time.perf_counter() - started)


# --- memory -----------------------------------------------------------------------------------


@asynccontextmanager
async def http_clients(
    count: int, base_url: str, timeout: float = 120
) -> AsyncIterator[list[httpx.AsyncClient]]:
    """`count` HTTP clients, one connection each, as that many separate users have. One client
    shared by all would make its connection pool's bookkeeping, which scans every connection at
    every request, the load generator's main cost at 60 clients, and its slowest calls."""
    tls = ssl.create_default_context()  # unused on http://, but made per client otherwise
    async with AsyncExitStack() as stack:
        made = [httpx.AsyncClient(base_url=base_url, timeout=timeout, verify=tls)
                for _ in range(count)]  # fmt: skip
        for client in made:
            await stack.enter_async_context(client)
        yield made


def process_tree(roots: Iterable[int]) -> list[psutil.Process]:
    """The processes `roots` and all their descendants that still exist."""
    found: dict[int, psutil.Process] = {}
    for pid in roots:
        try:
            root = psutil.Process(pid)
            found[pid] = root
            found.update((child.pid, child) for child in root.children(recursive=True))
        except psutil.Error:
            continue
    return list(found.values())


def _memory(proc: psutil.Process) -> tuple[int, int | None]:
    """(RSS, PSS) of one process; PSS is None where the kernel does not tell it to us."""
    try:
        full = proc.memory_full_info()
    except psutil.AccessDenied:
        return proc.memory_info().rss, None
    return full.rss, getattr(full, "pss", None)


def tree_memory(roots: Iterable[int]) -> tuple[int, int | None]:
    """Summed (RSS, PSS) of the process trees at `roots`, at this instant."""
    rss, pss, pss_known = 0, 0, True
    for proc in process_tree(roots):
        try:
            one_rss, one_pss = _memory(proc)
        except psutil.Error:
            continue  # exited between listing and reading
        rss += one_rss
        pss_known = pss_known and one_pss is not None
        pss += one_pss or 0
    return rss, (pss if pss_known else None)


class MemorySampler:
    """Samples, in a thread, the summed memory of the process trees whose roots `roots()` names
    (asked again at each sample, as processes come and go), and keeps the peaks.

    RSS counts a shared page once per process that maps it, which overstates a multi-process
    server such as PostgreSQL (its shared buffers); PSS shares such pages out, so the sum of PSS
    is the tree's real footprint.
    """

    def __init__(self, roots: Callable[[], Iterable[int]], interval: float = 0.1) -> None:
        self._roots = roots
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="memory-sampler", daemon=True)
        self.peak_rss = 0
        self.peak_pss: int | None = 0

    def sample(self) -> None:
        rss, pss = tree_memory(self._roots())
        self.peak_rss = max(self.peak_rss, rss)
        if pss is None or self.peak_pss is None:
            self.peak_pss = None
        else:
            self.peak_pss = max(self.peak_pss, pss)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()

    def __enter__(self) -> MemorySampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        if exc is None:
            self.sample()


def mib(size: int | None) -> str:
    return "n/a" if size is None else f"{size / 2**20:,.0f}"


def postmaster_pid(pgdata: Path) -> list[int]:
    """The postmaster of the cluster in `pgdata`, if running: pg_ctl daemonises it, so it is no
    descendant of the process that started it."""
    try:
        first = (pgdata / "postmaster.pid").read_text().splitlines()[0]
    except (OSError, IndexError):
        return []
    return [int(first)] if first.strip().isdigit() else []


# --- the machine ------------------------------------------------------------------------------


def _cpuinfo() -> tuple[str, int]:
    model, count = platform.processor() or "unknown", 0
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return model, os.cpu_count() or 0
    for line in lines:
        name, _, value = line.partition(":")
        if name.strip() == "processor":
            count += 1
        elif name.strip() == "model name" and count <= 1:
            model = value.strip()
    return model, count


def _os_name() -> str:
    try:
        release = Path("/etc/os-release").read_text()
    except OSError:
        return platform.platform()
    for line in release.splitlines():
        if line.startswith("PRETTY_NAME="):
            return f"{line.split('=', 1)[1].strip(chr(34))}, kernel {platform.release()}"
    return platform.platform()


def _filesystem(path: str) -> str:
    partitions = psutil.disk_partitions(all=True)
    mounts = [part for part in partitions if Path(path).is_relative_to(part.mountpoint)]
    if not mounts:
        return "unknown"
    best = max(mounts, key=lambda part: len(part.mountpoint))
    return f"{best.fstype} ({best.device} on {best.mountpoint})"


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_description() -> dict[str, str]:
    model, count = _cpuinfo()
    return {
        "CPU": f"{model} × {count} logical CPUs",
        "RAM": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "OS": _os_name(),
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "scratch filesystem": f"{SCRATCH_PARENT}: {_filesystem(SCRATCH_PARENT)}",
        "load average (1, 5, 15 min)": load_average(),
    }


# --- output -----------------------------------------------------------------------------------


def markdown_table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], *, left: int = 1
) -> str:
    """A Markdown table; the first `left` columns are left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(headers) + " |"]
    lines.append("|" + "|".join([":---"] * left + ["---:"] * (len(headers) - left)) + "|")
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_fields(fields: dict[str, str]) -> str:
    return "\n".join(f"- **{name}**: {value}" for name, value in fields.items())


# --- processes and places ---------------------------------------------------------------------


@contextmanager
def scratch_dir(prefix: str = "tb") -> Iterator[Path]:
    """A new directory with a short path under /tmp, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=SCRATCH_PARENT))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --- prerequisites ----------------------------------------------------------------------------

REDIS_SERVER_HINT = (
    "redis-server is not on PATH; the Redis baseline needs it. On Debian or Ubuntu: "
    "apt-get install -y redis-server (as root; `make bench` does this when run as root)"
)
REDIS_CLIENT_HINT = (
    "the Python package `redis` is missing; the Redis baseline needs it: "
    ".venv/bin/pip install 'redis>=5,<9' (or .venv/bin/pip install -e '.[bench]')"
)


def redis_problems() -> list[str]:
    """What is missing to run the Redis baseline (nothing: an empty list)."""
    problems = []
    if shutil.which("redis-server") is None:
        problems.append(REDIS_SERVER_HINT)
    if importlib.util.find_spec("redis") is None:
        problems.append(REDIS_CLIENT_HINT)
    return problems
