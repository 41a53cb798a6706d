"""The sandbox's command line, built from a Launch: setpriv, bwrap, prlimit, the interpreter."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from tusk.errors import InvalidParam
from tusk.sandbox.limits import SpawnLimits

MIB = 2**20
NOBODY = 65534  # the uid and gid the code sees, and the fallback user when none can be created
PACKAGES_MOUNT = "/opt/tusk/packages"
SANDBOX_TMP = "/tmp"  # noqa: S108 - the sandbox's own, empty tmpfs
SANDBOX_ENV = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "HOME": SANDBOX_TMP,
    "TMPDIR": SANDBOX_TMP,
}
SYSTEM_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")  # symlinks into /usr, or not


class Language(StrEnum):
    PYTHON = "python3"
    JAVASCRIPT = "javascript"


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


# --- host set-up (I/O) ------------------------------------------------------------------------


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
