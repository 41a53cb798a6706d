"""File storage against real backends: PostgreSQL, a directory, and S3 (moto on loopback)."""

from __future__ import annotations

import asyncio
import math
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer
from mypy_boto3_s3 import S3Client
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tusk.config import ConfigError, Settings, StorageType
from tusk.storage import (
    CHUNK_SIZE,
    FileTooLarge,
    InvalidKey,
    LocalStorage,
    ObjectNotFound,
    PostgresStorage,
    Storage,
    StorageError,
    create_storage,
    iter_bytes,
)
from tusk.storage.s3 import S3Storage

CREDENTIALS = {"access_key": "testing", "secret_key": "testing", "region": "us-east-1"}
INVALID_KEYS = [
    "",
    "/etc/passwd",
    "..",
    "upload_files/../../escape",
    "upload_files\\evil.txt",
    "upload_files/a\x00b",
    "x" * 513,
    "upload_files//a.txt",
    "upload_files/./a.txt",
    "upload_files/",
]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def s3_client(s3_endpoint: str) -> S3Client:
    return boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


@pytest.fixture
def s3_bucket(s3_client: S3Client) -> str:
    name = f"tusk-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["postgres", "local", "s3"])
def storage(
    request: pytest.FixtureRequest,
    engine: AsyncEngine,
    tmp_path: Path,
    s3_endpoint: str,
    s3_client: S3Client,
) -> Storage:
    if request.param == "postgres":
        return PostgresStorage(engine)
    if request.param == "local":
        return LocalStorage(tmp_path / "files")
    bucket = f"tusk-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=bucket)
    return S3Storage(endpoint_url=s3_endpoint, bucket=bucket, **CREDENTIALS)


def new_key() -> str:
    return f"upload_files/{uuid.uuid4()}/{uuid.uuid4()}.bin"


async def read(storage: Storage, key: str) -> bytes:
    return b"".join([chunk async for chunk in await storage.open(key)])


async def failing_source() -> AsyncIterator[bytes]:
    yield b"x" * CHUNK_SIZE
    raise RuntimeError("client went away")


async def probes_left(storage: Storage, engine: AsyncEngine, s3_client: S3Client) -> list[str]:
    """The probe objects of `check()` still stored in the backend, read behind its back."""
    if isinstance(storage, PostgresStorage):
        query = text("SELECT key FROM storage_objects WHERE key LIKE 'tusk-check-%'")
        async with engine.connect() as conn:
            return list((await conn.execute(query)).scalars())
    if isinstance(storage, LocalStorage):
        return [str(path) for path in storage.root.rglob("*")]
    assert isinstance(storage, S3Storage)
    listing = s3_client.list_objects_v2(Bucket=storage.bucket)
    return [item["Key"] for item in listing.get("Contents", [])]


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


# -- every backend ---------------------------------------------------------------------------


