"""The file-storage interface every backend implements, its errors, and key validation.

Keys look like `upload_files/<workspace uuid>/<uuid>.<ext>`. In every backend a write is atomic:
a reader sees the old object or the new one, never a mix, and a failed write stores nothing.
"""

from __future__ import annotations

import secrets
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator

CHUNK_SIZE = 1024 * 1024
MAX_KEY_LENGTH = 512


class StorageError(Exception):
    """The storage backend failed; `str()` is one line for the operator."""


class FileTooLarge(StorageError):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"file is larger than the limit of {limit} bytes")


class ObjectNotFound(StorageError):
    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"no stored object under key {key!r}")


class InvalidKey(StorageError):
    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        super().__init__(f"invalid storage key {key[:100]!r}: {problem}")


def _key_problem(key: str) -> str | None:
    if not key:
        return "it is empty"
    if len(key) > MAX_KEY_LENGTH:
        return f"it is longer than {MAX_KEY_LENGTH} characters"
    if "\x00" in key or "\\" in key:
        return "it contains a NUL character or a backslash"
    if key.startswith("/"):
        return "it starts with '/'"
    segments = key.split("/")
    if ".." in segments:
        return "it has a '..' segment"
    # Empty and '.' segments would name the same file twice on a filesystem, not in a bucket.
    if "" in segments or "." in segments:
        return "it has an empty or '.' segment"
    return None


def validate_key(key: str) -> str:
    """Return the key unchanged, or raise InvalidKey saying what is wrong with it."""
    problem = _key_problem(key)
    if problem is not None:
        raise InvalidKey(key, problem)
    return key


async def iter_bytes(data: bytes, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
    """Bytes already in memory as the chunk stream that `Storage.put` takes."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be positive")
    for start in range(0, len(data), chunk_size):
        yield data[start : start + chunk_size]


async def limited(
    chunks: AsyncIterable[bytes], max_bytes: int | None
) -> AsyncGenerator[bytes, None]:
    """Pass the chunks through, raising FileTooLarge as soon as more than `max_bytes` arrived."""
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if max_bytes is not None and total > max_bytes:
            raise FileTooLarge(max_bytes)
        yield chunk


async def rechunk(
    chunks: AsyncIterable[bytes], size: int = CHUNK_SIZE
) -> AsyncGenerator[bytes, None]:
    """Regroup chunks of any size into pieces of exactly `size` bytes, the last one shorter."""
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        whole = len(buffer) - len(buffer) % size
        for start in range(0, whole, size):
            yield bytes(buffer[start : start + size])
        # One deletion per incoming chunk keeps a huge chunk from being shifted piece by piece.
        del buffer[:whole]
    if buffer:
        yield bytes(buffer)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


async def _read_all(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


class Storage(ABC):
    """Where uploaded and generated files live; chosen by STORAGE_TYPE."""

    name: str

    @abstractmethod
    async def put(
        self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None
    ) -> int:
        """Store the chunks under `key` atomically and return the size in bytes.

        More than `max_bytes` raises FileTooLarge and stores nothing (an existing object
        under the key stays as it was).
        """

    @abstractmethod
    async def open(self, key: str) -> AsyncIterator[bytes]:
        """The object's chunks; ObjectNotFound (raised here, before any byte) if absent."""

    @abstractmethod
    async def delete(self, key: str) -> bool:
        """True if an object was deleted."""

    @abstractmethod
    async def exists(self, key: str) -> bool: ...

    async def check(self) -> None:
        """Write, read back and delete a probe object; a StorageError says what to fix."""
        key = f"tusk-check-{uuid.uuid4().hex}.probe"
        payload = secrets.token_bytes(64)
        try:
            await self.put(key, iter_bytes(payload))
            try:
                read = await _read_all(await self.open(key))
            finally:
                await self.delete(key)
        except StorageError:
            raise
        except Exception as exc:
            raise StorageError(f"{self.name} storage check failed: {one_line(exc)}") from exc
        if read != payload:
            raise StorageError(f"{self.name} storage returned other bytes than were written")
