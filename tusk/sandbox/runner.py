"""Runs users' Python and JavaScript in bubblewrap sandboxes, served from a pool of started ones.

Each run gets a sandbox of its own, used once and then destroyed:

    bwrap (host side, as an unprivileged user)      <- the process we start and wait for
      └─ prlimit -> python3 boot.py / node boot.js  <- PID 1 of new user/PID/net/IPC/UTS/mount
           └─ whatever the snippet starts              namespaces; read-only /usr, empty tmpfs

The interpreter is PID 1 of its PID namespace (`--as-pid-1`): when it exits, the kernel kills every
process left in the namespace, and bwrap exits only once they are gone. So "bwrap has exited"
means "nothing of that run is alive", and killing PID 1 kills the whole sandbox.

As root, bwrap is started as a dedicated unprivileged user (bwrap then makes its namespaces
unprivileged): RLIMIT_NPROC does not bind root, and a snippet that got out would hold no power.
The limits are set inside the new user namespace (prlimit), where the kernel counts processes
per sandbox rather than per user.

Pre-started sandboxes have started their interpreter and wait for the request on stdin, so a run
costs a pipe round trip; after each run a replacement starts in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import psutil

from tusk.sandbox.command import (
    NOBODY,
    PACKAGES_MOUNT,
    Language,
    Launch,
    RunAs,
    host_layout,
    parse_language,
    sandbox_command,
)
from tusk.sandbox.errors import (
    CodeExecutionError,
    CodeTimeout,
    OutputTooLarge,
    SandboxUnavailable,
)
from tusk.sandbox.limits import Limits, SpawnLimits
from tusk.sandbox.protocol import (
    Result,
    classify_exit,
    encode_request,
    parse_response,
    start_failure,
)

if TYPE_CHECKING:
    from tusk.config import Settings

log = logging.getLogger(__name__)

SANDBOX_USER = "tusk-sandbox"  # runs bwrap when Tusk runs as root
HOST_ENV = {"PATH": "/usr/bin:/bin"}  # bwrap's own: its PID 1 shows it in /proc/1/environ
STARTUP_TIMEOUT = 15.0
EXIT_GRACE = 1.0  # how long a sandbox may take to exit (having answered, or lost its PID 1)
EXIT_WAIT = 10.0  # how long a killed sandbox's exit is waited for
STDERR_KEPT = 16 * 1024
MAX_IDLE_CRASHES = 5
UNSAFE_WARNING = (
    "CODE_EXECUTION_UNSAFE=true and bubblewrap is missing: code nodes run user code WITHOUT "
    "isolation, with this machine's files and network. Never do this in production; install "
    "bubblewrap (apt-get install bubblewrap)"
)
BWRAP_MISSING = (
    "code cannot run: bubblewrap is not installed (apt-get install bubblewrap, or your "
    "distribution's bubblewrap package); CODE_EXECUTION_UNSAFE=true runs code WITHOUT isolation "
    "on a developer machine"
)
BOOT_FILES = {Language.PYTHON: "boot.py", Language.JAVASCRIPT: "boot.js"}


# --- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SandboxConfig:
    limits: Limits = field(default_factory=Limits)
    pool_size: int = 2  # pre-started sandboxes per language
    python: Path = Path("/usr/bin/python3")
    node: Path | None = None  # None: node on PATH
    packages_dir: Path | None = None  # extra Python packages (pip install --target), read-only
    python_packages: frozenset[str] = frozenset()  # importable beyond the standard library
    unsafe: bool = False  # without bubblewrap, run code unisolated instead of refusing
    bwrap: str = "bwrap"  # a name looked up on PATH, or a path
    user: str = SANDBOX_USER

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxConfig:
        names = (name.strip() for name in settings.sandbox_python_packages.split(","))
        return cls(
            limits=Limits.from_settings(settings),
            pool_size=settings.sandbox_pool_size,
            python=settings.sandbox_python,
            node=settings.sandbox_node,
            packages_dir=settings.sandbox_packages_dir,
            python_packages=frozenset(name for name in names if name),
            unsafe=settings.code_execution_unsafe,
        )


# --- host set-up (I/O) ------------------------------------------------------------------------


def sandbox_user(name: str) -> RunAs:
    """The unprivileged user bwrap runs as when we are root; created like a system daemon's."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        args = ["--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent"]
        subprocess.run(
            [useradd, *args, "--shell", "/usr/sbin/nologin", name], capture_output=True, check=False
        )
        try:
            entry = pwd.getpwnam(name)  # created, by us or by a process starting next to us
        except KeyError:
            log.warning("could not create the user %s; sandboxes run as uid %d", name, NOBODY)
            return RunAs(NOBODY, NOBODY, "nobody")
    return RunAs(entry.pw_uid, entry.pw_gid, name)


