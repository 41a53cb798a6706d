"""Synthetic chunks for the retrieval benchmark, and what their embeddings cost to store.

`rows` chunks of one high-quality dataset of the local model: text made of sentences drawn from
the labelled documents (real English, so that full-text search meets common and rare words),
and 384-dimensional unit vectors clustered around topics (embedding that many chunks with the
model would take longer than the whole benchmark). They are bulk-loaded: a binary COPY into a
staging table, then one INSERT ... SELECT that writes `document_segments` rows as Tusk's
indexing does, with their tsvectors computed by the server.
"""

from __future__ import annotations

import json
import re
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql

from bench.common import Stopwatch
from tusk.models.providers.local import DIMENSIONS
from tusk.rag.indexes import ensure_vector_index, index_name

DATA = Path(__file__).resolve().parent / "knowledge_data"
TOPICS = 200
NOISE = 1.0  # |noise| / |centre|: cosine about 0.7 to its topic's centre
SENTENCES_PER_CHUNK = 5
DOCUMENTS = 20
SEED = 20261125


def paragraphs() -> dict[str, list[str]]:
    """The labelled documents: name -> paragraphs."""
    found: dict[str, list[str]] = json.loads((DATA / "documents.json").read_text())["documents"]
    return found


def sentences() -> list[str]:
    return [
        sentence
        for body in paragraphs().values()
        for paragraph in body
        for sentence in re.split(r"(?<=[.!?])\s+", paragraph)
    ]


def _unit(matrix: np.ndarray) -> np.ndarray:
    normalised: np.ndarray = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    return normalised


class Corpus:
    """Deterministic text and vectors: the same seed gives the same chunks and queries."""

    def __init__(self, seed: int = SEED) -> None:
        self.rng = np.random.default_rng(seed)
        self.centres = _unit(self.rng.standard_normal((TOPICS, DIMENSIONS)))
        self.sentences = np.array(sentences(), dtype=object)

    def vectors(self, count: int) -> np.ndarray:
        topics = self.rng.integers(0, TOPICS, count)
        noise = _unit(self.rng.standard_normal((count, DIMENSIONS))) * NOISE
        unit: np.ndarray = _unit(self.centres[topics] + noise).astype(np.float32)
        return unit

    def texts(self, count: int) -> list[str]:
        picked = self.rng.integers(0, len(self.sentences), (count, SENTENCES_PER_CHUNK))
        return [" ".join(row) for row in self.sentences[picked]]

    def queries(self, count: int) -> dict[str, list[float]]:
        """`count` distinct queries: three words of a sentence, and a vector near a topic."""
        found: dict[str, list[float]] = {}
        while len(found) < count:
            sentence = self.sentences[self.rng.integers(0, len(self.sentences))]
            words = [w for w in re.findall(r"[A-Za-z]+", sentence) if len(w) > 3]
            if len(words) < 3:
                continue
            picked = self.rng.choice(words, size=3, replace=False)
            text = " ".join(str(word).lower() for word in picked)
            found.setdefault(text, [float(x) for x in self.vectors(1)[0]])
        return found


# --- loading ------------------------------------------------------------------------------------

STAGE = (
    "CREATE TEMP TABLE bench_stage (n int, document_id uuid, content text, "
    f"embedding halfvec({DIMENSIONS}))"
)
INSERT = """
    INSERT INTO document_segments (
        workspace_id, dataset_id, document_id, position, content, word_count, tokens,
        index_node_id, status, generation, searchable, embedding_model, embedding, content_tsv,
        kind, indexing_at, completed_at)
    SELECT d.workspace_id, d.dataset_id, d.id, s.n, s.content, length(s.content), 100,
        s.n::text, 'completed', 1, true, %(model)s, s.embedding,
        to_tsvector('simple', s.content), 'chunk', now(), now()
    FROM bench_stage s JOIN documents d ON d.id = s.document_id
"""
DOCUMENTS_SQL = """
    INSERT INTO documents (workspace_id, dataset_id, position, name, batch, data_source_type,
        indexing_status, generation, completed_at)
    SELECT %(w)s, %(d)s, k, 'synthetic ' || k, 'bench', 'upload_file', 'completed', 1, now()
    FROM generate_series(1, %(n)s) k RETURNING id
"""
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_VECTOR_HEAD = struct.pack(">iHH", 4 + 2 * DIMENSIONS, DIMENSIONS, 0)


