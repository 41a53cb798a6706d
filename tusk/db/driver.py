"""Statements sent through the driver (psycopg) on a connection of SQLAlchemy's pool, for the
writes of every workflow run and chat turn. There SQLAlchemy's statement building and session
bookkeeping cost more CPU than the statements themselves, and so did psycopg's transaction and
pipeline blocks (0.3 ms of a 0.55 ms transaction of one INSERT): each write is therefore one
statement, in autocommit mode, which is a transaction of its own (its CTEs, if any, are all or
nothing); only a turn that continues a conversation, which reads under a lock, takes a
transaction (`driver_transaction`). Everything else goes through SQLAlchemy."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import JSON
from sqlalchemy import inspect as orm_inspect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

Connection = psycopg.AsyncConnection[Any]


Bind = AsyncEngine | async_sessionmaker[AsyncSession]


def engine_of(bind: Bind) -> AsyncEngine:
    if isinstance(bind, AsyncEngine):
        return bind
    engine = bind.kw.get("bind")
    if not isinstance(engine, AsyncEngine):
        raise TypeError("the session factory is not bound to an async engine")
    return engine


@asynccontextmanager
async def _checked_out(connection: AsyncConnection) -> AsyncIterator[Connection]:
    """The psycopg connection under a pooled one; taken out of the pool if the server dropped
    it."""
    pooled = await connection.get_raw_connection()
    driver = pooled.driver_connection
    assert isinstance(driver, psycopg.AsyncConnection)
    try:
        yield driver
    except psycopg.OperationalError:
        await connection.invalidate()
        raise


@asynccontextmanager
async def driver_connection(bind: Bind) -> AsyncIterator[Connection]:
    """A pooled connection in autocommit mode, for writes of one statement each; given back to
    the pool as SQLAlchemy left it."""
    async with engine_of(bind).connect() as connection, _checked_out(connection) as driver:
        await driver.set_autocommit(True)
        try:
            yield driver
        finally:
            if not driver.closed:
                await driver.set_autocommit(False)


async def execute_alone(bind: Bind, statement: str, values: Sequence[Any]) -> None:
    """Run one statement as a transaction of its own."""
    async with driver_connection(bind) as db:
        await execute(db, statement, values)


async def execute(db: Connection, statement: str, values: Sequence[Any]) -> None:
    """Run a statement with `%s` placeholders. psycopg rewrites them to PostgreSQL's own at
    every execution of a statement with more than 50 of them (a row of a node execution has
    23, a message 30): here that is done once per statement."""
    async with psycopg.AsyncRawCursor(db) as cursor:
        await cursor.execute(_numbered(statement), values)


@lru_cache(maxsize=256)
def _numbered(statement: str) -> str:
    """`statement` with $1, $2, ... for its `%s` (it has no other `%`)."""
    *parts, end = statement.split("%s")
    return "".join(f"{part}${i}" for i, part in enumerate(parts, 1)) + end


def not_waiting_for_disk(statement: str) -> str:
    """`statement` (an INSERT or UPDATE of at least one row, run alone) committed without
    waiting for the disk, for rows that only mark a start: a crash in the next fraction of a
    second may lose them, and the durable commit that follows flushes them (WAL is written in
    order). The setting is read at commit, and a transaction's own setting ends with it."""
    return f"{statement} RETURNING set_config('synchronous_commit', 'off', true)"


@asynccontextmanager
async def driver_transaction(
    sessions: async_sessionmaker[AsyncSession], *, wait_for_disk: bool = True
) -> AsyncIterator[Connection]:
    """A psycopg connection in a transaction sent in one round trip (pipeline mode), committed
    when the block ends (rolled back if it raises), for writes that need more than one
    statement."""
    async with (
        engine_of(sessions).connect() as connection,
        _checked_out(connection) as driver,
        driver.pipeline(),
        driver.transaction(),
    ):
        if not wait_for_disk:
            await driver.execute("SET LOCAL synchronous_commit = off")
        yield driver


_inserts: dict[tuple[str, tuple[str, ...]], str] = {}


def inserts(rows: Sequence[object]) -> tuple[str, list[Any]]:
    """One statement that inserts mapped objects (parents before their children) with the
    values they were given, the server's defaults for the rest, as the ORM would; the objects
    are not attached to any session."""
    statements: list[str] = []
    values: list[Any] = []
    for row in rows:
        statement, row_values = _insert_of(row)
        statements.append(statement)
        values.extend(row_values)
    *first, last = statements
    if not first:
        return last, values
    ctes = ", ".join(f"row{i} AS ({statement})" for i, statement in enumerate(first))
    return f"WITH {ctes} {last}", values


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
        json_names = frozenset(
            c.name for c in orm_inspect(type(row)).columns if isinstance(c.type, JSON)
        )
        statement = _inserts[key] = insert_statement(table, key[1], json_names)
    return statement, values


@lru_cache(maxsize=64)
def insert_statement(
    table: str, columns: tuple[str, ...], json_columns: frozenset[str] = frozenset(), rows: int = 1
) -> str:
    """An INSERT of `rows` rows of `columns`, their values in order; JSON values are passed as
    their text, cast by the server (they are encoded once, by the caller). Composed once, kept
    as text: composing at every execution cost as much as the rest of the call."""
    placeholders = [sql.SQL("%s::jsonb" if c in json_columns else "%s") for c in columns]
    row = sql.SQL("({})").format(sql.SQL(", ").join(placeholders))
    statement = sql.SQL("INSERT INTO {} ({}) VALUES {}").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join([row] * rows),
    )
    return statement.as_string()
