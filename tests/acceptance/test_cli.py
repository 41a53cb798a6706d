"""`tusk` commands that go wrong say why in one line, and the ones that work say what they did."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.conftest import create_database, drop_database
from tests.support.api import SECRET
from tests.support.tusk import db_env, run_tusk
from tusk import crypto
from tusk.db.embedded import EmbeddedPostgres
from tusk.db.engine import engine_scope, session_factory
from tusk.db.models import Workspace
from tusk.models import credentials
from tusk.models.credentials import StoredProvider
from tusk.testing.processes import clean_env, free_port

pytestmark = pytest.mark.acceptance


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("tusk: ")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_a_bad_setting_stops_start_up_with_one_line() -> None:
    result = run_tusk("api", env=clean_env(TUSK_PORT="abc"))
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0, result.stderr
    line = one_line_error(result.stderr)
    assert "TUSK_PORT='abc'" in line
    assert "expected a TCP port" in line


def test_an_unreachable_database_is_retried_then_named() -> None:
    port = free_port()
    env = clean_env(
        PG_HOST="127.0.0.1", PG_PORT=str(port), SECRET_KEY="s" * 40, TUSK_DB_WAIT_SECONDS="2"
    )
    result = run_tusk("api", env=env)
    assert result.returncode == 1
    line = one_line_error(result.stderr)
    assert f"cannot reach PostgreSQL at 127.0.0.1:{port}/tusk" in line
    assert "Connection refused" in line or "connection failed" in line
    assert result.stderr.count("not reachable (attempt") >= 2


def test_api_refuses_a_schema_that_is_behind(empty_database: str) -> None:
    result = run_tusk("api", env=db_env(empty_database))
    assert result.returncode == 1
    line = one_line_error(result.stderr)
    assert "no Tusk schema yet" in line
    assert "tusk migrate" in line


def test_migrate_is_idempotent_and_setup_runs_once(empty_database: str) -> None:
    env = db_env(empty_database)
    for _ in range(2):
        result = run_tusk("migrate", env=env)
        assert result.returncode == 0, result.stderr
        assert "database schema is current" in result.stdout
    admin = ["--email", "ops@example.com", "--name", "Ops", "--password", "passw0rd-ops"]
    created = run_tusk("setup", *admin, env=env)
    assert created.returncode == 0, created.stderr
    assert "Ops's Workspace" in created.stdout
    again = run_tusk("setup", *admin, env=env)
    assert again.returncode == 1
    assert "already been set up" in one_line_error(again.stderr)


def test_migrate_without_the_right_to_create_extensions_prints_the_sql(
    pg_server: EmbeddedPostgres,
) -> None:
    role = "limited_owner"
    with psycopg.connect(pg_server.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    name = create_database(pg_server)
    try:
        with psycopg.connect(pg_server.conninfo(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    sql.Identifier(name), sql.Identifier(role)
                )
            )
        limited = pg_server.conninfo(name).replace("user=postgres", f"user={role}")
        refused = run_tusk("migrate", env=db_env(limited))
        assert refused.returncode == 1
        assert "CREATE EXTENSION IF NOT EXISTS vector;" in refused.stderr
        assert "Traceback" not in refused.stderr
        with psycopg.connect(pg_server.conninfo(name)) as conn:
            assert conn.execute("SELECT to_regclass('accounts')").fetchone() == (None,)
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        done = run_tusk("migrate", env=db_env(limited))
        assert done.returncode == 0, done.stderr
    finally:
        drop_database(pg_server, name)
        with psycopg.connect(pg_server.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_doctor_reports_what_works_and_what_to_fix(fresh_database: str) -> None:
    env = db_env(fresh_database, REDIS_HOST="redis", CELERY_BROKER_URL="redis://redis:6379/1")
    result = run_tusk("doctor", env=env)
    assert result.returncode == 1  # no worker is running
    warnings = [line for line in result.stderr.splitlines() if "Redis" in line]
    assert len(warnings) == 1
    assert warnings[0].endswith("ignoring CELERY_BROKER_URL, REDIS_HOST")
    out = result.stdout
    assert "ok   connection: external PostgreSQL at" in out
    assert "ok   database: PostgreSQL 18" in out
    assert "ok   extension vector: version 0.8" in out
    assert "ok   extension pg_trgm" in out
    assert "ok   schema: current" in out
    assert "FAIL worker: no worker heartbeat" in out
    assert "fix: start `tusk worker`" in out
    assert "ok   storage (postgres): write, read and delete work" in out


def test_a_data_dir_of_another_postgresql_version_is_left_alone(tmp_path: Path) -> None:
    pgdata = tmp_path / "data" / "pg"
    pgdata.mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text("16\n")
    (pgdata / "base").mkdir()
    result = run_tusk("migrate", env=clean_env(TUSK_DATA_DIR=str(tmp_path / "data")))
    assert result.returncode == 1
    line = one_line_error(result.stderr)
    assert "holds a PostgreSQL 16 cluster" in line
    assert "nothing was changed" in line
    assert sorted(p.name for p in pgdata.iterdir()) == ["PG_VERSION", "base"]


def test_a_data_dir_that_cannot_be_created_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_tusk("migrate", env=clean_env(TUSK_DATA_DIR=str(blocker / "data")))
    assert result.returncode == 1
    assert "cannot create the data dir" in one_line_error(result.stderr)


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory this process may not write: a read-only mount for root, a mode for others."""
    target = tmp_path / "read-only"
    target.mkdir()
    if os.geteuid() != 0:
        target.chmod(0o555)
        yield target
        target.chmod(0o755)
        return
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(target)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("root cannot be denied writing without a read-only mount, and mount failed")
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_a_data_dir_that_is_not_writable_is_named(read_only_dir: Path) -> None:
    result = run_tusk("migrate", env=clean_env(TUSK_DATA_DIR=str(read_only_dir)))
    assert result.returncode == 1
    assert f"the data dir {read_only_dir} is not writable" in one_line_error(result.stderr)


