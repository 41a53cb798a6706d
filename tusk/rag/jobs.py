"""The knowledge engine's jobs, registered as the `rag` blueprint (task names `rag:…`)."""

from __future__ import annotations

import uuid

import procrastinate
from procrastinate.job_context import JobContext

from tusk.models.runtime import ModelRuntime
from tusk.queue import worker_engine
from tusk.rag.indexes import ensure_vector_index
from tusk.rag.indexing import IndexingRun
from tusk.storage import Storage

blueprint = procrastinate.Blueprint()
# Retries are for the embedding model being rate-limited or down; written batches are kept.
INDEX_RETRY = procrastinate.RetryStrategy(max_attempts=4, exponential_wait=3)


def _models(context: JobContext) -> ModelRuntime:
    models = context.additional_context["models"]
    assert isinstance(models, ModelRuntime)
    return models


def _storage(context: JobContext) -> Storage:
    store = context.additional_context["storage"]
    assert isinstance(store, Storage)
    return store


@blueprint.task(name="index_document", pass_context=True, retry=INDEX_RETRY)
async def index_document(context: JobContext, document_id: str) -> str:
    job = context.job
    last = job.attempts >= (INDEX_RETRY.max_attempts or 0)
    run = IndexingRun(worker_engine(context), _models(context), _storage(context))
    return await run.run(uuid.UUID(document_id), last_attempt=last)


@blueprint.task(
    name="ensure_vector_index",
    pass_context=True,
    retry=procrastinate.RetryStrategy(max_attempts=3, wait=5),
)
async def build_vector_index(context: JobContext, model: str, dimensions: int) -> bool:
    conninfo = context.additional_context["conninfo"]
    assert isinstance(conninfo, str)
    return await ensure_vector_index(conninfo, model, dimensions)
