"""Ingestion throughput: born-digital PDFs indexed by Tusk (upload, then the worker's job:
extract, clean, split, embed with the local model, write) against a raw baseline doing the
least the same result needs: pypdfium2's text of every page, and the same chunks embedded by a
direct call of the same ONNX model."""

from __future__ import annotations

import random
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import procrastinate
import pypdfium2  # type: ignore[import-untyped]
from sqlalchemy import text

from bench.common import BenchError, Stats, Stopwatch
from bench.knowledge_synthetic import paragraphs
from tests.support.documents import pdf
from tests.support.knowledge import new_workspace
from tusk.db.models import Dataset
from tusk.models.providers.local import encoder
from tusk.queue import build_app
from tusk.rag import datasets, documents
from tusk.rag.indexing import EMBED_BATCH, chunk_text
from tusk.services import Services, worker_context
from tusk.storage import iter_bytes

AUTOMATIC = {"mode": "automatic"}  # what a document gets when no rule is given
LINE_CHARS, PAGE_LINES = 90, 45
PARSE_ROUNDS = 3


def make_pdfs(pages: int) -> list[tuple[str, bytes]]:
    """PDFs of the labelled documents' paragraphs, shuffled anew in each (about eight A4 pages
    apiece), until they hold at least `pages` pages."""
    rng = random.Random(11)
    body = [p for doc in paragraphs().values() for p in doc]
    made: list[tuple[str, bytes]] = []
    total = 0
    while total < pages:
        rng.shuffle(body)
        lines = [line for p in body for line in [*textwrap.wrap(p, LINE_CHARS), ""]]
        chunked = [lines[i : i + PAGE_LINES] for i in range(0, len(lines), PAGE_LINES)]
        made.append((f"report-{len(made) + 1:02d}.pdf", pdf(chunked, f"Report {len(made) + 1}")))
        total += len(chunked)
    return made


def page_texts(data: bytes) -> int:
    """The baseline's extraction: every page's text with pypdfium2, nothing else. (pages)"""
    document = pypdfium2.PdfDocument(data)
    try:
        for index in range(len(document)):
            page = document[index]
            textpage = page.get_textpage()
            textpage.get_text_range()
            textpage.close()
            page.close()
        return len(document)
    finally:
        document.close()


def embed_directly(texts: Sequence[str]) -> float:
    """The baseline's embedding: the ONNX model called on batches of EMBED_BATCH, as Tusk's
    indexing batches them. Seconds."""
    with Stopwatch() as watch:
        for start in range(0, len(texts), EMBED_BATCH):
            encoder().encode(texts[start : start + EMBED_BATCH])
    return watch.seconds


@dataclass
class Ingestion:
    files: int
    pages: int
    chunks: int
    extract: list[float] = field(default_factory=list)  # baseline, seconds per pass
    chunk: list[float] = field(default_factory=list)  # Tusk's extract + clean + split
    embed: list[float] = field(default_factory=list)  # baseline, before and after Tusk's run
    tusk: float = 0.0  # upload + indexing through the queue
    concurrency: int = 0


def _parse_rounds(files: list[tuple[str, bytes]], result: Ingestion) -> list[str]:
    """Extraction and Tusk's chunking, alternating; the chunks' text."""
    texts: list[str] = []
    for r in range(PARSE_ROUNDS):
        for way in ("raw", "tusk") if r % 2 == 0 else ("tusk", "raw"):
            with Stopwatch() as watch:
                if way == "raw":
                    for _, data in files:
                        page_texts(data)
                else:
                    texts = [c.text for n, d in files for c in chunk_text(d, n, None, AUTOMATIC)]
            (result.extract if way == "raw" else result.chunk).append(watch.seconds)
    return texts


async def run_jobs(services: Services) -> None:
    """Every queued job, run as `tusk worker` runs them (its concurrency), then return."""
    connector = procrastinate.PsycopgConnector(conninfo=services.runtime.conninfo)
    app = build_app()
    with app.replace_connector(connector):
        async with app.open_async():
            await app.run_worker_async(
                wait=False,
                install_signal_handlers=False,
                concurrency=services.settings.worker_concurrency,
                additional_context={**worker_context(services), "engine": services.engine},
                listen_notify=False,
            )


async def new_dataset(services: Services, name: str, **fields: Any) -> Dataset:
    """A dataset in a new workspace, its vector-index job run at once (as a worker would)."""
    workspace = await new_workspace(services)
    async with services.transaction() as db:
        made = await datasets.create_dataset(
            db,
            services.models,
            services.queue,
            workspace,
            datasets.DatasetInput(name=name, **fields),
            None,
        )
    await run_jobs(services)
    return made


async def add_file(
    services: Services, dataset: Dataset, name: str, data: bytes, rule: dict[str, Any] | None
) -> None:
    async with services.transaction() as db:
        await documents.add_document(
            db,
            services.storage,
            services.queue,
            dataset,
            documents.DocumentInput(name=name, process_rule=rule),
            documents.Source(name, None, iter_bytes(data)),
            max_bytes=max(services.settings.upload_limit_bytes, len(data) + 1),
            created_by=None,
        )


async def stored_chunks(services: Services, dataset: Dataset) -> tuple[int, int]:
    """(completed documents, searchable chunks) of a dataset."""
    async with services.engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM documents WHERE dataset_id = :d "
                    "AND indexing_status = 'completed'), (SELECT count(*) FROM document_segments "
                    "WHERE dataset_id = :d AND searchable)"
                ),
                {"d": dataset.id},
            )
        ).one()
    return int(row[0]), int(row[1])


async def measure_ingestion(services: Services, pages: int) -> Ingestion:
    files = make_pdfs(pages)
    result = Ingestion(len(files), sum(page_texts(data) for _, data in files), 0)
    texts = _parse_rounds(files, result)
    result.chunks = len(texts)
    encoder().encode(texts[:EMBED_BATCH])  # loads the model, grows ONNX Runtime's arena
    result.embed.append(embed_directly(texts))
    dataset = await new_dataset(services, "pdfs")
    result.concurrency = services.settings.worker_concurrency
    with Stopwatch() as watch:
        for name, data in files:
            await add_file(services, dataset, name, data, None)
        await run_jobs(services)
    result.tusk = watch.seconds
    result.embed.append(embed_directly(texts))
    completed, chunks = await stored_chunks(services, dataset)
    if (completed, chunks) != (len(files), len(texts)):
        raise BenchError(
            f"Tusk indexed {completed} of {len(files)} PDFs into {chunks} chunks; "
            f"chunking them directly made {len(texts)}"
        )
    return result


def rates(result: Ingestion) -> dict[str, float]:
    """Seconds of each way (p50 of the rounds; the mean of the embedding's two runs)."""
    extract = Stats.of(result.extract).p50
    embed = sum(result.embed) / len(result.embed)
    return {
        "extract": extract,
        "chunk": Stats.of(result.chunk).p50,
        "embed": embed,
        "baseline": extract + embed,
        "tusk": result.tusk,
    }
