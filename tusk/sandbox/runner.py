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
import json
import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import psutil

from tusk.errors import InvalidParam
from tusk.sandbox.errors import (
    ERRORS_BY_KIND,
    BadReturnType,
    CodeExecutionError,
    CodeRuntimeError,
    CodeTimeout,
    MemoryLimitExceeded,
    OutputTooLarge,
    SandboxUnavailable,
)
from tusk.sandbox.limits import Limits, SpawnLimits

if TYPE_CHECKING:
    from tusk.config import Settings

log = logging.getLogger(__name__)

MIB = 2**20
SANDBOX_USER = "tusk-sandbox"  # runs bwrap when Tusk runs as root
NOBODY = 65534  # the uid and gid the code sees, and the fallback user when none can be created
PACKAGES_MOUNT = "/opt/tusk/packages"
SANDBOX_TMP = "/tmp"  # noqa: S108 - the sandbox's own, empty tmpfs
SANDBOX_ENV = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "HOME": SANDBOX_TMP,
    "TMPDIR": SANDBOX_TMP,
}
HOST_ENV = {"PATH": "/usr/bin:/bin"}  # bwrap's own: its PID 1 shows it in /proc/1/environ
SYSTEM_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")  # symlinks into /usr, or not
STARTUP_TIMEOUT = 15.0
EXIT_GRACE = 1.0  # how long a sandbox may take to exit (having answered, or lost its PID 1)
STDERR_KEPT = 16 * 1024
MAX_IDLE_CRASHES = 5
OUT_OF_MEMORY = re.compile(
    r"out of memory|heap limit|MemoryError|allocation failed|bad_alloc", re.I
)
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


class Language(StrEnum):
    PYTHON = "python3"
    JAVASCRIPT = "javascript"


BOOT_FILES = {Language.PYTHON: "boot.py", Language.JAVASCRIPT: "boot.js"}
LANGUAGE_NAMES = {
    "python": Language.PYTHON,
    "python3": Language.PYTHON,
    "javascript": Language.JAVASCRIPT,
    "js": Language.JAVASCRIPT,
    "nodejs": Language.JAVASCRIPT,
}


def parse_language(name: str) -> Language:
    try:
        return LANGUAGE_NAMES[str(name).lower()]
    except KeyError:
        raise InvalidParam(f"unknown code language {name!r}: python3 or javascript") from None


@dataclass(frozen=True)
class Result:
    outputs: dict[str, Any]
    stdout: str  # what the code printed, at most `Limits.print_bytes`
    stdout_truncated: bool
    elapsed: float  # seconds from sending the inputs to receiving the outputs


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


@dataclass(frozen=True)
class Layout:
    """The host paths the sandbox sees read-only, and the symlinks of a merged-/usr system."""

    binds: tuple[str, ...] = ("/usr",)
    symlinks: tuple[tuple[str, str], ...] = ()  # (target, link)


@dataclass(frozen=True)
class RunAs:
    uid: int
    gid: int
    name: str


@dataclass(frozen=True)
class Launch:
    """Everything the command line of one sandbox depends on."""

    language: Language
    interpreter: str
    boot: str  # the source of boot.py or boot.js
    spawn: SpawnLimits
    prlimit: str
    bwrap: str | None  # None: unsafe, no sandbox
    layout: Layout = Layout()
    packages_dir: str | None = None
    run_as: RunAs | None = None  # as root: the user to become before starting bwrap
    setpriv: str = "setpriv"


# --- command lines (pure) ---------------------------------------------------------------------


def interpreter_argv(launch: Launch) -> list[str]:
    if launch.language is Language.PYTHON:
        # -I: no environment variables, user site or script dir; -S: no site-packages.
        return [launch.interpreter, "-I", "-S", "-B", "-X", "utf8", "-c", launch.boot]
    heap = f"--max-old-space-size={launch.spawn.memory_mb}"
    return [launch.interpreter, heap, "--disallow-code-generation-from-strings", "-e", launch.boot]


def node_data_mb(memory_mb: int) -> int:
    """RLIMIT_DATA for Node.js: ArrayBuffers and native memory count, unlike V8's heap limit.
    With less room than this, V8 crashes without a word before its heap limit says "out of
    memory"."""
    return 2 * memory_mb + 128


def prlimit_argv(launch: Launch) -> list[str]:
    spawn = launch.spawn
    args = [
        launch.prlimit,
        f"--cpu={spawn.cpu_seconds}:{spawn.cpu_seconds + 1}",
        f"--fsize={spawn.file_size_mb * MIB}",
        f"--nofile={spawn.open_files}",
        "--core=0",
    ]
    if launch.bwrap is not None:  # counted per sandbox only inside its user namespace
        args.append(f"--nproc={spawn.processes}")
    if launch.language is Language.PYTHON:
        args.append(f"--as={spawn.memory_mb * MIB}")
    else:  # V8 reserves far more address space than it uses: bound the data segment instead
        args.append(f"--data={node_data_mb(spawn.memory_mb) * MIB}")
    return [*args, "--"]


