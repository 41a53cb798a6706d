"""What a Tusk process needs before it serves: its settings, its database and its secret key.

With no database configured, the process starts (or attaches to) the embedded PostgreSQL in
the data dir; the process that starts it owns it, holds the data dir's lock and stops it on exit.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tusk.config import Settings
from tusk.db.conninfo import external_conninfo, with_application_name
from tusk.db.embedded import DataDirLock, EmbeddedError, EmbeddedPostgres

log = logging.getLogger(__name__)

EMBEDDED_SERVER_SETTINGS = {"max_connections": "300"}


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    conninfo: str
    secret_key: str
    embedded: bool


def embedded_server(settings: Settings) -> EmbeddedPostgres:
    return EmbeddedPostgres(settings.embedded_pg_dir, EMBEDDED_SERVER_SETTINGS)


def secret_key_file(data_dir: Path) -> Path:
    return data_dir / "secret_key"


def _generated_secret_key(data_dir: Path) -> str:
    """The embedded mode's key: made once, kept in the data dir (mode 0600)."""
    path = secret_key_file(data_dir)
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(48))
            log.info("generated a SECRET_KEY in %s", path)
    return path.read_text().strip()


def _secret_key(settings: Settings) -> str:
    if settings.secret_key is not None and settings.secret_key.get_secret_value():
        return settings.secret_key.get_secret_value()
    return _generated_secret_key(settings.data_dir)


@contextmanager
def _embedded_conninfo(settings: Settings, *, exclusive: bool) -> Iterator[str]:
    lock = DataDirLock(settings.data_dir)
    server = embedded_server(settings)
    server.check()  # before anything is written in the data dir
    if not lock.try_acquire():
        if exclusive:
            raise EmbeddedError(
                f"another Tusk process (pid {lock.holder()}) is using the data dir "
                f"{settings.data_dir}; stop it first, or set TUSK_DATA_DIR to another directory"
            )
        if not server.is_running():
            raise EmbeddedError(
                f"the Tusk process (pid {lock.holder()}) that owns {settings.data_dir} "
                "has not started its database yet; try again in a moment"
            )
        yield server.conninfo(settings.pg_database)
        return
    try:
        server.start()
        server.create_database(settings.pg_database)
        yield server.conninfo(settings.pg_database)
    finally:
        try:
            server.stop()
        finally:
            lock.release()


@contextmanager
def open_runtime(settings: Settings, *, role: str, exclusive: bool = False) -> Iterator[Runtime]:
    """`exclusive` refuses to share an embedded database that another process owns."""
    app_name = f"tusk-{role}"
    if settings.database_configured:
        conninfo = external_conninfo(settings, app_name)
        yield Runtime(settings, conninfo, _secret_key(settings), embedded=False)
        return
    with _embedded_conninfo(settings, exclusive=exclusive) as conninfo:
        conninfo = with_application_name(conninfo, app_name)
        yield Runtime(settings, conninfo, _secret_key(settings), embedded=True)
