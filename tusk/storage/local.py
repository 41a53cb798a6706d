"""STORAGE_TYPE=local: files in a directory, for one-machine deployments.

A write goes to a temporary file beside its target, is fsynced, then renamed over it, so a reader
sees the old file or the new one and a crash leaves at most a hidden `.*.tmp` file behind.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tusk.storage.base import (
    CHUNK_SIZE,
    InvalidKey,
    ObjectNotFound,
    Storage,
    StorageError,
    limited,
    validate_key,
)

_ABSENT = (FileNotFoundError, IsADirectoryError, NotADirectoryError)


@contextmanager
def _os_errors() -> Iterator[None]:
    """Disk full, permission denied, ...: one-line StorageErrors instead of raw OSErrors."""
    try:
        yield
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise StorageError(f"local storage: {exc.strerror or exc}{where}") from exc


@dataclass
class _Temp:
    path: Path
    file: BinaryIO


class LocalStorage(Storage):
    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        with _os_errors():
            self.root.mkdir(parents=True, exist_ok=True)

    async def put(
        self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None
    ) -> int:
        with _os_errors():
            target, temp = await asyncio.to_thread(self._begin, key)
            try:
                size = await _write(temp.file, limited(chunks, max_bytes))
                await asyncio.to_thread(_publish, temp, target)
            except BaseException:
                # Synchronous on purpose: it must run even when the task is being cancelled.
                _discard(temp)
                raise
        return size

    async def open(self, key: str) -> AsyncIterator[bytes]:
        with _os_errors():
            file = await asyncio.to_thread(self._open, key)
        return _read(file)

    async def delete(self, key: str) -> bool:
        with _os_errors():
            return await asyncio.to_thread(self._unlink, key)

    async def exists(self, key: str) -> bool:
        with _os_errors():
            return await asyncio.to_thread(self._is_file, key)

    async def check(self) -> None:
        problem = await asyncio.to_thread(_directory_problem, self.root)
        if problem is not None:
            raise StorageError(problem)
        await super().check()

    def _path(self, key: str) -> Path:
        validate_key(key)
        # Resolving catches symlinks inside the root that lead out of it.
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise InvalidKey(key, "it leads outside the storage directory")
        return path

    def _begin(self, key: str) -> tuple[Path, _Temp]:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        return target, _Temp(Path(name), os.fdopen(fd, "wb"))

    def _open(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except _ABSENT:
            raise ObjectNotFound(key) from None

    def _unlink(self, key: str) -> bool:
        try:
            self._path(key).unlink()
        except _ABSENT:
            return False
        return True

    def _is_file(self, key: str) -> bool:
        return self._path(key).is_file()


async def _write(file: BinaryIO, chunks: AsyncIterable[bytes]) -> int:
    size = 0
    async for chunk in chunks:
        await asyncio.to_thread(file.write, chunk)
        size += len(chunk)
    return size


def _publish(temp: _Temp, target: Path) -> None:
    """Make the data durable, then swap it in under the target name in one rename."""
    temp.file.flush()
    os.fsync(temp.file.fileno())
    temp.file.close()
    os.replace(temp.path, target)
    _fsync_directory(target.parent)


def _fsync_directory(path: Path) -> None:
    """Without this, a power cut soon after the rename may forget the rename."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(temp: _Temp) -> None:
    temp.file.close()
    temp.path.unlink(missing_ok=True)


async def _read(file: BinaryIO) -> AsyncGenerator[bytes, None]:
    # The file is already open: replacing or deleting the key now does not change what we read.
    try:
        with _os_errors():
            while chunk := await asyncio.to_thread(file.read, CHUNK_SIZE):
                yield chunk
    finally:
        file.close()


def _directory_problem(root: Path) -> str | None:
    if not root.is_dir():
        return f"storage directory '{root}' does not exist or is not a directory"
    if not os.access(root, os.W_OK | os.X_OK):
        return f"storage directory '{root}' is not writable"
    return None
