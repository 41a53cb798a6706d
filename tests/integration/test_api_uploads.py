"""File upload in the console: stored whole or not at all, with Dify's errors."""

from __future__ import annotations

import hashlib

from sqlalchemy import text

from tests.support.api import api_client, assert_error, bearer, setup_and_login
from tusk.db.engine import engine_scope

MB = 1024 * 1024


async def counts(conninfo: str) -> tuple[int, int]:
    async with engine_scope(conninfo) as engine, engine.connect() as conn:
        files = (await conn.execute(text("SELECT count(*) FROM upload_files"))).scalar_one()
        blobs = (await conn.execute(text("SELECT count(*) FROM storage_objects"))).scalar_one()
    return files, blobs


async def test_an_upload_is_stored_with_its_row(fresh_database: str) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB: more than one storage chunk with the header
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        response = await client.post(
            "/console/api/files/upload",
            files={"file": ("report.PDF", data + b"tail", "application/pdf")},
            headers=bearer(token),
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert (body["name"], body["extension"], body["size"]) == (
            "report.PDF",
            "pdf",
            len(data) + 4,
        )
        assert body["mime_type"] == "application/pdf"
        async with engine_scope(fresh_database) as engine, engine.connect() as conn:
            row = (
                await conn.execute(
                    text("SELECT key, hash, storage_type FROM upload_files WHERE id = :id"),
                    {"id": body["id"]},
                )
            ).one()
            stored = await conn.execute(
                text(
                    "SELECT string_agg(data, ''::bytea ORDER BY seq) "
                    "FROM storage_chunks WHERE key = :k"
                ),
                {"k": row.key},
            )
        assert stored.scalar_one() == data + b"tail"
        assert row.hash == hashlib.sha256(data + b"tail").hexdigest()
        assert row.storage_type == "postgres"
        assert row.key.startswith("upload_files/")


async def test_an_oversized_upload_is_refused_and_leaves_nothing(fresh_database: str) -> None:
    async with api_client(fresh_database, upload_file_size_limit_mb=1) as client:
        token = await setup_and_login(client)
        too_big = b"z" * (MB + 1)
        response = await client.post(
            "/console/api/files/upload", files={"file": ("big.bin", too_big)}, headers=bearer(token)
        )
        assert_error(response, 413, "file_too_large")
        # Far over the limit, the body itself is cut off before it is all read.
        far_too_big = await client.post(
            "/console/api/files/upload",
            files={"file": ("big.bin", too_big * 3)},
            headers=bearer(token),
        )
        assert_error(far_too_big, 413, "file_too_large")
        assert await counts(fresh_database) == (0, 0)
        limits = (await client.get("/console/api/files/upload", headers=bearer(token))).json()
        assert limits["file_size_limit"] == 1


async def test_upload_needs_exactly_one_file(fresh_database: str) -> None:
    async with api_client(fresh_database) as client:
        token = await setup_and_login(client)
        none = await client.post(
            "/console/api/files/upload", data={"user": "x"}, headers=bearer(token)
        )
        assert_error(none, 400, "no_file_uploaded")
        two = await client.post(
            "/console/api/files/upload",
            files=[("file", ("a.txt", b"a")), ("file", ("b.txt", b"b"))],
            headers=bearer(token),
        )
        assert_error(two, 400, "too_many_files")
        assert await counts(fresh_database) == (0, 0)
        anonymous = await client.post("/console/api/files/upload", files={"file": ("a.txt", b"a")})
        assert_error(anonymous, 401, "unauthorized")
