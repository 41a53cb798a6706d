"""Retrieval latency: searches through Tusk's `Retriever` as the API makes them, against the very
SQL it runs sent on a bare psycopg connection, on the synthetic chunks (bench.knowledge_synthetic).

The baseline's SQL is not rewritten by hand: `planned()` runs the Retriever's own `_group()`
against a stand-in session that records its statements (the `SET LOCAL`s and the search query
with its parameters). The baseline sends that query, joined to the chunks and their documents
so that it returns what Tusk returns: the chunks' text and their document's name.

Query vectors are looked up by query text on both sides, instead of embedding the query with
the model (bench.knowledge_quality times that), so that the figures are those of retrieval.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import psycopg
from sqlalchemy import TextClause, text
from sqlalchemy.dialects.postgresql import psycopg as psycopg_dialect
from sqlalchemy.ext.asyncio import AsyncSession

from bench.common import Stats, Stopwatch
from bench.knowledge_synthetic import Storage, build_and_compare, load
from tests.support.knowledge import new_workspace
from tusk.db.models import Dataset
from tusk.models.base import EmbeddingModel
from tusk.models.providers.local import DIMENSIONS, MODEL_NAME
from tusk.models.runtime import ModelRuntime
from tusk.models.types import EmbeddingBatch, InputType
from tusk.rag import datasets
from tusk.rag.filters import metadata_condition
from tusk.rag.retrieve import Retriever, groups
from tusk.rag.settings import RetrievalSettings, SearchMethod
from tusk.services import Services

TOP_K = 10
METHODS: tuple[SearchMethod, ...] = ("semantic_search", "full_text_search", "hybrid_search")
TUSK = "Tusk: `Retriever.search`, committed"
STATEMENT = "Tusk: its search statement alone (`Retriever._group`), rolled back"
BARE = "bare SQL on psycopg"
ROUNDS = 4
WARMUP = 10
DIALECT = psycopg_dialect.dialect()  # type: ignore[no-untyped-call]
# What the baseline returns: the chunks the search found, with their text and document's name.
WITH_RECORDS = """
    SELECT h.id, h.score, s.content, d.name FROM ({search}) h
    JOIN document_segments s ON s.id = h.id JOIN documents d ON d.id = s.document_id
    ORDER BY h.score DESC
"""


class LookupEmbedding(EmbeddingModel):
    """The local model's name and size, with vectors looked up by query text."""

    def __init__(self, vectors: Mapping[str, list[float]]) -> None:
        super().__init__("local", MODEL_NAME, DIMENSIONS)
        self.vectors = vectors

    async def embed_batch(self, texts: Sequence[str], input_type: InputType) -> EmbeddingBatch:
        return EmbeddingBatch([self.vectors[text] for text in texts], 0)


class LookupModels:
    """Stands for `ModelRuntime` where the Retriever asks it for the dataset's model."""

    def __init__(self, vectors: Mapping[str, list[float]]) -> None:
        self.model = LookupEmbedding(vectors)

    async def embedding(
        self, workspace_id: uuid.UUID, name: str | None = None, *, app_id: uuid.UUID | None = None
    ) -> EmbeddingModel:
        return self.model


class _Recorder:
    """Stands for the Retriever's session and records what it is asked to execute."""

    def __init__(self) -> None:
        self.statements: list[tuple[TextClause, dict[str, Any]]] = []

    async def execute(
        self, statement: TextClause, params: Mapping[str, Any] | None = None
    ) -> list[Any]:
        self.statements.append((statement, dict(params or {})))
        return []


@dataclass(frozen=True)
class Planned:
    """One search as the Retriever runs it: its settings statements, and the query."""

    settings: tuple[str, ...]  # "SET hnsw.ef_search = 40", ... (SET LOCAL in the Retriever)
    sql: str  # in psycopg's parameter style
    params: dict[str, Any]


def _psycopg(statement: TextClause) -> str:
    return str(statement.compile(dialect=DIALECT))


async def planned(
    models: LookupModels, workspace: uuid.UUID, dataset: Dataset, query: str, method: SearchMethod
) -> Planned:
    settings = RetrievalSettings(method, top_k=TOP_K)
    recorder = _Recorder()
    retriever = Retriever(cast(AsyncSession, recorder), cast(ModelRuntime, models), workspace)
    (group,) = groups([dataset])
    await retriever._group(group, query, settings, metadata_condition(settings.filters))
    *sets, (search, params) = recorder.statements
    statements = tuple(_psycopg(s).replace("SET LOCAL", "SET", 1) for s, _ in sets)
    return Planned(statements, _psycopg(search), params)


@dataclass
class Timed:
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    found: dict[int, list[uuid.UUID]] = field(default_factory=dict)  # search -> chunk ids

    @property
    def stats(self) -> Stats:
        return Stats.of(self.latencies)

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.seconds


@dataclass
class Retrieval:
    rows: int
    load_seconds: float
    queries: int
    timed: dict[SearchMethod, dict[str, Timed]] = field(default_factory=dict)
    hnsw_recall: float = 0.0  # Tusk's semantic search against the exact top 10


Search = Callable[[int], Awaitable[list[uuid.UUID]]]  # search i -> the chunks' ids


