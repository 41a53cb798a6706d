"""STORAGE_TYPE=s3: files in an S3 bucket (AWS, MinIO or another S3-compatible server).

boto3 blocks, so every call runs in a worker thread. Buckets are never created here: the
operator creates one, and `check()` says clearly when it is missing.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable
from typing import IO, TYPE_CHECKING, Any, ParamSpec, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tusk.storage.base import (
    CHUNK_SIZE,
    ObjectNotFound,
    Storage,
    StorageError,
    limited,
    one_line,
    validate_key,
)

if TYPE_CHECKING:
    from botocore.response import StreamingBody
    from mypy_boto3_s3 import S3Client

P = ParamSpec("P")
T = TypeVar("T")

# Uploads smaller than this are spooled in memory, larger ones on disk.
SPOOL_IN_MEMORY = 4 * CHUNK_SIZE
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_DENIED = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


def _config(endpoint_url: str | None) -> Config:
    options: dict[str, Any] = {
        "connect_timeout": 5,
        "read_timeout": 60,
        "retries": {"max_attempts": 3, "mode": "standard"},
    }
    if endpoint_url:
        # S3-compatible servers are addressed by path, not by a bucket subdomain, and several
        # reject the checksums that recent boto3 adds to every request unless asked not to.
        options["s3"] = {"addressing_style": "path"}
        options["request_checksum_calculation"] = "when_required"
        options["response_checksum_validation"] = "when_required"
    return Config(**options)


def _code(exc: ClientError) -> str:
    code = exc.response.get("Error", {}).get("Code")
    return code or str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?"))


class S3Storage(Storage):
    name = "s3"

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = "us-east-1",
    ) -> None:
        """Without keys, boto3's own chain (environment, instance role, ...) provides them."""
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        # The secret goes into the client only, so no attribute of ours can leak it into a log.
        self._client: S3Client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=_config(endpoint_url),
        )

    async def put(
        self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None
    ) -> int:
        validate_key(key)
        # Spool first: a file over the limit is refused before anything reaches the bucket,
        # and S3 itself makes the upload appear at once.
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
            size = await _spool(spool, limited(chunks, max_bytes))
            spool.seek(0)
            await self._call(key, self._client.upload_fileobj, spool, self.bucket, key)
        return size

    async def open(self, key: str) -> AsyncIterator[bytes]:
        validate_key(key)
        response = await self._call(key, self._client.get_object, Bucket=self.bucket, Key=key)
        return self._stream(response["Body"])

    async def delete(self, key: str) -> bool:
        # S3 deletes without saying whether anything was there, so ask first.
        existed = await self.exists(key)
        if existed:
            await self._call(key, self._client.delete_object, Bucket=self.bucket, Key=key)
        return existed

    async def exists(self, key: str) -> bool:
        validate_key(key)
        try:
            await self._call(key, self._client.head_object, Bucket=self.bucket, Key=key)
        except ObjectNotFound:
            return False
        return True

    async def check(self) -> None:
        # HEAD of a missing object and of a missing bucket both answer 404: ask about the bucket.
        await self._call(None, self._client.head_bucket, Bucket=self.bucket)
        await super().check()

    @property
    def _at(self) -> str:
        return f" at {self.endpoint_url}" if self.endpoint_url else ""

    async def _call(
        self, key: str | None, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run a blocking boto3 call in a thread; its failures become StorageErrors."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except ClientError as exc:
            raise self._error(exc, key) from exc
        except BotoCoreError as exc:
            raise StorageError(f"S3{self._at}: {one_line(exc)}") from exc

    def _error(self, exc: ClientError, key: str | None) -> StorageError:
        code = _code(exc)
        if code in _NOT_FOUND and key is not None:
            return ObjectNotFound(key)
        if code in _NOT_FOUND or code == "NoSuchBucket":
            return StorageError(f"bucket '{self.bucket}' does not exist{self._at}")
        if code in _DENIED:
            return StorageError(
                f"access to bucket '{self.bucket}'{self._at} denied ({code}); "
                "check the access key, the secret key and the bucket policy"
            )
        return StorageError(f"S3 {exc.operation_name} on bucket '{self.bucket}' failed: {code}")

    async def _stream(self, body: StreamingBody) -> AsyncGenerator[bytes, None]:
        try:
            while chunk := await self._call(None, body.read, CHUNK_SIZE):
                yield chunk
        finally:
            body.close()


async def _spool(spool: IO[bytes], chunks: AsyncIterable[bytes]) -> int:
    size = 0
    async for chunk in chunks:
        # Past SPOOL_IN_MEMORY the spool writes to disk, which may block.
        await asyncio.to_thread(spool.write, chunk)
        size += len(chunk)
    return size