def copy_row(n: int, document: uuid.UUID, content: str, vector: np.ndarray) -> bytes:
    """One row of the binary COPY: 4 fields; a halfvec is its dimensions, 0, big-endian
    float16s."""
    text = content.encode()
    return b"".join(
        [
            struct.pack(">hii", 4, 4, n),
            struct.pack(">i", 16),
            document.bytes,
            struct.pack(">i", len(text)),
            text,
            _VECTOR_HEAD,
            vector.astype(">f2").tobytes(),
        ]
    )


def load(
    conninfo: str, rows: int, model: str, workspace: uuid.UUID, dataset: uuid.UUID
) -> tuple[float, Corpus]:
    """Fill the dataset with `rows` chunks; the seconds it took, and the corpus (for queries)."""
    corpus = Corpus()
    with psycopg.connect(conninfo, autocommit=True) as conn, Stopwatch() as watch:
        found = conn.execute(DOCUMENTS_SQL, {"w": workspace, "d": dataset, "n": DOCUMENTS})
        documents = [row[0] for row in found.fetchall()]
        conn.execute(STAGE)
        with conn.cursor() as cur, cur.copy("COPY bench_stage FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(_COPY_HEADER)
            for start in range(0, rows, 5_000):
                size = min(5_000, rows - start)
                texts, vectors = corpus.texts(size), corpus.vectors(size)
                for i in range(size):
                    n = start + i
                    copy.write(copy_row(n, documents[n % DOCUMENTS], texts[i], vectors[i]))
            copy.write(struct.pack(">h", -1))
        conn.execute(INSERT, {"model": model})
        conn.execute("VACUUM (ANALYZE) document_segments")
    return watch.seconds, corpus


# --- halfvec against vector -----------------------------------------------------------------------


@dataclass(frozen=True)
class Storage:
    kind: str
    column_bytes: int  # the embeddings, summed over the chunks
    index_bytes: int
    index_seconds: float


COLUMN_SIZES = (
    "SELECT sum(pg_column_size(embedding)), sum(pg_column_size(embedding::vector)) "
    "FROM document_segments WHERE embedding_model = %s"
)


def _vector_index(model: str) -> sql.Composed:
    """Tusk's index definition, on full-precision `vector` instead of `halfvec`."""
    return sql.SQL(
        "CREATE INDEX bench_hnsw_vector ON document_segments USING hnsw "
        "((embedding::vector({})) vector_cosine_ops) WHERE embedding_model = {}"
    ).format(sql.Literal(DIMENSIONS), sql.Literal(model))


def _index_size(conn: psycopg.Connection, name: str) -> int:
    row = conn.execute("SELECT pg_relation_size(%s::regclass)", [name]).fetchone()
    assert row is not None
    return int(row[0])


async def build_and_compare(conninfo: str, model: str) -> list[Storage]:
    """Tusk's HNSW index (`ensure_vector_index`: halfvec, CONCURRENTLY, kept for the searches),
    then the same index on `vector(384)`, built, measured and dropped."""
    with Stopwatch() as halfvec_build:
        await ensure_vector_index(conninfo, model, DIMENSIONS)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(COLUMN_SIZES, [model]).fetchone()
        assert row is not None
        halfvec = Storage(
            f"`halfvec({DIMENSIONS})` (Tusk)",
            int(row[0]),
            _index_size(conn, index_name(model, DIMENSIONS)),
            halfvec_build.seconds,
        )
        with Stopwatch() as vector_build:
            conn.execute(_vector_index(model))
        vector = Storage(
            f"`vector({DIMENSIONS})`",
            int(row[1]),
            _index_size(conn, "bench_hnsw_vector"),
            vector_build.seconds,
        )
        conn.execute("DROP INDEX bench_hnsw_vector")
        conn.execute("ANALYZE document_segments")
    return [halfvec, vector]
