"""File storage: uploads and generated files in PostgreSQL (default), a directory, or S3.

`S3Storage` is loaded on first use, so that importing this package does not import boto3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tusk.storage.base import (
    CHUNK_SIZE,
    MAX_KEY_LENGTH,
    FileTooLarge,
    InvalidKey,
    ObjectNotFound,
    Storage,
    StorageError,
    iter_bytes,
    validate_key,
)
from tusk.storage.factory import create_storage
from tusk.storage.local import LocalStorage
from tusk.storage.postgres import PostgresStorage

if TYPE_CHECKING:
    from tusk.storage.s3 import S3Storage

__all__ = [
    "CHUNK_SIZE",
    "MAX_KEY_LENGTH",
    "FileTooLarge",
    "InvalidKey",
    "LocalStorage",
    "ObjectNotFound",
    "PostgresStorage",
    "S3Storage",
    "Storage",
    "StorageError",
    "create_storage",
    "iter_bytes",
    "validate_key",
]


def __getattr__(name: str) -> Any:
    if name == "S3Storage":
        from tusk.storage.s3 import S3Storage

        return S3Storage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
