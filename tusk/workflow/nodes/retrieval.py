"""Knowledge retrieval: the node's query searched in datasets of the run's workspace with Tusk's
retriever, the chunks given back as Dify's context items (the `result` an LLM node takes as its
context).

Where Tusk differs from Dify:
- "multiple" mode searches all the datasets in one pass with the node's settings: the search
  method the datasets share (hybrid when they differ, and with `weighted_score`), the node's
  top_k, score threshold, reranking model or weights. Dify searches each dataset with its own
  method, then merges.
- "single" mode needs no model: Dify lets a model route the query to one dataset; Tusk searches
  each dataset with that dataset's own retrieval settings and keeps the results of the dataset
  whose best chunk scores highest.
- `metadata_filtering_mode` "automatic" (a model writes the filters) filters nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tusk.db.models import Dataset, Document
from tusk.errors import TuskError
from tusk.rag.datasets import retrieval_of
from tusk.rag.retrieve import Record, Retriever
from tusk.rag.settings import MAX_TOP_K, RetrievalSettings
from tusk.workflow.graph import NodeSpec
from tusk.workflow.nodes.base import (
    Config,
    Node,
    NodeConfigError,
    NodeContext,
    NodeError,
    NodeResult,
    parse_config,
)
from tusk.workflow.nodes.prompts import template_reads
from tusk.workflow.providers import tusk_provider
from tusk.workflow.template import render
from tusk.workflow.values import to_text
from tusk.workflow.variables import Selector, VariablePool


class RerankingModel(Config):
    provider: str = ""
    model: str = ""


class VectorSetting(Config):
    vector_weight: float = 0.7


class KeywordSetting(Config):
    keyword_weight: float = 0.3


class Weights(Config):
    vector_setting: VectorSetting = VectorSetting()
    keyword_setting: KeywordSetting = KeywordSetting()


class MultipleRetrieval(Config):
    top_k: int = 4
    score_threshold: float | None = None
    reranking_enable: bool = False
    reranking_mode: str = "reranking_model"
    reranking_model: RerankingModel | None = None
    weights: Weights | None = None


class MetadataCondition(Config):
    name: str
    comparison_operator: str
    value: Any = None


class MetadataConditions(Config):
    logical_operator: Literal["and", "or"] | None = "and"
    conditions: list[MetadataCondition] | None = None


class RetrievalConfig(Config):
    query_variable_selector: list[str] = []
    dataset_ids: list[str] = []
    retrieval_mode: Literal["single", "multiple"] = "multiple"
    multiple_retrieval_config: MultipleRetrieval | None = None
    metadata_filtering_mode: Literal["disabled", "automatic", "manual"] | None = "disabled"
    metadata_filtering_conditions: MetadataConditions | None = None


def dataset_uuids(ids: Iterable[str]) -> list[uuid.UUID]:
    parsed, bad = [], []
    for value in ids:
        try:
            parsed.append(uuid.UUID(str(value)))
        except ValueError:
            bad.append(str(value))
    if bad:
        raise NodeConfigError(
            f"dataset_ids holds values that are not dataset ids: {', '.join(bad)}"
        )
    return parsed


def _rendered(value: Any, pool: VariablePool) -> Any:
    if isinstance(value, str):
        return render(value, pool)
    if isinstance(value, list):
        return [_rendered(item, pool) for item in value]
    return value


def metadata_filters(config: RetrievalConfig, pool: VariablePool) -> dict[str, Any]:
    """The manual filters, with `{{#node.var#}}` in their values rendered."""
    given = config.metadata_filtering_conditions
    if config.metadata_filtering_mode != "manual" or given is None or not given.conditions:
        return {}
    conditions = [
        {
            "name": c.name,
            "comparison_operator": c.comparison_operator,
            "value": _rendered(c.value, pool),
        }
        for c in given.conditions
    ]
    return {"logical_operator": given.logical_operator or "and", "conditions": conditions}


def _reranking_model(multiple: MultipleRetrieval) -> str | None:
    if not multiple.reranking_enable or multiple.reranking_mode != "reranking_model":
        return None
    model = multiple.reranking_model
    if model is None or not model.model:
        raise NodeError(
            "reranking is on but multiple_retrieval_config.reranking_model names no model: "
            "choose a rerank model or turn reranking off"
        )
    return f"{tusk_provider(model.provider)}:{model.model}"


def multiple_settings(
    multiple: MultipleRetrieval, datasets: Sequence[Dataset], filters: dict[str, Any]
) -> RetrievalSettings:
    """One search over every dataset, with the node's settings."""
    methods = {retrieval_of(dataset).search_method for dataset in datasets}
    method = methods.pop() if len(methods) == 1 else "hybrid_search"
    vector, keyword = 0.7, 0.3
    if multiple.reranking_mode == "weighted_score" and multiple.weights is not None:
        method = "hybrid_search"
        vector = multiple.weights.vector_setting.vector_weight
        keyword = multiple.weights.keyword_setting.keyword_weight
    return RetrievalSettings(
        search_method=method,
        top_k=max(1, min(multiple.top_k, MAX_TOP_K)),
        score_threshold=multiple.score_threshold or None,
        reranking_model=_reranking_model(multiple),
        vector_weight=vector,
        keyword_weight=keyword,
        filters=filters,
    )


