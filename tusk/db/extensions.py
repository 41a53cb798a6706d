"""The PostgreSQL extensions Tusk needs, and the SQL a superuser runs when Tusk may not."""

from __future__ import annotations

from sqlalchemy import Connection, text
from sqlalchemy.exc import ProgrammingError

REQUIRED = ("vector", "pg_trgm")


class ExtensionsMissing(Exception):
    """The role may not create the extensions; the message holds the SQL a superuser must run."""

    def __init__(self, database: str, role: str, missing: list[str]) -> None:
        self.sql = "\n".join(f"CREATE EXTENSION IF NOT EXISTS {name};" for name in missing)
        super().__init__(
            f"the role {role!r} may not create the extensions {', '.join(missing)} in database "
            f"{database!r}. Ask a superuser to run, in that database:\n{self.sql}\n"
            "then run `tusk migrate` again"
        )


def installed(conn: Connection) -> dict[str, str]:
    rows = conn.execute(text("SELECT extname, extversion FROM pg_extension"))
    return {str(row[0]): str(row[1]) for row in rows}


def ensure_extensions(conn: Connection) -> None:
    """Create what is missing; on a privilege error, raise with the SQL to run instead."""
    missing = [name for name in REQUIRED if name not in installed(conn)]
    if not missing:
        return
    failed: list[str] = []
    for name in missing:
        try:
            with conn.begin_nested():
                conn.execute(text(f'CREATE EXTENSION IF NOT EXISTS "{name}"'))
        except ProgrammingError as exc:
            if getattr(exc.orig, "sqlstate", None) != "42501":  # insufficient_privilege
                raise
            failed.append(name)
    if failed:
        database, role = conn.execute(text("SELECT current_database(), current_user")).one()
        raise ExtensionsMissing(database, role, failed)
