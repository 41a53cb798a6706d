"""One HNSW index (cosine, on `halfvec`) per embedding model in use.

Embeddings are stored as `halfvec`: half the size of `vector` in the table and in the index,
and indexable up to 4,000 dimensions (`vector` stops at 2,000, below OpenAI's 3,072). The
index is partial (`WHERE embedding_model = …`), so each model's vectors form their own graph,
and it is built CONCURRENTLY by a job, so that writes go on while it builds.
"""

from __future__ import annotations

import hashlib

import psycopg
from psycopg import sql


def index_name(model: str, dimensions: int) -> str:
    digest = hashlib.sha1(model.encode()).hexdigest()[:10]  # noqa: S324 - a name, not a secret
    return f"ix_document_segments_hnsw_{dimensions}_{digest}"


def vector_expression(dimensions: int) -> sql.Composed:
    """The indexed expression; a query must use the same one to use the index."""
    return sql.SQL("(embedding::halfvec({}))").format(sql.Literal(dimensions))


def create_index_sql(model: str, dimensions: int) -> sql.Composed:
    return sql.SQL(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON document_segments "
        "USING hnsw ({expression} halfvec_cosine_ops) WHERE embedding_model = {model}"
    ).format(
        name=sql.Identifier(index_name(model, dimensions)),
        expression=vector_expression(dimensions),
        model=sql.Literal(model),
    )


async def ensure_vector_index(conninfo: str, model: str, dimensions: int) -> bool:
    """Build the model's index unless a valid one exists; True if it was built now."""
    name = index_name(model, dimensions)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        row = await (
            await conn.execute(
                "SELECT i.indisvalid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid "
                "WHERE c.relname = %s",
                [name],
            )
        ).fetchone()
        if row is not None and row[0]:
            return False
        if row is not None:  # a build that was interrupted leaves an invalid index behind
            await conn.execute(sql.SQL("DROP INDEX CONCURRENTLY {}").format(sql.Identifier(name)))
        await conn.execute(create_index_sql(model, dimensions))
        return True