async def _seal_openai(conninfo: str, key: str) -> uuid.UUID:
    async with engine_scope(conninfo) as engine, session_factory(engine).begin() as db:
        workspace = Workspace(name="w")
        db.add(workspace)
        await db.flush()
        stored = StoredProvider("openai", "openai", {"api_key": "sk-rotate-me-1234"})
        await credentials.save(db, key, workspace.id, stored)
        return workspace.id


async def _open_openai(conninfo: str, key: str, workspace: uuid.UUID) -> dict[str, str]:
    async with engine_scope(conninfo) as engine, session_factory(engine)() as db:
        return (await credentials.load_all(db, key, workspace))["openai"].credentials


def test_rotate_secret_re_encrypts_every_credential(fresh_database: str) -> None:
    new_key = "n" * 40
    workspace = asyncio.run(_seal_openai(fresh_database, SECRET))
    wrong = run_tusk(
        "rotate-secret", "--old", "w" * 40, "--new", new_key, env=db_env(fresh_database)
    )
    assert wrong.returncode == 1
    assert "nothing was changed" in one_line_error(wrong.stderr)
    assert (
        asyncio.run(_open_openai(fresh_database, SECRET, workspace))["api_key"]
        == "sk-rotate-me-1234"
    )

    weak = run_tusk("rotate-secret", "--old", SECRET, "--new", "short", env=db_env(fresh_database))
    assert "--new is only 5 characters long" in one_line_error(weak.stderr)

    done = run_tusk("rotate-secret", "--old", SECRET, "--new", new_key, env=db_env(fresh_database))
    assert done.returncode == 0, done.stderr
    assert "re-encrypted 1 credential(s)" in done.stdout
    assert (
        asyncio.run(_open_openai(fresh_database, new_key, workspace))["api_key"]
        == "sk-rotate-me-1234"
    )
    with pytest.raises(crypto.DecryptionFailed):
        asyncio.run(_open_openai(fresh_database, SECRET, workspace))
