"""STORAGE_TYPE=postgres: files in the database, in rows of 1 MiB, so one backup holds them too."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator

from sqlalchemy import TextClause, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tusk.storage.base import (
    ObjectNotFound,
    Storage,
    StorageError,
    limited,
    one_line,
    rechunk,
    validate_key,
)

# Claiming the object row first locks it, so concurrent writers of one key take turns.
_CLAIM = text("""
    INSERT INTO storage_objects (key, size) VALUES (:key, 0)
    ON CONFLICT (key) DO UPDATE SET size = 0, created_at = now()
""")
_DROP_CHUNKS = text("DELETE FROM storage_chunks WHERE key = :key")
_ADD_CHUNK = text("INSERT INTO storage_chunks (key, seq, data) VALUES (:key, :seq, :data)")
_SET_SIZE = text("UPDATE storage_objects SET size = :size WHERE key = :key")
# `xmin` tells row versions apart: every put gives the object row a new one, even for one key.
_VERSION = text("SELECT CAST(xmin AS text) FROM storage_objects WHERE key = :key")
_CHUNK = text("""
    SELECT CAST(o.xmin AS text) AS version, c.data
    FROM storage_objects o
    LEFT JOIN storage_chunks c ON c.key = o.key AND c.seq = :seq
    WHERE o.key = :key
""")
_DELETE = text("DELETE FROM storage_objects WHERE key = :key RETURNING 1")
_EXISTS = text("SELECT 1 FROM storage_objects WHERE key = :key")
_TABLES = text(
    "SELECT to_regclass('storage_objects') IS NOT NULL"
    " AND to_regclass('storage_chunks') IS NOT NULL"
)


class PostgresStorage(Storage):
    name = "postgres"

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def put(
        self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None
    ) -> int:
        validate_key(key)
        # One transaction: readers see the old object until it commits, and FileTooLarge (or
        # any other error) rolls the whole write back.
        async with self._engine.begin() as conn:
            await conn.execute(_CLAIM, {"key": key})
            await conn.execute(_DROP_CHUNKS, {"key": key})
            size = await _add_chunks(conn, key, limited(chunks, max_bytes))
            await conn.execute(_SET_SIZE, {"key": key, "size": size})
        return size

    async def open(self, key: str) -> AsyncIterator[bytes]:
        validate_key(key)
        version = await self._scalar(_VERSION, key)
        if version is None:
            raise ObjectNotFound(key)
        return self._stream(key, str(version))

    async def delete(self, key: str) -> bool:
        validate_key(key)
        async with self._engine.begin() as conn:
            deleted = (await conn.execute(_DELETE, {"key": key})).first()
        return deleted is not None

    async def exists(self, key: str) -> bool:
        validate_key(key)
        return await self._scalar(_EXISTS, key) is not None

    async def check(self) -> None:
        try:
            async with self._engine.connect() as conn:
                tables = (await conn.execute(_TABLES)).scalar_one()
        except SQLAlchemyError as exc:
            cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc
            raise StorageError(f"cannot query the database: {one_line(cause)}") from exc
        if not tables:
            raise StorageError(
                "tables storage_objects/storage_chunks are missing; run tusk migrate"
            )
        await super().check()

    async def _scalar(self, query: TextClause, key: str) -> object:
        async with self._engine.connect() as conn:
            return (await conn.execute(query, {"key": key})).scalar_one_or_none()

    async def _stream(self, key: str, version: str) -> AsyncGenerator[bytes, None]:
        seq = 0
        while (data := await self._chunk(key, seq, version)) is not None:
            yield data
            seq += 1

    async def _chunk(self, key: str, seq: int, version: str) -> bytes | None:
        """Chunk `seq`, or None past the end; one short query, so no connection is held
        while the caller consumes the stream."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(_CHUNK, {"key": key, "seq": seq})).first()
        if row is None or row.version != version:
            raise StorageError(f"object {key!r} was replaced or deleted while being read")
        data: bytes | None = row.data
        return data


async def _add_chunks(conn: AsyncConnection, key: str, chunks: AsyncIterable[bytes]) -> int:
    size = 0
    seq = 0
    async for piece in rechunk(chunks):
        await conn.execute(_ADD_CHUNK, {"key": key, "seq": seq, "data": piece})
        size += len(piece)
        seq += 1
    return size