@dataclass
class Ways:
    """How each way makes search i of a method."""

    services: Services
    dataset: Dataset
    texts: list[str]
    models: LookupModels

    def retriever(self, db: AsyncSession) -> Retriever:
        return Retriever(db, cast(ModelRuntime, self.models), self.dataset.workspace_id)

    def tusk(self, method: SearchMethod) -> Search:
        settings = RetrievalSettings(method, top_k=TOP_K)

        async def search(i: int) -> list[uuid.UUID]:
            async with self.services.transaction() as db:
                records = await self.retriever(db).search([self.dataset], self.texts[i], settings)
            return [uuid.UUID(record.segment["id"]) for record in records]

        return search

    def statement_only(self, method: SearchMethod) -> Search:
        settings = RetrievalSettings(method, top_k=TOP_K)
        (group,) = groups([self.dataset])
        condition = metadata_condition(settings.filters)

        async def search(i: int) -> list[uuid.UUID]:
            async with self.services.sessions() as db:
                try:
                    hits = await self.retriever(db)._group(
                        group, self.texts[i], settings, condition
                    )
                finally:
                    await db.rollback()
            return [hit.segment_id for hit in hits]

        return search

    @staticmethod
    def bare(conn: psycopg.AsyncConnection[Any], plans: list[Planned]) -> Search:
        async def search(i: int) -> list[uuid.UUID]:
            cursor = await conn.execute(WITH_RECORDS.format(search=plans[i].sql), plans[i].params)
            return [row[0] for row in await cursor.fetchall()]

        return search


async def _timed_round(search: Search, indexes: range, into: Timed) -> None:
    with Stopwatch() as whole:
        for i in indexes:
            with Stopwatch() as one:
                found = await search(i)
            into.latencies.append(one.seconds)
            into.found[i] = found
    into.seconds += whole.seconds


async def compare(ways: Ways, method: SearchMethod, plans: list[Planned]) -> dict[str, Timed]:
    """Every way makes every search once, in ROUNDS rounds whose order alternates (A B C,
    C B A, ...) so that a drift of the machine hits all, after WARMUP untimed searches each.
    The bare connection makes the Retriever's settings once (SET where it says SET LOCAL)."""
    async with await psycopg.AsyncConnection.connect(
        ways.services.runtime.conninfo, autocommit=True
    ) as conn:
        for statement in plans[0].settings:
            await conn.execute(statement)
        searches = {
            TUSK: ways.tusk(method),
            STATEMENT: ways.statement_only(method),
            BARE: Ways.bare(conn, plans),
        }
        timed = {way: Timed() for way in searches}
        for search in searches.values():
            await _timed_round(search, range(WARMUP), Timed())
        bounds = [len(plans) * r // ROUNDS for r in range(ROUNDS + 1)]
        for r in range(ROUNDS):
            for way in list(searches) if r % 2 == 0 else list(reversed(searches)):
                indexes = range(bounds[r], bounds[r + 1])
                await _timed_round(searches[way], indexes, timed[way])
    return timed


async def exact_recall(conninfo: str, plans: list[Planned]) -> float:
    """Recall@10 of the HNSW search (Tusk's settings) against the exact top 10 (index scans
    off: every chunk's distance computed and sorted)."""
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        approximate = []
        for statement in plans[0].settings:
            await conn.execute(statement)
        for plan in plans:
            cursor = await conn.execute(plan.sql, plan.params)
            approximate.append({row[0] for row in await cursor.fetchall()})
        await conn.execute("SET enable_indexscan = off")
        shares = []
        for plan, found in zip(plans, approximate, strict=True):
            cursor = await conn.execute(plan.sql, plan.params)
            exact = {row[0] for row in await cursor.fetchall()}
            shares.append(len(found & exact) / len(exact))
    return sum(shares) / len(shares)


async def new_dataset(services: Services) -> tuple[Dataset, str]:
    """A high-quality dataset of the local model; its index is built after the load, so the
    job that would build it now is removed."""
    workspace = await new_workspace(services)
    async with services.transaction() as db:
        made = await datasets.create_dataset(
            db,
            services.models,
            services.queue,
            workspace,
            datasets.DatasetInput(name="synthetic"),
            None,
        )
    async with services.engine.begin() as conn:
        await conn.execute(
            text("DELETE FROM procrastinate_jobs WHERE task_name = 'rag:ensure_vector_index'")
        )
    model = datasets.full_model_name(made)
    assert model is not None
    return made, model


async def measure_retrieval(
    services: Services, rows: int, queries: int
) -> tuple[Retrieval, list[Storage]]:
    """Load the chunks, build the indexes (comparing halfvec with vector), then search."""
    dataset, model = await new_dataset(services)
    conninfo = services.runtime.conninfo
    seconds, corpus = load(conninfo, rows, model, dataset.workspace_id, dataset.id)
    storage = await build_and_compare(conninfo, model)
    vectors = corpus.queries(queries)
    models = LookupModels(vectors)
    texts = list(vectors)
    ways = Ways(services, dataset, texts, models)
    results = Retrieval(rows, seconds, len(texts))
    for method in METHODS:
        plans = [
            await planned(models, dataset.workspace_id, dataset, query, method) for query in texts
        ]
        if method == "semantic_search":
            results.hnsw_recall = await exact_recall(conninfo, plans)
        results.timed[method] = await compare(ways, method, plans)
    return results, storage


def agreement(timed: dict[str, Timed]) -> float:
    """The share of Tusk's chunks that the bare SQL found too, over all searches."""
    tusk, bare = timed[TUSK].found, timed[BARE].found
    same = sum(len(set(tusk[i]) & set(bare[i])) for i in bare)
    return same / max(1, sum(len(bare[i]) for i in bare))
