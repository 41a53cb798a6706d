"""Migrations: written by hand, matching the models, idempotent, and safe to run concurrently."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import NullPool, create_engine

from tusk.db import migrate
from tusk.db.models import Base


def test_the_models_match_the_migrated_schema(database: str) -> None:
    engine = create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(database), poolclass=NullPool
    )
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_server_default": True,
                "include_object": lambda obj, name, type_, *_: (
                    not (type_ == "table" and str(name).startswith("procrastinate_"))
                ),
            },
        )
        assert compare_metadata(context, Base.metadata) == []
    engine.dispose()


def test_upgrade_twice_changes_nothing_the_second_time(empty_database: str) -> None:
    assert migrate.schema_status(empty_database).problem() == "the database has no Tusk schema yet"
    with pytest.raises(migrate.SchemaNotCurrent, match="run `tusk migrate`"):
        migrate.require_current(empty_database)
    first = migrate.upgrade(empty_database)
    second = migrate.upgrade(empty_database)
    assert first.is_current
    assert second == first
    migrate.require_current(empty_database)


def test_concurrent_upgrades_take_turns(empty_database: str) -> None:
    with ThreadPoolExecutor(3) as pool:
        statuses = list(pool.map(lambda _: migrate.upgrade(empty_database), range(3)))
    assert all(status.is_current for status in statuses)


def test_a_schema_from_a_newer_tusk_is_named_as_such(empty_database: str) -> None:
    migrate.upgrade(empty_database)
    with psycopg.connect(empty_database) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999_future'")
    with pytest.raises(migrate.SchemaNotCurrent, match=r"does not know.*upgrade Tusk"):
        migrate.require_current(empty_database)
