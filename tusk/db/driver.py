"""Transactions sent through the driver (psycopg) on a connection of SQLAlchemy's pool, each in
one round trip (pipeline mode), for the writes of every workflow run and chat turn. There
SQLAlchemy's statement building and session bookkeeping cost more CPU than the statements
themselves (about 0.4 ms of a 0.9 ms transaction of two statements), and under load every round
trip waits its turn on the event loop. Everything else goes through SQLAlchemy."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import JSON
from sqlalchemy import inspect as orm_inspect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

# For rows that only mark a start: a crash in the next fraction of a second may lose them, and
# the durable commit that follows flushes them (WAL is written in order).
NOT_WAITING_FOR_DISK = "SET LOCAL synchronous_commit = off"


def engine_of(sessions: async_sessionmaker[AsyncSession]) -> AsyncEngine:
    engine = sessions.kw.get("bind")
    if not isinstance(engine, AsyncEngine):
        raise TypeError("the session factory is not bound to an async engine")
    return engine


@asynccontextmanager
async def driver_transaction(
    sessions: async_sessionmaker[AsyncSession], *, wait_for_disk: bool = True
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A psycopg connection in a transaction, committed when the block ends (rolled back if it
    raises). A connection the server dropped is taken out of the pool."""
    async with engine_of(sessions).connect() as connection:
        pooled = await connection.get_raw_connection()
        driver = pooled.driver_connection
        assert isinstance(driver, psycopg.AsyncConnection)
        try:
            async with driver.pipeline(), driver.transaction():
                if not wait_for_disk:
                    await driver.execute(NOT_WAITING_FOR_DISK)
                yield driver
        except psycopg.OperationalError:
            await connection.invalidate()
            raise


_inserts: dict[tuple[str, tuple[str, ...]], str] = {}


async def insert_rows(db: psycopg.AsyncConnection[Any], rows: Sequence[object]) -> None:
    """Insert mapped objects with the values they were given (the server's defaults for the
    rest), as the ORM would; the objects are not attached to any session."""
    for row in rows:
        statement, values = _insert_of(row)
        await db.execute(statement, values)


def _insert_of(row: object) -> tuple[str, list[Any]]:
    given = orm_inspect(row).dict
    names: list[str] = []
    values: list[Any] = []
    for attribute in orm_inspect(type(row)).column_attrs:
        if attribute.key not in given:
            continue
        column = attribute.columns[0]
        value = given[attribute.key]
        if isinstance(column.type, JSON):  # as the ORM writes it: None is JSON's null
            value = json.dumps(value)
        names.append(column.name)
        values.append(value)
    table = orm_inspect(type(row)).local_table.name
    key = (table, tuple(names))
    statement = _inserts.get(key)
    if statement is None:
        json_names = {c.name for c in orm_inspect(type(row)).columns if isinstance(c.type, JSON)}
        statement = _inserts[key] = insert_statement(table, names, json_names)
    return statement, values


def insert_statement(table: str, columns: Sequence[str], json_columns: Collection[str] = ()) -> str:
    """An INSERT of one row's `columns`; JSON values are passed as their text, cast by the
    server (they are encoded once, by the caller). Composed once, kept as text: composing at
    every execution cost as much as the rest of the call."""
    placeholders = [sql.SQL("%s::jsonb" if c in json_columns else "%s") for c in columns]
    statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(placeholders),
    )
    return statement.as_string()