@dataclass(frozen=True)
class Tools:
    """The host programs a sandbox needs, where found."""

    bwrap: str | None
    prlimit: str | None
    setpriv: str | None
    interpreters: Mapping[Language, Path | None]


def find_tools(config: SandboxConfig) -> Tools:
    node = config.node or (Path(found) if (found := shutil.which("node")) else None)
    return Tools(
        bwrap=shutil.which(config.bwrap),
        prlimit=shutil.which("prlimit"),
        setpriv=shutil.which("setpriv"),
        interpreters={Language.PYTHON: config.python, Language.JAVASCRIPT: node},
    )


def tool_problem(language: Language, tools: Tools, *, unsafe: bool, root: bool) -> str | None:
    """Why code in `language` cannot run with these tools, or None."""
    interpreter = tools.interpreters[language]
    if tools.bwrap is None and not unsafe:
        return BWRAP_MISSING
    if tools.prlimit is None or (root and tools.setpriv is None):
        return "code cannot run: prlimit or setpriv is missing (apt-get install util-linux)"
    if interpreter is None:
        return (
            "JavaScript cannot run: Node.js is not installed (apt-get install nodejs), "
            "or set TUSK_SANDBOX_NODE"
        )
    if not os.access(interpreter, os.X_OK):
        name = "TUSK_SANDBOX_PYTHON" if language is Language.PYTHON else "TUSK_SANDBOX_NODE"
        return f"{language} cannot run: {interpreter} is not an executable ({name})"
    return None


def _sandbox_children(pid: int) -> list[int]:
    try:
        return [child.pid for child in psutil.Process(pid).children()]
    except psutil.Error:
        return []


def _kill_children(pid: int) -> bool:
    """SIGKILL the children of `pid`; False if it has none."""
    children = _sandbox_children(pid)
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    return bool(children)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def _tail(stream: asyncio.StreamReader, limit: int) -> bytes:
    """Read `stream` to its end, keeping its last `limit` bytes."""
    kept = bytearray()
    while chunk := await stream.read(65536):
        kept += chunk
        del kept[:-limit]
    return bytes(kept)


class _ResponseTooLarge(Exception):
    pass


async def _read_line(stream: asyncio.StreamReader, limit: int) -> bytes:
    """The first line of `stream` (b"" at end of stream), refusing one longer than `limit`."""
    line = bytearray()
    while chunk := await stream.read(65536):
        end = chunk.find(b"\n")
        line += chunk if end < 0 else chunk[: end + 1]
        if len(line) > limit:
            raise _ResponseTooLarge
        if end >= 0:
            return bytes(line)
    return b""


@dataclass(eq=False)
class Worker:
    """One started sandbox, used for one run."""

    language: Language
    spawn: SpawnLimits
    process: asyncio.subprocess.Process  # bwrap's; without bwrap (unsafe), the interpreter's
    errors: asyncio.Task[bytes]  # the end of its stderr, known once it has exited
    exited: asyncio.Task[int]
    sandboxed: bool = True

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def destroy(self, grace: float = 0.0) -> None:
        """Wait `grace` seconds for it to exit by itself, then kill it; return once it is gone."""
        if self.alive and grace > 0:
            await asyncio.wait([self.exited], timeout=grace)
        if self.alive and self.sandboxed and _kill_children(self.process.pid):
            # Its child is the sandbox's PID 1: the kernel kills the rest of the namespace, then
            # bwrap reaps the child and exits. (Killing bwrap as well would orphan the child.)
            await asyncio.wait([self.exited], timeout=EXIT_GRACE)
        if self.alive:  # still starting, stuck, or unsafe: kill its process group
            _kill_children(self.process.pid)
            _kill_group(self.process.pid)
        # Killed, it is gone at once; asyncio reports the exit once its pipes are closed too,
        # which a bounded wait keeps from holding up a run or a shutdown for ever.
        _, pending = await asyncio.wait([self.exited], timeout=EXIT_WAIT)
        if pending:
            log.warning("sandbox process %d: its exit was not reported", self.process.pid)
        # Without bwrap, a process that left the process group may hold stderr open.
        await asyncio.wait([self.errors], timeout=EXIT_GRACE)
        self.errors.cancel()

    def stderr(self) -> bytes:
        done = self.errors.done() and not self.errors.cancelled()
        return self.errors.result() if done else b""


