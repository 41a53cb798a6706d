"""`tusk kb export` and `tusk kb import` move a knowledge base without re-embedding it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from tests.integration.test_rag import TOPICS, add_text, make_dataset, search
from tests.support.knowledge import new_workspace, run_queued_jobs, services_on
from tests.support.tusk import db_env, run_tusk
from tusk.db.models import Dataset

pytestmark = pytest.mark.acceptance


async def _source_base(conninfo: str) -> str:
    async with services_on(conninfo) as services:
        dataset = await make_dataset(services, await new_workspace(services), name="Topics")
        for name, body in TOPICS.items():
            await add_text(services, dataset, name, body)
        await run_queued_jobs(services)
        return str(dataset.id)


async def _vectors(conninfo: str) -> list[Any]:
    async with services_on(conninfo) as services, services.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT content, embedding::text FROM document_segments "
                "WHERE searchable ORDER BY content"
            )
        )
        return [tuple(row) for row in rows]


async def _search_in(conninfo: str, query: str) -> list[str]:
    async with services_on(conninfo) as services:
        async with services.transaction() as db:
            dataset = (await db.execute(select(Dataset))).scalar_one()
        records = await search(services, dataset, query)
        return [r.document_name for r in records]


def test_a_knowledge_base_moves_with_its_files_chunks_and_vectors(
    fresh_database: str, empty_database: str, tmp_path: Path
) -> None:
    dataset_id = asyncio.run(_source_base(fresh_database))
    exported = tmp_path / "topics.jsonl"
    result = run_tusk("kb", "export", dataset_id, "-o", str(exported), env=db_env(fresh_database))
    assert result.returncode == 0, result.stderr
    assert '"format": "tusk-knowledge-base"' in exported.read_text().splitlines()[0]

    target = db_env(empty_database)
    assert run_tusk("migrate", env=target).returncode == 0
    admin = ["--email", "t@example.com", "--name", "T", "--password", "passw0rd-t"]
    assert run_tusk("setup", *admin, env=target).returncode == 0
    imported = run_tusk("kb", "import", str(exported), env=target)
    assert imported.returncode == 0, imported.stderr
    assert "3 document(s), 3 chunk(s)" in imported.stdout

    assert asyncio.run(_vectors(empty_database)) == asyncio.run(_vectors(fresh_database))
    assert asyncio.run(_search_in(empty_database, "insects making honey"))[0] == "bees"


def test_a_damaged_export_imports_nothing(fresh_database: str, tmp_path: Path) -> None:
    dataset_id = asyncio.run(_source_base(fresh_database))
    exported = tmp_path / "topics.jsonl"
    run_tusk("kb", "export", dataset_id, "-o", str(exported), env=db_env(fresh_database))
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_text("".join(exported.read_text().splitlines(keepends=True)[:-1]) + "{not json\n")
    result = run_tusk("kb", "import", str(damaged), env=db_env(fresh_database))
    assert result.returncode == 1
    assert "is not JSON" in result.stderr
    assert "Traceback" not in result.stderr

    async def datasets_and_files() -> tuple[int, int]:
        async with services_on(fresh_database) as services, services.engine.connect() as conn:
            datasets = (await conn.execute(text("SELECT count(*) FROM datasets"))).scalar_one()
            files = (await conn.execute(text("SELECT count(*) FROM storage_objects"))).scalar_one()
            return datasets, files

    assert asyncio.run(datasets_and_files()) == (1, 3)  # only the original and its 3 files
