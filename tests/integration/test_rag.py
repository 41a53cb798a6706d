"""The knowledge engine on a real database: datasets, indexing through the queue, retrieval."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text

from tests.support.documents import encrypted_pdf, pdf
from tests.support.knowledge import job_statuses, new_workspace, run_queued_jobs, services_on
from tusk.db.models import Dataset, Document
from tusk.rag import datasets, documents, segments
from tusk.rag.indexing import IndexingRun, chunk_text, plan
from tusk.rag.retrieve import Retriever
from tusk.rag.settings import parse_retrieval
from tusk.services import Services
from tusk.storage import iter_bytes

TOPICS = {
    "postgres": "PostgreSQL stores tables, indexes and write-ahead logs on disk. Vacuum reclaims "
    "space from dead rows, and replication streams the log to standby servers.",
    "bees": "Honey bees live in colonies with one queen. Worker bees gather nectar and pollen, "
    "and they communicate the location of flowers with a waggle dance.",
    "volcano": "A volcano erupts when magma rises through the crust. Lava flows, ash clouds and "
    "pyroclastic flows are the main hazards near an active volcano.",
}


@pytest.fixture
async def services(fresh_database: str) -> AsyncIterator[Services]:
    async with services_on(fresh_database) as made:
        yield made


async def make_dataset(services: Services, workspace: uuid.UUID, **fields: Any) -> Dataset:
    async with services.transaction() as db:
        return await datasets.create_dataset(
            db,
            services.models,
            services.queue,
            workspace,
            datasets.DatasetInput(name=fields.pop("name", "kb"), **fields),
            None,
        )


async def add_text(
    services: Services, dataset: Dataset, name: str, body: str, **fields: Any
) -> Document:
    async with services.transaction() as db:
        return await documents.add_document(
            db,
            services.storage,
            services.queue,
            dataset,
            documents.DocumentInput(name=name, **fields),
            documents.text_source(name, body),
            max_bytes=10_000_000,
            created_by=None,
        )


async def add_file(services: Services, dataset: Dataset, filename: str, data: bytes) -> Document:
    async with services.transaction() as db:
        return await documents.add_document(
            db,
            services.storage,
            services.queue,
            dataset,
            documents.DocumentInput(name=filename),
            documents.Source(filename, None, iter_bytes(data)),
            max_bytes=10_000_000,
            created_by=None,
        )


async def reload(services: Services, document: Document) -> Document:
    async with services.transaction() as db:
        found = await db.get(Document, document.id)
        assert found is not None
        return found


async def search(services: Services, dataset: Dataset, query: str, **retrieval: Any) -> list[Any]:
    settings = parse_retrieval(retrieval) if retrieval else datasets.retrieval_of(dataset)
    async with services.transaction() as db:
        return await Retriever(db, services.models, dataset.workspace_id).search(
            [dataset], query, settings
        )


async def topics_dataset(services: Services, **fields: Any) -> Dataset:
    dataset = await make_dataset(services, await new_workspace(services), **fields)
    for name, body in TOPICS.items():
        await add_text(services, dataset, name, body)
    await run_queued_jobs(services)
    return dataset


async def test_a_document_is_indexed_through_the_queue(services: Services) -> None:
    dataset = await make_dataset(services, await new_workspace(services))
    assert (dataset.embedding_model_provider, dataset.embedding_model) == (
        "local",
        "all-MiniLM-L6-v2",
    )
    assert dataset.embedding_dimensions == 384
    document = await add_text(services, dataset, "bees", TOPICS["bees"])
    assert document.indexing_status == "waiting"
    assert await job_statuses(services, "rag:index_document") == ["todo"]

    await run_queued_jobs(services)
    done = await reload(services, document)
    assert done.indexing_status == "completed"
    assert (done.completed_segments, done.total_segments, done.generation) == (1, 1, 1)
    assert done.processing_started_at <= done.splitting_completed_at <= done.completed_at
    assert await job_statuses(services, "rag:index_document") == ["succeeded"]
    async with services.engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT searchable, embedding_model, vector_dims(embedding) AS dims, "
                    "content_tsv IS NOT NULL AS has_tsv FROM document_segments"
                )
            )
        ).one()
    assert tuple(row) == (True, "local:all-MiniLM-L6-v2", 384, True)


async def test_the_vector_index_job_builds_one_hnsw_index_per_model(services: Services) -> None:
    await make_dataset(services, await new_workspace(services))
    await run_queued_jobs(services)
    async with services.engine.connect() as conn:
        definition = (
            await conn.execute(
                text(
                    "SELECT indexdef FROM pg_indexes WHERE tablename = 'document_segments' "
                    "AND indexname LIKE 'ix_document_segments_hnsw_384_%'"
                )
            )
        ).scalar_one()
    assert "hnsw" in definition
    assert "halfvec_cosine_ops" in definition
    assert "'local:all-MiniLM-L6-v2'" in definition


@pytest.mark.parametrize("method", ["semantic_search", "full_text_search", "hybrid_search"])
async def test_each_search_method_finds_the_right_document(services: Services, method: str) -> None:
    dataset = await topics_dataset(services)
    query = {
        "semantic_search": "insects that make honey",
        "full_text_search": "waggle dance",
        "hybrid_search": "how do bees tell where flowers are",
    }[method]
    records = await search(services, dataset, query, search_method=method, top_k=2)
    assert records[0].document_name == "bees"
    assert 0 < records[0].score <= 1
    assert len(records) <= 2


async def test_rrf_fusion_and_score_threshold(services: Services) -> None:
    dataset = await topics_dataset(services)
    fused = await search(
        services,
        dataset,
        "lava and ash",
        search_method="hybrid_search",
        reranking_mode="rrf",
        top_k=3,
    )
    assert fused[0].document_name == "volcano"
    assert fused[0].score == pytest.approx(1.0)  # first in both lists
    strict = await search(
        services,
        dataset,
        "lava and ash",
        search_method="semantic_search",
        score_threshold_enabled=True,
        score_threshold=0.99,
    )
    assert strict == []


async def test_an_economy_dataset_needs_no_model(services: Services) -> None:
    dataset = await topics_dataset(services, indexing_technique="economy")
    assert dataset.embedding_model is None
    records = await search(services, dataset, "replication standby")
    assert [r.document_name for r in records][:1] == ["postgres"]
    async with services.engine.connect() as conn:
        embedded = (
            await conn.execute(text("SELECT count(embedding) FROM document_segments"))
        ).scalar()
    assert embedded == 0


async def test_trigram_search_matches_chinese_substrings(services: Services) -> None:
    dataset = await make_dataset(
        services,
        await new_workspace(services),
        indexing_technique="economy",
        text_search_config="trigram",
    )
    await add_text(services, dataset, "zh", "数据库索引可以加快查询速度。向量检索用于语义搜索。")
    await add_text(services, dataset, "other", "今天天气很好，我们去公园散步。")
    await run_queued_jobs(services)
    records = await search(services, dataset, "向量检索", search_method="full_text_search")
    assert [r.document_name for r in records][:1] == ["zh"]


async def test_metadata_filters_narrow_the_results(services: Services) -> None:
    dataset = await make_dataset(services, await new_workspace(services))
    for year in (2019, 2021, 2023):
        await add_text(
            services,
            dataset,
            f"report {year}",
            TOPICS["bees"],
            metadata={"year": year, "team": "bio"},
        )
    await run_queued_jobs(services)
    conditions = {
        "logical_operator": "and",
        "conditions": [
            {"name": "year", "comparison_operator": "≥", "value": 2021},
            {"name": "team", "comparison_operator": "is", "value": "bio"},
        ],
    }
    records = await search(
        services, dataset, "bees", top_k=10, metadata_filtering_conditions=conditions
    )
    assert sorted(r.document_name for r in records) == ["report 2021", "report 2023"]


async def test_bad_files_end_in_error_and_others_are_unaffected(services: Services) -> None:
    dataset = await make_dataset(services, await new_workspace(services))
    good = await add_text(services, dataset, "good", TOPICS["volcano"])
    bad = {
        "empty.txt": b"",
        "slides.key": b"not a supported format",
        "broken.pdf": pdf([["hello"]])[:200],
        "locked.pdf": encrypted_pdf(),
    }
    added = {name: await add_file(services, dataset, name, data) for name, data in bad.items()}
    await run_queued_jobs(services)
    assert (await reload(services, good)).indexing_status == "completed"
    errors = {name: (await reload(services, doc)) for name, doc in added.items()}
    assert {name: d.indexing_status for name, d in errors.items()} == dict.fromkeys(bad, "error")
    assert "empty" in (errors["empty.txt"].error or "")
    assert "supported" in (errors["slides.key"].error or "")
    assert "password" in (errors["locked.pdf"].error or "")
    async with services.engine.connect() as conn:
        leftovers = (
            await conn.execute(
                text("SELECT count(*) FROM document_segments WHERE document_id = ANY(:ids)"),
                {"ids": [d.id for d in added.values()]},
            )
        ).scalar()
    assert leftovers == 0


async def test_a_pdf_is_indexed_page_by_page(services: Services) -> None:
    dataset = await make_dataset(services, await new_workspace(services))
    data = pdf([["Volcanoes erupt lava."], ["Bees dance to share flower locations."]])
    document = await add_file(services, dataset, "notes.pdf", data)
    await run_queued_jobs(services)
    assert (await reload(services, document)).indexing_status == "completed"
    records = await search(services, dataset, "bees dance", search_method="full_text_search")
    assert "Bees dance" in records[0].segment["content"]


async def test_reindexing_swaps_all_chunks_at_once(services: Services) -> None:
    dataset = await make_dataset(services, await new_workspace(services))
    document = await add_text(services, dataset, "doc", TOPICS["bees"])
    await run_queued_jobs(services)
    async with services.transaction() as db:
        row = await documents.get_document(db, dataset, document.id, for_update=True)
        await documents.replace_source(
            db,
            services.storage,
            services.queue,
            row,
            dataset,
            documents.DocumentInput(name="doc"),
            documents.text_source("doc", TOPICS["volcano"]),
            max_bytes=10_000_000,
            by=None,
        )
    # Until the new run swaps, searches still see the old text, and only it.
    before = await search(services, dataset, "honey bees", search_method="full_text_search")
    assert [r.segment["content"][:10] for r in before] == ["Honey bees"]
    await run_queued_jobs(services)
    after = await search(services, dataset, "volcano magma", search_method="full_text_search")
    assert after[0].segment["content"].startswith("A volcano")
    assert await search(services, dataset, "honey bees", search_method="full_text_search") == []
    done = await reload(services, document)
    assert (done.generation, done.indexing_status) == (2, "completed")
    async with services.engine.connect() as conn:
        generations = await conn.execute(text("SELECT DISTINCT generation FROM document_segments"))
        assert [g for (g,) in generations] == [2]


async def test_a_run_resumes_where_a_dead_worker_stopped(services: Services) -> None:
    dataset = await make_dataset(services, await new_workspace(services))
    body = "\n\n".join(f"Paragraph {i}: " + TOPICS["postgres"] for i in range(80))
    document = await add_text(
        services,
        dataset,
        "long",
        body,
        process_rule={
            "mode": "custom",
            "rules": {"segmentation": {"separator": "\\n\\n", "max_tokens": 60}},
        },
    )
    run = IndexingRun(services.engine, services.models, services.storage)
    begun = await run._begin(document.id)  # a worker starts, writes one batch, dies
    assert begun is not None
    target, source = begun
    planned = plan(document.id, target.generation, chunk_text(*source))
    await run._write(target, planned[:32])
    assert (await reload(services, document)).completed_segments == 32

    assert await run.run(document.id) == "completed"  # another attempt picks it up
    done = await reload(services, document)
    assert done.completed_segments == done.total_segments == len(planned) == 80
    async with services.engine.connect() as conn:
        counts = (
            await conn.execute(
                text(
                    "SELECT count(*), count(DISTINCT position) FROM document_segments "
                    "WHERE document_id = :d"
                ),
                {"d": document.id},
            )
        ).one()
    assert tuple(counts) == (80, 80)


async def test_hierarchical_documents_match_children_and_return_parents(services: Services) -> None:
    dataset = await make_dataset(services, await new_workspace(services))
    body = "\n\n".join(
        f"Topic {name}\n" + value.replace(". ", ".\n") for name, value in TOPICS.items()
    )
    rule = {
        "mode": "hierarchical",
        "rules": {
            "parent_mode": "paragraph",
            "segmentation": {"separator": "\\n\\n", "max_tokens": 500},
            "subchunk_segmentation": {"separator": "\\n", "max_tokens": 50},
        },
    }
    await add_text(services, dataset, "h", body, process_rule=rule, doc_form="hierarchical_model")
    await run_queued_jobs(services)
    records = await search(services, dataset, "waggle dance", search_method="full_text_search")
    assert records[0].segment["content"].startswith("Topic bees")
    assert any("waggle dance" in c["content"] for c in records[0].child_chunks)


async def test_disabling_a_document_hides_its_chunks(services: Services) -> None:
    dataset = await topics_dataset(services)
    async with services.transaction() as db:
        found = await documents.list_documents(db, dataset, page=1, limit=10, keyword="bees")
        await documents.set_enabled(db, dataset, [found.items[0].id], "disable")
    assert await search(services, dataset, "waggle dance", search_method="full_text_search") == []
    async with services.transaction() as db:
        await documents.set_enabled(db, dataset, [found.items[0].id], "enable")
    assert await search(services, dataset, "waggle dance", search_method="full_text_search") != []


async def test_edited_chunks_are_re_embedded(services: Services) -> None:
    dataset = await make_dataset(services, await new_workspace(services))
    document = await add_text(services, dataset, "doc", TOPICS["bees"])
    await run_queued_jobs(services)
    document = await reload(services, document)
    async with services.transaction() as db:
        listed = await segments.list_segments(db, document, page=1, limit=10)
        await segments.update_segment(
            db,
            services.models,
            dataset,
            document,
            listed.items[0].id,
            {"content": TOPICS["volcano"]},
        )
        added = await segments.add_segments(
            db,
            services.models,
            dataset,
            document,
            [segments.SegmentInput("Magnets attract iron.")],
            None,
        )
    assert added[0].position == 1
    records = await search(services, dataset, "erupting magma", top_k=1)
    assert records[0].segment["content"].startswith("A volcano")
    records = await search(services, dataset, "magnetism and iron", top_k=1)
    assert records[0].segment["content"] == "Magnets attract iron."
