"""The storage backend a process uses, chosen by STORAGE_TYPE."""

from __future__ import annotations

from pathlib import Path
from typing import assert_never

from sqlalchemy.ext.asyncio import AsyncEngine

from tusk.config import ConfigError, Settings, StorageType, env_name
from tusk.storage.base import Storage
from tusk.storage.local import LocalStorage
from tusk.storage.postgres import PostgresStorage


def local_root(settings: Settings) -> Path:
    return settings.storage_local_path or settings.data_dir / "storage"


def create_storage(settings: Settings, engine: AsyncEngine) -> Storage:
    match settings.storage_type:
        case StorageType.POSTGRES:
            return PostgresStorage(engine)
        case StorageType.LOCAL:
            return LocalStorage(local_root(settings))
        case StorageType.S3:
            return _s3_storage(settings)
    assert_never(settings.storage_type)


def _s3_storage(settings: Settings) -> Storage:
    # Imported here: boto3 takes a fifth of a second to import, which only S3 users should pay.
    from tusk.storage.s3 import S3Storage

    if not settings.s3_bucket_name:
        raise ConfigError(
            env_name("s3_bucket_name"),
            "is not set (required with STORAGE_TYPE=s3)",
            "a bucket name",
        )
    secret = settings.s3_secret_key
    return S3Storage(
        endpoint_url=settings.s3_endpoint,
        bucket=settings.s3_bucket_name,
        access_key=settings.s3_access_key,
        secret_key=secret.get_secret_value() if secret else None,
        region=settings.s3_region,
    )
