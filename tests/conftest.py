"""Shared fixtures: one embedded PostgreSQL per test session, a migrated template database, and
a fresh database cloned from it for each test module. Nothing is mocked."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.ext.asyncio import AsyncEngine

from tusk.db import migrate
from tusk.db.embedded import EmbeddedPostgres
from tusk.db.engine import create_engine

# Durability is not under test here, and without it the suite runs faster.
FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
TEMPLATE = "tusk_template"


@contextmanager
def temporary_server(prefix: str, **settings: str) -> Iterator[EmbeddedPostgres]:
    root = Path(tempfile.mkdtemp(prefix=prefix))
    server = EmbeddedPostgres(root / "pg", {**FAST, **settings})
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def cloned_database(server: EmbeddedPostgres, template: str | None) -> Iterator[str]:
    """The conninfo of a new database, a copy of `template` (or empty), dropped afterwards."""
    name = create_database(server, template)
    try:
        yield server.conninfo(name)
    finally:
        drop_database(server, name)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres]:
    with temporary_server("tusk-test-", max_connections="400") as server:
        yield server


@pytest.fixture(scope="session")
def template_db(pg_server: EmbeddedPostgres) -> str:
    pg_server.create_database(TEMPLATE)
    migrate.upgrade(pg_server.conninfo(TEMPLATE))
    return TEMPLATE


def create_database(server: EmbeddedPostgres, template: str | None = None) -> str:
    name = f"test_{uuid.uuid4().hex[:12]}"
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with psycopg.connect(server.conninfo(), autocommit=True) as conn:
        conn.execute(query)
    return name


def drop_database(server: EmbeddedPostgres, name: str) -> None:
    query = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(server.conninfo(), autocommit=True) as conn:
        conn.execute(query)


@pytest.fixture(scope="module")
def database(pg_server: EmbeddedPostgres, template_db: str) -> Iterator[str]:
    """The conninfo of a migrated database of this test module's own."""
    with cloned_database(pg_server, template_db) as conninfo:
        yield conninfo


@pytest.fixture
def empty_database(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """The conninfo of a database with no schema at all."""
    with cloned_database(pg_server, None) as conninfo:
        yield conninfo


@pytest.fixture
async def engine(database: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def own_server() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of this test's own, which the test may stop and start."""
    with temporary_server("tusk-own-") as server:
        yield server


@pytest.fixture
def fresh_database(pg_server: EmbeddedPostgres, template_db: str) -> Iterator[str]:
    """The conninfo of a migrated database of this test's own."""
    with cloned_database(pg_server, template_db) as conninfo:
        yield conninfo
