"""Knowledge-base search: the workspace's datasets searched with the retriever that serves the
Knowledge API and the knowledge retrieval node. One dataset is searched with its own retrieval
settings; several with their shared search method (hybrid when they differ)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tusk.db.models import Dataset
from tusk.rag.datasets import retrieval_of
from tusk.rag.retrieve import Record, Retriever
from tusk.rag.settings import MAX_TOP_K, RetrievalSettings
from tusk.tools.base import Tool, ToolContext, ToolError, ToolProvider, ToolResult, object_schema


def dataset_ids(values: Any) -> list[uuid.UUID]:
    if isinstance(values, str):
        values = [v for v in values.replace(",", " ").split() if v]
    parsed = []
    for value in values or []:
        try:
            parsed.append(uuid.UUID(str(value)))
        except ValueError:
            raise ToolError(f"{value!r} is not a dataset id") from None
    return parsed


async def workspace_datasets(
    db: AsyncSession, workspace_id: uuid.UUID, ids: list[uuid.UUID]
) -> list[Dataset]:
    query = select(Dataset).where(Dataset.workspace_id == workspace_id)
    if ids:
        query = query.where(Dataset.id.in_(ids))
    found = list((await db.execute(query.order_by(Dataset.created_at))).scalars())
    missing = set(ids) - {d.id for d in found}
    if missing:
        raise ToolError(f"no dataset {', '.join(map(str, missing))} in this workspace")
    return found


def search_settings(datasets: Sequence[Dataset], top_k: int | None) -> RetrievalSettings:
    if len(datasets) == 1:
        settings = retrieval_of(datasets[0])
    else:
        methods = {retrieval_of(d).search_method for d in datasets}
        settings = RetrievalSettings(
            search_method=methods.pop() if len(methods) == 1 else "hybrid_search"
        )
    return replace(settings, top_k=max(1, min(top_k or settings.top_k, MAX_TOP_K)))


def as_result(records: Sequence[Record]) -> ToolResult:
    if not records:
        return ToolResult(text="No relevant passages were found.", json=[{"results": []}])
    items = [
        {
            "content": r.segment["content"],
            "score": round(r.score, 4),
            "document_name": r.document_name,
            "dataset_name": r.dataset_name,
        }
        for r in records
    ]
    text = "\n\n".join(
        f"[{n}] {item['document_name']} (score {item['score']}):\n{item['content']}"
        for n, item in enumerate(items, start=1)
    )
    return ToolResult(text=text, json=[{"results": items}])


class SearchKnowledge(Tool):
    name = "search_knowledge"
    label = "Knowledge Search"
    description = "Search the workspace's knowledge bases for passages relevant to a query."
    parameters = object_schema(
        {
            "query": {"type": "string", "description": "what to search for"},
            "dataset_ids": {
                "type": "array",
                "items": {"type": "string"},
                "description": "datasets to search (all of the workspace's when empty)",
            },
            "top_k": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K},
        },
        ["query"],
    )

    async def invoke(self, params: dict[str, Any], context: ToolContext) -> ToolResult:
        ids = dataset_ids(params.get("dataset_ids"))
        resources = context.resources
        async with resources.sessions.begin() as db:
            datasets = await workspace_datasets(db, context.workspace_id, ids)
            if not datasets:
                raise ToolError("this workspace has no knowledge base to search")
            retriever = Retriever(db, resources.models, context.workspace_id)
            settings = search_settings(datasets, params.get("top_k"))
            records = await retriever.search(datasets, str(params["query"]), settings)
        return as_result(records)


class KnowledgeProvider(ToolProvider):
    name = "knowledge"
    label = "Knowledge"
    description = "Search knowledge bases."

    def tools(self) -> Sequence[Tool]:
        return (SearchKnowledge(),)