def context_item(record: Record, position: int, document: Document | None) -> dict[str, Any]:
    """A retrieved chunk as one of Dify's context items."""
    segment = record.segment
    content = segment["content"]
    if segment.get("answer"):
        content = f"question:{content} \nanswer:{segment['answer']}"
    metadata: dict[str, Any] = {
        "_source": "knowledge",
        "position": position,
        "dataset_id": str(record.dataset_id),
        "dataset_name": record.dataset_name,
        "document_id": str(record.document_id),
        "document_name": record.document_name,
        "data_source_type": document.data_source_type if document else None,
        "segment_id": segment["id"],
        "retriever_from": "workflow",
        "score": record.score,
        "segment_hit_count": segment["hit_count"],
        "segment_word_count": segment["word_count"],
        "segment_position": segment["position"],
        "segment_index_node_hash": segment["index_node_hash"],
        "doc_metadata": document.doc_metadata if document else None,
    }
    if record.child_chunks:
        metadata["child_chunks"] = record.child_chunks
    return {"metadata": metadata, "title": record.document_name, "content": content}


class KnowledgeRetrievalNode(Node):
    type = "knowledge-retrieval"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.config = parse_config(RetrievalConfig, spec)
        self.dataset_ids = dataset_uuids(self.config.dataset_ids)

    def reads(self) -> Iterable[Selector]:
        conditions = self.config.metadata_filtering_conditions
        values = [c.value for c in (conditions.conditions or [])] if conditions else []
        texts = [v for v in values if isinstance(v, str)]
        return [s for s in [self.config.query_variable_selector, *template_reads(texts)] if s]

    def output_names(self) -> frozenset[str]:
        return frozenset({"result"})

    async def _datasets(self, db: AsyncSession, workspace_id: uuid.UUID) -> list[Dataset]:
        """The node's datasets, in its order; any that this workspace does not have is an error."""
        rows = await db.execute(
            select(Dataset).where(
                Dataset.id.in_(self.dataset_ids), Dataset.workspace_id == workspace_id
            )
        )
        found = {dataset.id: dataset for dataset in rows.scalars()}
        missing = [str(i) for i in self.dataset_ids if i not in found]
        if missing:
            raise NodeError(
                f"unknown dataset ids: {', '.join(missing)} (no such dataset in this workspace); "
                "choose the node's knowledge again"
            )
        return [found[i] for i in dict.fromkeys(self.dataset_ids)]

    async def _search(
        self, retriever: Retriever, datasets: list[Dataset], query: str, filters: dict[str, Any]
    ) -> list[Record]:
        if self.config.retrieval_mode == "multiple":
            multiple = self.config.multiple_retrieval_config or MultipleRetrieval()
            settings = multiple_settings(multiple, datasets, filters)
            return await retriever.search(datasets, query, settings)
        best: list[Record] = []
        for dataset in datasets:
            own = replace(retrieval_of(dataset), filters=filters)
            found = await retriever.search([dataset], query, own)
            if found and (not best or found[0].score > best[0].score):
                best = found
        return best

    async def run(self, ctx: NodeContext) -> NodeResult:
        query = to_text(ctx.pool.get(self.config.query_variable_selector)).strip()
        if not query:
            raise NodeError("the query is empty: the node's query variable holds no text")
        if not self.dataset_ids:
            return NodeResult(outputs={"result": []}, inputs={"query": query})
        filters = metadata_filters(self.config, ctx.pool)
        run = ctx.run
        async with run.resources.sessions() as db, db.begin():
            datasets = await self._datasets(db, run.workspace_id)
            retriever = Retriever(db, run.resources.models, run.workspace_id)
            try:
                records = await self._search(retriever, datasets, query, filters)
            except TuskError as exc:
                raise NodeError(f"knowledge retrieval failed: {exc.message}") from None
            documents = await _documents(db, [r.document_id for r in records])
        records.sort(key=lambda r: r.score, reverse=True)
        result = [
            context_item(record, position, documents.get(record.document_id))
            for position, record in enumerate(records, start=1)
        ]
        return NodeResult(outputs={"result": result}, inputs={"query": query})


async def _documents(db: AsyncSession, ids: list[uuid.UUID]) -> dict[uuid.UUID, Document]:
    if not ids:
        return {}
    rows = await db.execute(select(Document).where(Document.id.in_(ids)))
    return {document.id: document for document in rows.scalars()}