async def test_a_multi_chunk_file_round_trips_in_chunks(storage: Storage) -> None:
    data = os.urandom(CHUNK_SIZE * 5 // 2)
    key = new_key()
    assert await storage.put(key, iter_bytes(data, chunk_size=300_000)) == len(data)
    chunks = [chunk async for chunk in await storage.open(key)]
    assert b"".join(chunks) == data
    assert len(chunks) == 3
    assert max(len(chunk) for chunk in chunks) <= CHUNK_SIZE


async def test_exists_and_delete_report_whether_an_object_was_there(storage: Storage) -> None:
    key = new_key()
    assert await storage.exists(key) is False
    assert await storage.delete(key) is False
    await storage.put(key, iter_bytes(b"hello"))
    assert await storage.exists(key) is True
    assert await storage.delete(key) is True
    assert await storage.exists(key) is False
    assert await storage.delete(key) is False


async def test_opening_a_missing_key_raises_object_not_found(storage: Storage) -> None:
    key = new_key()
    with pytest.raises(ObjectNotFound) as raised:
        await storage.open(key)
    assert raised.value.key == key


async def test_a_file_over_the_limit_is_refused_and_nothing_stored(storage: Storage) -> None:
    key = new_key()
    with pytest.raises(FileTooLarge) as raised:
        await storage.put(key, iter_bytes(os.urandom(3000), chunk_size=1000), max_bytes=2999)
    assert raised.value.limit == 2999
    assert await storage.exists(key) is False
    with pytest.raises(ObjectNotFound):
        await storage.open(key)


async def test_a_file_of_exactly_the_limit_is_accepted(storage: Storage) -> None:
    key = new_key()
    assert await storage.put(key, iter_bytes(b"x" * 3000, chunk_size=1000), max_bytes=3000) == 3000
    assert await read(storage, key) == b"x" * 3000


async def test_a_refused_replacement_leaves_the_old_object_intact(storage: Storage) -> None:
    key = new_key()
    old = os.urandom(CHUNK_SIZE + 10)
    await storage.put(key, iter_bytes(old))
    too_big = iter_bytes(os.urandom(3 * CHUNK_SIZE))
    with pytest.raises(FileTooLarge):
        await storage.put(key, too_big, max_bytes=CHUNK_SIZE + 100)
    assert await read(storage, key) == old


async def test_a_write_whose_source_fails_stores_nothing(storage: Storage) -> None:
    key = new_key()
    with pytest.raises(RuntimeError, match="client went away"):
        await storage.put(key, failing_source())
    assert await storage.exists(key) is False


async def test_a_put_replaces_the_previous_content(storage: Storage) -> None:
    key = new_key()
    await storage.put(key, iter_bytes(os.urandom(2 * CHUNK_SIZE + 1)))
    assert await storage.put(key, iter_bytes(b"short")) == 5
    assert await read(storage, key) == b"short"


@pytest.mark.parametrize("key", INVALID_KEYS)
async def test_invalid_keys_are_refused_by_every_operation(storage: Storage, key: str) -> None:
    with pytest.raises(InvalidKey):
        await storage.put(key, iter_bytes(b"x"))
    with pytest.raises(InvalidKey):
        await storage.open(key)
    with pytest.raises(InvalidKey):
        await storage.exists(key)
    with pytest.raises(InvalidKey):
        await storage.delete(key)


async def test_a_key_of_the_maximum_length_is_accepted(storage: Storage) -> None:
    key = "/".join(["a" * 128, "b" * 127, "c" * 127, "d" * 127])
    assert len(key) == 512
    await storage.put(key, iter_bytes(b"long key"))
    assert await read(storage, key) == b"long key"
    assert await storage.delete(key) is True


async def test_check_passes_and_leaves_no_probe_behind(
    storage: Storage, engine: AsyncEngine, s3_client: S3Client
) -> None:
    await storage.check()
    assert await probes_left(storage, engine, s3_client) == []


async def test_iter_bytes_splits_without_losing_a_byte() -> None:
    data = bytes(range(256)) * 10
    chunks = [chunk async for chunk in iter_bytes(data, chunk_size=1000)]
    assert [len(chunk) for chunk in chunks] == [1000, 1000, 560]
    assert b"".join(chunks) == data
    assert [chunk async for chunk in iter_bytes(b"")] == []


# -- postgres --------------------------------------------------------------------------------


async def test_postgres_stores_a_file_in_rows_of_one_mebibyte(engine: AsyncEngine) -> None:
    key = new_key()
    size = await PostgresStorage(engine).put(
        key, iter_bytes(os.urandom(CHUNK_SIZE * 5 // 2), chunk_size=300_000)
    )
    async with engine.connect() as conn:
        chunks = text("SELECT length(data) FROM storage_chunks WHERE key = :key ORDER BY seq")
        lengths = list((await conn.execute(chunks, {"key": key})).scalars())
        sizes = text("SELECT size FROM storage_objects WHERE key = :key")
        stored_size = (await conn.execute(sizes, {"key": key})).scalar_one()
    assert len(lengths) == math.ceil(size / CHUNK_SIZE) == 3
    assert lengths == [CHUNK_SIZE, CHUNK_SIZE, size - 2 * CHUNK_SIZE]
    assert stored_size == size


async def test_postgres_reader_fails_rather_than_mix_two_versions(engine: AsyncEngine) -> None:
    storage, key = PostgresStorage(engine), new_key()
    await storage.put(key, iter_bytes(os.urandom(3 * CHUNK_SIZE)))
    stream = await storage.open(key)
    assert len(await anext(stream)) == CHUNK_SIZE
    await storage.put(key, iter_bytes(os.urandom(3 * CHUNK_SIZE)))
    with pytest.raises(StorageError, match="replaced or deleted while being read"):
        await anext(stream)


async def test_postgres_concurrent_writers_of_one_key_take_turns(engine: AsyncEngine) -> None:
    storage, key = PostgresStorage(engine), new_key()
    first, second = os.urandom(2 * CHUNK_SIZE + 1), os.urandom(2 * CHUNK_SIZE + 2)
    sizes = await asyncio.gather(
        storage.put(key, iter_bytes(first)), storage.put(key, iter_bytes(second))
    )
    assert sorted(sizes) == [len(first), len(second)]
    assert await read(storage, key) in (first, second)


# -- local -----------------------------------------------------------------------------------


async def test_local_leaves_no_temporary_file_after_a_refused_write(tmp_path: Path) -> None:
    storage, key = LocalStorage(tmp_path / "files"), new_key()
    with pytest.raises(FileTooLarge):
        await storage.put(key, iter_bytes(os.urandom(3 * CHUNK_SIZE)), max_bytes=CHUNK_SIZE)
    assert [path for path in storage.root.rglob("*") if path.is_file()] == []


async def test_local_refuses_a_key_that_leads_out_through_a_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    storage = LocalStorage(tmp_path / "files")
    (storage.root / "link").symlink_to(outside)
    with pytest.raises(InvalidKey, match="outside the storage directory"):
        await storage.put("link/escaped.bin", iter_bytes(b"x"))
    assert list(outside.iterdir()) == []


async def test_local_check_reports_a_directory_that_is_gone(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "files")
    storage.root.rmdir()
    storage.root.write_text("a file where the directory was")
    with pytest.raises(StorageError, match="not a directory"):
        await storage.check()


# -- s3 --------------------------------------------------------------------------------------


async def test_s3_check_names_a_missing_bucket(s3_endpoint: str) -> None:
    storage = S3Storage(endpoint_url=s3_endpoint, bucket="no-such-bucket", **CREDENTIALS)
    with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist"):
        await storage.check()
    with pytest.raises(StorageError, match="no-such-bucket"):
        await storage.put(new_key(), iter_bytes(b"x"))


# -- factory ---------------------------------------------------------------------------------


async def test_factory_builds_postgres_by_default(engine: AsyncEngine) -> None:
    storage = create_storage(settings(storage_type=StorageType.POSTGRES), engine)
    assert isinstance(storage, PostgresStorage)
    await storage.check()


async def test_factory_puts_local_files_under_the_data_dir(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    storage = create_storage(settings(storage_type=StorageType.LOCAL, data_dir=tmp_path), engine)
    assert isinstance(storage, LocalStorage)
    assert storage.root == (tmp_path / "storage").resolve()
    assert storage.root.is_dir()


async def test_factory_prefers_an_explicit_local_path(engine: AsyncEngine, tmp_path: Path) -> None:
    chosen = tmp_path / "elsewhere" / "files"
    storage = create_storage(
        settings(storage_type="local", data_dir=tmp_path, storage_local_path=chosen), engine
    )
    assert isinstance(storage, LocalStorage)
    assert storage.root == chosen.resolve()


async def test_factory_builds_s3_without_keeping_the_secret(
    engine: AsyncEngine, s3_endpoint: str, s3_bucket: str
) -> None:
    values = {
        "storage_type": "s3",
        "s3_endpoint": s3_endpoint,
        "s3_bucket_name": s3_bucket,
        "s3_access_key": "testing",
        "s3_secret_key": "a-secret-never-shown",
    }
    storage = create_storage(settings(**values), engine)
    assert isinstance(storage, S3Storage)
    assert storage.bucket == s3_bucket
    assert "a-secret-never-shown" not in repr(vars(storage))
    await storage.check()


def test_factory_names_a_missing_bucket_variable(engine: AsyncEngine) -> None:
    with pytest.raises(ConfigError, match="S3_BUCKET_NAME"):
        create_storage(settings(storage_type="s3"), engine)
