"""Running migrations and telling whether a database's schema is the one this code expects."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, NullPool, create_engine, text

MIGRATIONS = Path(__file__).parent / "migrations"
# Concurrent `tusk migrate` (several `tusk api --migrate` starting at once) take turns.
MIGRATION_LOCK = 0x7475736B  # "tusk"


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None
    head: str

    @property
    def is_current(self) -> bool:
        return self.current == self.head

    def problem(self) -> str | None:
        if self.is_current:
            return None
        if self.current is None:
            return "the database has no Tusk schema yet"
        if self.current not in _known_revisions():
            return (
                f"the database schema is at revision {self.current}, which this Tusk does not "
                "know (was it migrated by a newer version?)"
            )
        return f"the database schema is at revision {self.current}, behind {self.head}"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _known_revisions() -> set[str]:
    return {rev.revision for rev in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


@contextmanager
def _connect(conninfo: str) -> Iterator[Connection]:
    engine = create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(conninfo), poolclass=NullPool
    )
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def upgrade(conninfo: str) -> SchemaStatus:
    """Bring the schema to head in one transaction; a no-op when it is already there."""
    config = alembic_config()
    with _connect(conninfo) as conn, conn.begin():
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
    return schema_status(conninfo)


def current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def schema_status(conninfo: str) -> SchemaStatus:
    with _connect(conninfo) as conn:
        return SchemaStatus(current_revision(conn), head_revision())


class SchemaNotCurrent(Exception):
    pass


def require_current(conninfo: str) -> None:
    """Refuse to serve on a schema this code was not written for."""
    status = schema_status(conninfo)
    problem = status.problem()
    if problem is None:
        return
    if status.current is not None and status.current not in _known_revisions():
        raise SchemaNotCurrent(f"{problem}; upgrade Tusk")
    raise SchemaNotCurrent(f"{problem}; run `tusk migrate` (or start with --migrate)")
