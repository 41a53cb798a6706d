"""Retrieval quality on a small labelled set (bench/knowledge_data): twelve short documents
indexed by Tusk with the local model, one chunk per paragraph, and fifty questions, each
labelled with a passage of the paragraph that answers it. A retrieved chunk is relevant when it
contains that passage. Tusk's search methods are scored against textbook baselines computed in
Python on the very chunks and vectors Tusk stored: exact cosine, BM25, and their fusion by
reciprocal rank."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import text

from bench.common import Stopwatch
from bench.knowledge_ingest import add_file, new_dataset, run_jobs
from bench.knowledge_synthetic import DATA, paragraphs
from tusk.db.models import Dataset
from tusk.models.providers.local import encoder
from tusk.rag.retrieve import RRF_K, Retriever
from tusk.rag.settings import RetrievalSettings
from tusk.services import Services

K = 10  # recall@K, and MRR over the first K
ONE_CHUNK_PER_PARAGRAPH = {
    "mode": "custom",
    "rules": {"segmentation": {"separator": "\\n\\n", "max_tokens": 200, "chunk_overlap": 0}},
}
METHODS = {
    "semantic": RetrievalSettings("semantic_search", top_k=K),
    "full-text": RetrievalSettings("full_text_search", top_k=K),
    "hybrid, weighted 0.7 / 0.3": RetrievalSettings("hybrid_search", top_k=K),
    "hybrid, RRF": RetrievalSettings("hybrid_search", top_k=K, fusion="rrf"),
}
BASELINES = {
    "semantic": "exact cosine (numpy)",
    "full-text": "BM25 (Python)",
    "hybrid, RRF": "RRF of exact cosine and BM25",
}


@dataclass(frozen=True)
class Question:
    text: str
    answer: str  # a passage of the answering paragraph


def questions() -> list[Question]:
    found = json.loads((DATA / "questions.json").read_text())["questions"]
    return [Question(q["question"], q["answer"]) for q in found]


@dataclass
class Scores:
    ranks: list[int | None] = field(default_factory=list)  # of the first relevant chunk

    def add(self, ranked: Sequence[str], answer: str) -> None:
        found = (i for i, content in enumerate(ranked[:K], 1) if answer in content)
        self.ranks.append(next(found, None))

    @property
    def recall(self) -> float:
        return sum(rank is not None for rank in self.ranks) / len(self.ranks)

    @property
    def mrr(self) -> float:
        return sum(1 / rank for rank in self.ranks if rank is not None) / len(self.ranks)


@dataclass
class Quality:
    documents: int
    chunks: int
    questions: int
    tusk: dict[str, Scores]
    baseline: dict[str, Scores]
    search_seconds: list[float]  # Tusk's semantic searches, the query embedded by the model


# --- the baselines -------------------------------------------------------------------------------

_WORD = re.compile(r"\w+")


def _words(value: str) -> list[str]:
    return _WORD.findall(value.lower())


def bm25(chunks: Sequence[str], query: str, k1: float = 1.2, b: float = 0.75) -> list[int]:
    """Chunk indexes by BM25 score, best first (those matching no word of the query left out)."""
    docs = [Counter(_words(chunk)) for chunk in chunks]
    lengths = [sum(doc.values()) for doc in docs]
    average = sum(lengths) / len(lengths)
    frequency = Counter(word for doc in docs for word in doc)
    scores = []
    for doc, length in zip(docs, lengths, strict=True):
        score = 0.0
        for word in set(_words(query)) & doc.keys():
            idf = math.log(1 + (len(docs) - frequency[word] + 0.5) / (frequency[word] + 0.5))
            tf = doc[word]
            score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / average))
        scores.append(score)
    return [int(i) for i in np.argsort(scores)[::-1] if scores[i] > 0]


def rrf(*rankings: list[int]) -> list[int]:
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, index in enumerate(ranking, 1):
            fused[index] = fused.get(index, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(fused, key=lambda index: -fused[index])


def baselines(
    chunks: list[str], stored: np.ndarray, asked: list[Question], vectors: np.ndarray
) -> dict[str, Scores]:
    scores = {name: Scores() for name in BASELINES.values()}
    for question, vector in zip(asked, vectors, strict=True):
        lexical = bm25(chunks, question.text)
        semantic = [int(i) for i in np.argsort(stored @ vector)[::-1]]
        rankings = {
            BASELINES["semantic"]: semantic,
            BASELINES["full-text"]: lexical,
            BASELINES["hybrid, RRF"]: rrf(semantic, lexical),
        }
        for name, ranking in rankings.items():
            scores[name].add([chunks[i] for i in ranking[:K]], question.answer)
    return scores


# --- Tusk ---------------------------------------------------------------------------------------


async def _stored(services: Services, dataset: Dataset) -> tuple[list[str], np.ndarray]:
    """The dataset's chunks and their vectors, as Tusk stored them."""
    async with services.engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT content, embedding::text FROM document_segments "
                    "WHERE dataset_id = :d AND searchable ORDER BY document_id, position"
                ),
                {"d": dataset.id},
            )
        ).all()
    vectors = np.array([json.loads(row[1]) for row in rows], dtype=np.float32)
    unit: np.ndarray = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return [str(row[0]) for row in rows], unit


async def _search(
    services: Services, dataset: Dataset, query: str, settings: RetrievalSettings
) -> list[str]:
    async with services.transaction() as db:
        retriever = Retriever(db, services.models, dataset.workspace_id)
        records = await retriever.search([dataset], query, settings)
    return [str(record.segment["content"]) for record in records]


async def measure_quality(services: Services) -> Quality:
    bodies = {name: "\n\n".join(body) for name, body in paragraphs().items()}
    asked = questions()
    dataset = await new_dataset(services, "labelled")
    for name, body in bodies.items():
        await add_file(services, dataset, f"{name}.txt", body.encode(), ONE_CHUNK_PER_PARAGRAPH)
    await run_jobs(services)
    chunks, stored = await _stored(services, dataset)
    tusk = {name: Scores() for name in METHODS}
    seconds = []
    for question in asked:
        for name, settings in METHODS.items():
            with Stopwatch() as watch:
                found = await _search(services, dataset, question.text, settings)
            tusk[name].add(found, question.answer)
            if name == "semantic":
                seconds.append(watch.seconds)
    vectors = np.array(encoder().encode([q.text for q in asked]).vectors, dtype=np.float32)
    return Quality(
        len(bodies),
        len(chunks),
        len(asked),
        tusk,
        baselines(chunks, stored, asked, vectors),
        seconds,
    )