def bwrap_argv(launch: Launch) -> list[str]:
    assert launch.bwrap is not None
    spawn = launch.spawn
    args = [launch.bwrap, "--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY)]
    args += ["--disable-userns", "--unshare-pid", "--unshare-net", "--unshare-ipc"]
    args += ["--unshare-uts", "--hostname", "sandbox", "--unshare-cgroup-try"]
    args += ["--die-with-parent", "--new-session", "--as-pid-1", "--cap-drop", "ALL"]
    args.append("--clearenv")
    for name, value in SANDBOX_ENV.items():
        args += ["--setenv", name, value]
    for path in launch.layout.binds:
        args += ["--ro-bind", path, path]
    for target, link in launch.layout.symlinks:
        args += ["--symlink", target, link]
    if launch.packages_dir is not None:
        args += ["--ro-bind", launch.packages_dir, PACKAGES_MOUNT]
    args += ["--proc", "/proc", "--dev", "/dev"]
    shm_size = max(spawn.tmp_size_mb * MIB // 4, MIB)
    args += ["--size", str(shm_size), "--tmpfs", "/dev/shm"]  # noqa: S108 - the sandbox's own
    args += ["--size", str(spawn.tmp_size_mb * MIB), "--tmpfs", SANDBOX_TMP]
    args += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", SANDBOX_TMP, "--"]
    return args


def setpriv_argv(launch: Launch) -> list[str]:
    """Become the sandbox user. Done by exec'ing setpriv rather than by subprocess's `user=`,
    which would make Python fork() the whole server instead of vfork()ing it."""
    if launch.run_as is None:
        return []
    uid, gid = launch.run_as.uid, launch.run_as.gid
    return [launch.setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]


def sandbox_command(launch: Launch) -> list[str]:
    inner = [*prlimit_argv(launch), *interpreter_argv(launch)]
    outer = setpriv_argv(launch)
    return [*outer, *inner] if launch.bwrap is None else [*outer, *bwrap_argv(launch), *inner]


# --- requests and responses (pure) -----------------------------------------------------------


def encode_request(
    code: str, inputs: Mapping[str, Any], limits: Limits, modules: Iterable[str], path: list[str]
) -> bytes:
    if not isinstance(code, str):
        raise InvalidParam("code must be a string")
    if not isinstance(inputs, Mapping) or not all(isinstance(key, str) for key in inputs):
        raise InvalidParam("inputs must be an object whose keys are strings")
    request = {
        "code": code,
        "inputs": dict(inputs),
        "limits": {
            "max_depth": limits.max_depth,
            "output_bytes": limits.output_bytes,
            "print_bytes": limits.print_bytes,
        },
        "modules": sorted(modules),
        "path": path,
    }
    try:
        text = json.dumps(request, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidParam(f"the inputs are not JSON values: {exc}") from None
    return text.encode("utf-8", "surrogatepass") + b"\n"


def depth(value: object, limit: int) -> int:
    """How deeply `value` nests (a scalar is 0), counted up to `limit + 1` at most."""
    if limit < 0 or not isinstance(value, dict | list):
        return 0
    items = value.values() if isinstance(value, dict) else value
    return 1 + max((depth(item, limit - 1) for item in items), default=0)


def _error(kind: str, message: Mapping[str, Any], stdout: str) -> CodeExecutionError:
    cls = ERRORS_BY_KIND.get(kind, CodeRuntimeError)
    keys = ("line", "column", "text", "error_type", "traceback")
    details = {key: message[key] for key in keys if message.get(key) is not None}
    text = message.get("message")
    return cls(text if isinstance(text, str) else kind, details=details, stdout=stdout)


def parse_response(line: bytes, limits: Limits, elapsed: float) -> Result:
    """The boot program's answer as a Result, or the typed error it reports."""
    try:
        message = json.loads(line.decode("utf-8", "surrogatepass"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        message = None
    if not isinstance(message, dict):
        raise CodeRuntimeError("the code corrupted the sandbox's response")
    stdout = message["stdout"] if isinstance(message.get("stdout"), str) else ""
    kind = message.get("kind")
    if kind != "ok":
        raise _error(str(kind), message, stdout)
    outputs = message.get("outputs")
    if not isinstance(outputs, dict):
        raise BadReturnType("main() must return a dict", stdout=stdout)
    if depth(outputs, limits.max_depth) > limits.max_depth:
        raise BadReturnType(f"the result is nested deeper than {limits.max_depth} levels")
    return Result(outputs, stdout, bool(message.get("stdout_truncated")), elapsed)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def classify_exit(
    returncode: int, stderr: bytes, language: Language, limits: Limits
) -> CodeExecutionError:
    """The error for a sandbox that ended without answering. bwrap exits 128+N when its child
    died of signal N; without bwrap, asyncio reports -N."""
    text = stderr.decode("utf-8", "replace")
    details: dict[str, object] = {"exit_code": returncode, "stderr": text[-2000:]}
    number = returncode - 128 if returncode > 128 else -returncode if returncode < 0 else 0
    if OUT_OF_MEMORY.search(text):
        return MemoryLimitExceeded(
            f"the code used more than {limits.memory_mb} MB of memory", details=details
        )
    if number == signal.SIGXCPU:
        return CodeTimeout(f"the code used more than {limits.cpu_seconds} s of CPU time")
    if number == signal.SIGKILL:
        return MemoryLimitExceeded(
            "the code was killed by the system, most likely for using too much memory",
            details=details,
        )
    if number == signal.SIGXFSZ:
        return CodeRuntimeError(
            f"the code wrote a file larger than {limits.file_size_mb} MB", details=details
        )
    if number:
        name = "Python" if language is Language.PYTHON else "Node.js"
        return CodeRuntimeError(
            f"the {name} process crashed ({_signal_name(number)})", details=details
        )
    return CodeRuntimeError(
        f"the code ended its process (exit code {returncode}) before main() returned",
        details=details,
    )


def start_failure(language: Language, returncode: int | None, stderr: bytes) -> str:
    text = stderr.decode("utf-8", "replace").strip()[-1000:] or "no message"
    hint = ""
    if re.search(r"uid map|new namespace", text):
        hint = (
            " (bubblewrap needs unprivileged user namespaces: sysctl "
            "kernel.unprivileged_userns_clone=1 and user.max_user_namespaces > 0; on Ubuntu "
            "24.04 and later also an AppArmor profile that lets bwrap use them)"
        )
    elif "Can't find source path" in text:
        hint = " (the sandbox user must be able to read TUSK_SANDBOX_PACKAGES_DIR)"
    return f"the {language} sandbox did not start (exit code {returncode}): {text}{hint}"


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


def host_layout(interpreters: Iterable[Path]) -> Layout:
    """/usr, the top-level system dirs (as symlinks where /usr is merged), and the prefix of an
    interpreter installed outside /usr (e.g. /opt/node/bin/node -> /opt/node)."""
    binds, symlinks = ["/usr"], []
    for name in SYSTEM_DIRS:
        path = Path("/") / name
        if path.is_symlink():
            symlinks.append((os.readlink(path), str(path)))
        elif path.is_dir():
            binds.append(str(path))
    for interpreter in interpreters:
        prefix = interpreter.resolve().parent.parent
        if not any(prefix.is_relative_to(bound) for bound in binds) and prefix != Path("/"):
            binds.append(str(prefix))
    return Layout(tuple(binds), tuple(symlinks))


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
        await asyncio.shield(self.exited)
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
        """Return once every pool is full, or has failed to start (then logged)."""
        while tasks := [task for tasks in self._starting.values() for task in tasks]:
            await asyncio.wait(tasks)

    async def close(self) -> None:
        """Stop filling the pools and kill every sandbox, idle or running; return once all are
        gone. Runs in progress fail."""
        self._closed = True
        starting = [task for tasks in self._starting.values() for task in tasks]
        for task in starting:
            task.cancel()
        await asyncio.gather(*starting, return_exceptions=True)
        for ready in self._ready.values():
            ready.clear()
        await asyncio.gather(*(worker.destroy() for worker in list(self._live)))

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
        launch = replace(self._launches[language], spawn=spawn)
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
            raise SandboxUnavailable(f"the {language} sandbox did not start: {exc}") from None
        assert process.stderr is not None
        assert process.stdout is not None
        worker = Worker(
            language=language,
            spawn=spawn,
            process=process,
            errors=asyncio.create_task(_tail(process.stderr, STDERR_KEPT)),
            exited=asyncio.create_task(process.wait()),
            sandboxed=launch.bwrap is not None,
        )
        self._live.add(worker)
        worker.exited.add_done_callback(lambda _: self._live.discard(worker))
        try:
            async with asyncio.timeout(STARTUP_TIMEOUT):
                line = await process.stdout.readline()
        except BaseException:
            await worker.destroy()
            raise
        if line != b"ready\n":
            await worker.destroy()
            raise SandboxUnavailable(start_failure(language, process.returncode, worker.stderr()))
        return worker

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
            outcome = classify_exit(worker.exited.result(), worker.stderr(), lang, limits)
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
