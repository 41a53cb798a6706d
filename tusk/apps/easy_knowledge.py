"""Knowledge for chat and completion apps (`dataset_configs`): the query searched in the app's
datasets with Tusk's retriever; the chunks found become the prompt's context and, when the app
shows its sources, Dify's `retriever_resources` of the message.

As in the knowledge-retrieval workflow node, "single" mode needs no model: Dify lets the app's
model pick one dataset; Tusk searches each with its own settings and keeps the dataset whose best
chunk scores highest. Datasets that no longer exist are skipped, as Dify does."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tusk.apps.easy_config import DatasetConfigs
from tusk.db.models import App, Dataset, Document
from tusk.models.runtime import ModelRuntime
from tusk.rag.datasets import retrieval_of
from tusk.rag.retrieve import MAX_QUERY_CHARS, Record, Retriever
from tusk.workflow.nodes.prompts import context_text
from tusk.workflow.nodes.retrieval import (
    MultipleRetrieval,
    RerankingModel,
    context_item,
    multiple_settings,
)


@dataclass(frozen=True)
class Knowledge:
    context: str | None = None  # None when nothing was found
    resources: list[dict[str, Any]] = field(default_factory=list)


def _uuids(ids: Sequence[str]) -> list[uuid.UUID]:
    found = []
    for value in ids:
        try:
            found.append(uuid.UUID(value))
        except ValueError:
            continue
    return list(dict.fromkeys(found))


def multiple_of(configs: DatasetConfigs) -> MultipleRetrieval:
    reranking = configs.reranking_model
    named = reranking is not None and bool(reranking.reranking_model_name)
    return MultipleRetrieval(
        top_k=configs.top_k,
        score_threshold=configs.score_threshold if configs.score_threshold_enabled else None,
        reranking_enable=configs.reranking_enabled and named,
        reranking_mode=configs.reranking_mode,
        reranking_model=RerankingModel(
            provider=reranking.reranking_provider_name, model=reranking.reranking_model_name
        )
        if reranking is not None
        else None,
        weights=configs.weights,
    )


async def _datasets(db: AsyncSession, app: App, configs: DatasetConfigs) -> list[Dataset]:
    ids = _uuids(configs.dataset_ids())
    if not ids:
        return []
    rows = await db.execute(
        select(Dataset).where(Dataset.id.in_(ids), Dataset.workspace_id == app.workspace_id)
    )
    found = {dataset.id: dataset for dataset in rows.scalars()}
    return [found[i] for i in ids if i in found]


async def _search(
    retriever: Retriever, datasets: list[Dataset], query: str, configs: DatasetConfigs
) -> list[Record]:
    if configs.retrieval_model == "multiple":
        settings = multiple_settings(multiple_of(configs), datasets, {})
        return await retriever.search(datasets, query, settings)
    best: list[Record] = []
    for dataset in datasets:
        found = await retriever.search([dataset], query, retrieval_of(dataset))
        if found and (not best or found[0].score > best[0].score):
            best = found
    return best


async def _documents(db: AsyncSession, ids: list[uuid.UUID]) -> dict[uuid.UUID, Document]:
    if not ids:
        return {}
    rows = await db.execute(select(Document).where(Document.id.in_(ids)))
    return {document.id: document for document in rows.scalars()}


def resource(item: dict[str, Any]) -> dict[str, Any]:
    """A context item as one of Dify's retriever resources (the citation of a message)."""
    meta = item["metadata"]
    return {
        "position": meta["position"],
        "dataset_id": meta["dataset_id"],
        "dataset_name": meta["dataset_name"],
        "document_id": meta["document_id"],
        "document_name": meta["document_name"],
        "data_source_type": meta["data_source_type"],
        "segment_id": meta["segment_id"],
        "retriever_from": "api",
        "score": meta["score"],
        "hit_count": meta["segment_hit_count"],
        "word_count": meta["segment_word_count"],
        "segment_position": meta["segment_position"],
        "index_node_hash": meta["segment_index_node_hash"],
        "content": item["content"],
        "page": None,
        "doc_metadata": meta["doc_metadata"],
        "title": item["title"],
        "files": None,
        "summary": None,
    }


async def retrieve(
    sessions: async_sessionmaker[AsyncSession],
    models: ModelRuntime,
    app: App,
    configs: DatasetConfigs,
    query: str,
) -> Knowledge:
    """The context and citations for `query`; nothing when the app has no usable dataset."""
    query = query.strip()[:MAX_QUERY_CHARS]
    if not query or not configs.dataset_ids():
        return Knowledge()
    async with sessions() as db, db.begin():
        datasets = await _datasets(db, app, configs)
        if not datasets:
            return Knowledge()
        records = await _search(Retriever(db, models, app.workspace_id), datasets, query, configs)
        documents = await _documents(db, [r.document_id for r in records])
    records.sort(key=lambda r: r.score, reverse=True)
    items = [
        context_item(record, position, documents.get(record.document_id))
        for position, record in enumerate(records, start=1)
    ]
    if not items:
        return Knowledge()
    return Knowledge(context_text(items), [resource(item) for item in items])