# --- the sandbox ------------------------------------------------------------------------------


class Sandbox:
    """Runs code in sandboxes; `start()` it, then `run()`; `close()` stops every sandbox process.
    The API and the worker processes each own one."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.limits = self.config.limits
        self._launches: dict[Language, Launch] = {}
        self._problems: dict[Language, str] = {}  # why a language cannot run at all
        self._broken: dict[Language, str] = {}  # why its last start failed; retried per run
        self._run_as: RunAs | None = None
        self._ready: dict[Language, deque[Worker]] = {lang: deque() for lang in Language}
        self._starting: dict[Language, set[asyncio.Task[None]]] = {lang: set() for lang in Language}
        self._idle_crashes: dict[Language, int] = dict.fromkeys(Language, 0)
        self._live: set[Worker] = set()
        self._starts: set[asyncio.Task[Worker]] = set()  # sandboxes being started, never cut short
        self._destroying: set[asyncio.Task[None]] = set()
        self._started = False
        self._closed = False
        self._start_lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> Sandbox:
        return cls(SandboxConfig.from_settings(settings))

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Find the tools, and start filling the pools in the background (`wait_ready()`)."""
        async with self._start_lock:
            if self._started:
                return
            await asyncio.to_thread(self._prepare)
            self._started = True
        for language in Language:
            self._refill(language)

    async def wait_ready(self) -> None:
        """Return once every pool is full, or has failed to start (then logged), and every
        sandbox start has ended (and the sandboxes of cancelled runs are gone)."""
        while tasks := [
            *(task for tasks in self._starting.values() for task in tasks),
            *self._starts,
            *self._destroying,
        ]:
            await asyncio.wait(tasks)

    async def close(self) -> None:
        """Stop filling the pools and kill every sandbox, idle or running; return once all are
        gone. Runs in progress fail."""
        self._closed = True
        starting = [task for tasks in self._starting.values() for task in tasks]
        for task in starting:
            task.cancel()
        await asyncio.gather(*starting, return_exceptions=True)
        await asyncio.gather(*self._starts, return_exceptions=True)
        for ready in self._ready.values():
            ready.clear()
        await asyncio.gather(*(worker.destroy() for worker in list(self._live)))
        await asyncio.gather(*self._destroying)

    def problem(self, language: Language | str) -> str | None:
        """Why code in `language` cannot run here, or None."""
        lang = parse_language(language)
        return self._problems.get(lang) or self._broken.get(lang)

    def pooled(self) -> dict[Language, int]:
        """How many pre-started sandboxes wait, per language."""
        return {language: len(ready) for language, ready in self._ready.items()}

    def worker_pids(self, language: Language | None = None) -> set[int]:
        """The host PIDs of the sandboxes alive now (bwrap's, or the interpreter's if unsafe),
        idle or running, of one language or all."""
        live = (w for w in self._live if language is None or w.language is language)
        return {worker.process.pid for worker in live if worker.alive}

    @property
    def run_as(self) -> RunAs | None:
        """The user the sandboxes run as, when Tusk runs as root."""
        return self._run_as

    def _prepare(self) -> None:
        """Blocking: find bwrap, prlimit and the interpreters; create the sandbox user."""
        config, tools = self.config, find_tools(self.config)
        root = os.geteuid() == 0
        for language in Language:
            if problem := tool_problem(language, tools, unsafe=config.unsafe, root=root):
                self._problems[language] = problem
        if tools.bwrap is None:
            log.warning("%s", UNSAFE_WARNING if config.unsafe else BWRAP_MISSING)
        self._run_as = sandbox_user(config.user) if root else None
        layout = host_layout(path for path in tools.interpreters.values() if path is not None)
        for language, interpreter in tools.interpreters.items():
            if language not in self._problems and interpreter and tools.prlimit:
                self._launches[language] = Launch(
                    language=language,
                    interpreter=str(interpreter),
                    boot=(Path(__file__).parent / BOOT_FILES[language]).read_text(),
                    spawn=self.limits.spawn(),
                    prlimit=tools.prlimit,
                    bwrap=tools.bwrap,
                    layout=layout,
                    packages_dir=str(config.packages_dir) if config.packages_dir else None,
                    run_as=self._run_as,
                    setpriv=tools.setpriv or "setpriv",
                )
        log.info(
            "code sandbox: %s as %s; python: %s; javascript: %s",
            tools.bwrap or "NO bubblewrap",
            self._run_as.name if self._run_as else "this user",
            *(self._problems.get(lang, tools.interpreters[lang]) for lang in Language),
        )

    # --- the pool -----------------------------------------------------------------------------

    def _refill(self, language: Language) -> None:
        if self._closed or language not in self._launches or language in self._broken:
            return
        starting = self._starting[language]
        for _ in range(self.config.pool_size - len(self._ready[language]) - len(starting)):
            task = asyncio.create_task(self._add_to_pool(language))
            starting.add(task)
            task.add_done_callback(starting.discard)

    async def _add_to_pool(self, language: Language) -> None:
        try:
            worker = await self._spawn(language, self.limits.spawn())
        except SandboxUnavailable as exc:
            if language not in self._broken:
                log.error("%s", exc.message)
            self._broken[language] = exc.message
            return
        if self._closed:
            await worker.destroy()
            return
        self._ready[language].append(worker)
        worker.exited.add_done_callback(lambda _: self._on_idle_exit(worker))

    def _on_idle_exit(self, worker: Worker) -> None:
        """A pre-started sandbox died before use (killed, or crashed): replace it."""
        ready = self._ready[worker.language]
        if worker not in ready:
            return  # it was used, or the pool is closing
        ready.remove(worker)
        crashes = self._idle_crashes[worker.language] = self._idle_crashes[worker.language] + 1
        log.warning(
            "a pre-started %s sandbox exited with code %s before use; starting another",
            worker.language,
            worker.process.returncode,
        )
        if crashes > MAX_IDLE_CRASHES:
            self._broken[worker.language] = f"pre-started {worker.language} sandboxes keep exiting"
            log.error("%s: not starting more until a run succeeds", self._broken[worker.language])
        self._refill(worker.language)

    async def _acquire(self, language: Language, spawn: SpawnLimits) -> Worker:
        """A pre-started sandbox whose limits fit, or else a new one."""
        ready = self._ready[language]
        if self.limits.spawn().serves(spawn):
            while ready:
                worker = ready.popleft()
                if worker.alive:
                    self._idle_crashes[language] = 0
                    return worker
        self._refill(language)  # the pool ran dry: its replacements start next to this one
        worker = await self._spawn(language, spawn)
        if self._broken.pop(language, None):
            self._idle_crashes[language] = 0
            log.info("the %s sandbox starts again", language)
        return worker

    async def _spawn(self, language: Language, spawn: SpawnLimits) -> Worker:
        """Start a sandbox and wait for its "ready"; SandboxUnavailable if it does not start."""
        start = asyncio.create_task(self._start(replace(self._launches[language], spawn=spawn)))
        self._starts.add(start)
        start.add_done_callback(self._starts.discard)
        try:
            return await asyncio.shield(start)
        except asyncio.CancelledError:
            # A start is never cut short. Cancelled while asyncio creates the process, that
            # creation kills bwrap alone, and can then wait forever for pipes its orphaned sandbox
            # holds open; killed while bwrap sets up, its child may not yet be bound to die with
            # it. So the start goes on, and what it started is destroyed once it is ready.
            start.add_done_callback(self._destroy_started)
            raise

    async def _start(self, launch: Launch) -> Worker:
        worker = await self._start_process(launch)
        process = worker.process
        assert process.stdout is not None
        try:
            async with asyncio.timeout(STARTUP_TIMEOUT):
                line = await process.stdout.readline()
        except BaseException:
            await worker.destroy()
            raise
        if line != b"ready\n":
            await worker.destroy()
            failure = start_failure(launch.language, process.returncode, worker.stderr())
            raise SandboxUnavailable(failure)
        return worker

    async def _start_process(self, launch: Launch) -> Worker:
        try:
            process = await asyncio.create_subprocess_exec(
                *sandbox_command(launch),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=HOST_ENV,
                cwd="/",
                start_new_session=True,
            )
        except OSError as exc:
            message = f"the {launch.language} sandbox did not start: {exc}"
            raise SandboxUnavailable(message) from None
        assert process.stderr is not None
        worker = Worker(
            language=launch.language,
            spawn=launch.spawn,
            process=process,
            errors=asyncio.create_task(_tail(process.stderr, STDERR_KEPT)),
            exited=asyncio.create_task(process.wait()),
            sandboxed=launch.bwrap is not None,
        )
        self._live.add(worker)
        worker.exited.add_done_callback(lambda _: self._live.discard(worker))
        return worker

    def _destroy_started(self, starting: asyncio.Task[Worker]) -> None:
        """Destroy the sandbox a cancelled start went on to create (`close()` awaits it)."""
        if not starting.cancelled() and starting.exception() is None:
            destroying = asyncio.create_task(starting.result().destroy())
            self._destroying.add(destroying)
            destroying.add_done_callback(self._destroying.discard)

    # --- running code -------------------------------------------------------------------------

    async def run(
        self,
        language: Language | str,
        code: str,
        inputs: Mapping[str, Any],
        limits: Limits | None = None,
    ) -> Result:
        """Run `main(**inputs)` (Python) or `main(inputs)` (JavaScript) of `code` in a sandbox of
        its own; its outputs, or a CodeExecutionError saying what went wrong."""
        lang = parse_language(language)
        limits = limits or self.limits
        if not self._started:
            await self.start()
        if self._closed:
            raise SandboxUnavailable("the code sandbox is closed")
        if problem := self._problems.get(lang):
            raise SandboxUnavailable(problem)
        request = self._request(lang, code, inputs, limits)
        worker = await self._acquire(lang, limits.spawn())
        try:
            outcome, grace = await self._exchange(worker, request, limits)
            # Replacements start after the exchange, not during it: on a small machine a starting
            # interpreter would take the CPU from the run.
            self._refill(lang)
            await worker.destroy(grace)
        except BaseException:  # cancelled: the sandbox must not outlive the run
            self._refill(lang)
            await worker.destroy()
            raise
        if outcome is None and self._closed:
            raise SandboxUnavailable("the code sandbox was closed during the run")
        if outcome is None:
            # Killed by the destroy, if its exit was not reported (see Worker.destroy).
            status = worker.exited.result() if worker.exited.done() else 128 + signal.SIGKILL
            outcome = classify_exit(status, worker.stderr(), lang, limits)
        if isinstance(outcome, CodeExecutionError):
            raise outcome
        return outcome

    def _request(
        self, language: Language, code: str, inputs: Mapping[str, Any], limits: Limits
    ) -> bytes:
        if language is not Language.PYTHON:
            return encode_request(code, inputs, limits, (), [])
        path = [PACKAGES_MOUNT] if self.config.packages_dir else []
        if self._launches[language].bwrap is None and self.config.packages_dir:
            path = [str(self.config.packages_dir)]  # unsafe: no mount, the host's own path
        return encode_request(code, inputs, limits, self.config.python_packages, path)

    async def _exchange(
        self, worker: Worker, request: bytes, limits: Limits
    ) -> tuple[Result | CodeExecutionError | None, float]:
        """Send the request and read the response line: the outcome (None if the sandbox ended
        without answering) and how long it may take to exit by itself before it is killed."""
        process = worker.process
        assert process.stdin is not None
        assert process.stdout is not None
        started = time.perf_counter()
        try:
            async with asyncio.timeout(limits.timeout):
                try:
                    process.stdin.write(request)
                    await process.stdin.drain()
                    process.stdin.close()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # it died: the response is missing, and its exit says why
                line = await _read_line(process.stdout, limits.response_bytes)
        except TimeoutError:
            message = f"the code ran longer than the {limits.timeout:g} s timeout"
            return CodeTimeout(message, details={"timeout": limits.timeout}), 0.0
        except _ResponseTooLarge:
            message = f"the code wrote more than {limits.response_bytes} bytes of response"
            return OutputTooLarge(message, details={"limit": limits.output_bytes}), 0.0
        if not line:
            return None, 0.0
        try:
            return parse_response(line, limits, time.perf_counter() - started), EXIT_GRACE
        except CodeExecutionError as exc:
            return exc, EXIT_GRACE
