"""Knowledge bases (Dify's datasets): create, list, read, update, delete, within one workspace."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import procrastinate
from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from tusk.db.models import Dataset, Document
from tusk.db.paging import Page, paginate
from tusk.errors import InvalidParam, NotFound, TuskError
from tusk.models.base import EmbeddingModel
from tusk.models.errors import UnknownModel
from tusk.models.registry import parse_model_name
from tusk.models.runtime import ModelRuntime
from tusk.queue import enqueue
from tusk.rag.settings import RetrievalSettings, SearchMethod, parse_retrieval

TECHNIQUES = ("high_quality", "economy")
PERMISSIONS = ("only_me", "all_team_members", "partial_members")
TRIGRAM = "trigram"  # full-text by pg_trgm similarity: substrings, Chinese, Japanese


class DatasetNameDuplicate(TuskError):
    code, status = "dataset_name_duplicate", 409


@dataclass(frozen=True)
class DatasetInput:
    name: str
    description: str = ""
    indexing_technique: str | None = "high_quality"
    permission: str = "only_me"
    embedding_model: str | None = None  # provider:model; the workspace's default when None
    retrieval_model: Mapping[str, Any] | None = None
    text_search_config: str = "simple"


@dataclass(frozen=True)
class DatasetStats:
    document_count: int = 0
    word_count: int = 0
    available_documents: int = 0


@dataclass
class Changes:
    name: str | None = None
    description: str | None = None
    permission: str | None = None
    retrieval_model: Mapping[str, Any] | None = None
    text_search_config: str | None = None


def full_model_name(dataset: Dataset) -> str | None:
    if not dataset.embedding_model or not dataset.embedding_model_provider:
        return None
    return f"{dataset.embedding_model_provider}:{dataset.embedding_model}"


def retrieval_of(dataset: Dataset) -> RetrievalSettings:
    default: SearchMethod = (
        "semantic_search" if dataset.indexing_technique == "high_quality" else "full_text_search"
    )
    return parse_retrieval(dataset.retrieval_model, default_method=default)


def _check_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= 40:
        raise InvalidParam("Name must be between 1 to 40 characters.", params="name")
    return name


def _check_choice(value: str, choices: tuple[str, ...], field_name: str) -> str:
    if value not in choices:
        raise InvalidParam(f"{field_name} must be one of {', '.join(choices)}", params=field_name)
    return value


async def _check_text_search(db: AsyncSession, config: str) -> str:
    if config == TRIGRAM:
        return config
    found = await db.execute(text("SELECT 1 FROM pg_ts_config WHERE cfgname = :c"), {"c": config})
    if found.first() is None:
        raise InvalidParam(
            f"unknown text search configuration {config!r} (try simple, english, or trigram)",
            params="text_search_config",
        )
    return config


async def _unique_name(
    db: AsyncSession, workspace_id: uuid.UUID, name: str, exclude: uuid.UUID | None = None
) -> None:
    query = select(Dataset.id).where(Dataset.workspace_id == workspace_id, Dataset.name == name)
    if exclude is not None:
        query = query.where(Dataset.id != exclude)
    if (await db.execute(query)).first() is not None:
        raise DatasetNameDuplicate(
            "The dataset name already exists. Please modify your dataset name."
        )


async def _embedding_dimensions(model: EmbeddingModel) -> int:
    """The model's vector size: declared, or learnt from one real call."""
    if model.dimensions:
        return model.dimensions
    return len((await model.embed(["dimension probe"], "query"))[0])


async def create_dataset(
    db: AsyncSession,
    models: ModelRuntime,
    queue: procrastinate.App,
    workspace_id: uuid.UUID,
    new: DatasetInput,
    created_by: uuid.UUID | None,
) -> Dataset:
    name = _check_name(new.name)
    if len(new.description) > 400:
        raise InvalidParam("Description cannot exceed 400 characters.", params="description")
    technique = _check_choice(
        new.indexing_technique or "high_quality", TECHNIQUES, "indexing_technique"
    )
    await _unique_name(db, workspace_id, name)
    dataset = Dataset(
        workspace_id=workspace_id,
        name=name,
        description=new.description,
        indexing_technique=technique,
        permission=_check_choice(new.permission, PERMISSIONS, "permission"),
        text_search_config=await _check_text_search(db, new.text_search_config),
        created_by=created_by,
        updated_by=created_by,
    )
    dataset.retrieval_model = parse_retrieval(new.retrieval_model).as_dify()
    if technique == "high_quality":
        await _attach_embedding_model(dataset, models, queue, db, new.embedding_model)
    else:
        dataset.retrieval_model = parse_retrieval(
            new.retrieval_model, default_method="full_text_search"
        ).as_dify()
    db.add(dataset)
    await db.flush()
    await db.refresh(dataset)
    return dataset


async def _attach_embedding_model(
    dataset: Dataset,
    models: ModelRuntime,
    queue: procrastinate.App,
    db: AsyncSession,
    name: str | None,
) -> None:
    try:
        model = await models.embedding(dataset.workspace_id, name)
    except UnknownModel as error:
        raise InvalidParam(f"embedding model: {error.message}", params="embedding_model") from None
    provider, model_name = parse_model_name(model.full_name)
    dataset.embedding_model_provider, dataset.embedding_model = provider, model_name
    dataset.embedding_dimensions = await _embedding_dimensions(model)
    await enqueue(
        db,
        queue,
        "rag:ensure_vector_index",
        options={"queueing_lock": f"vector-index:{model.full_name}"},
        model=model.full_name,
        dimensions=dataset.embedding_dimensions,
    )


async def get_dataset(db: AsyncSession, workspace_id: uuid.UUID, dataset_id: uuid.UUID) -> Dataset:
    query = select(Dataset).where(Dataset.id == dataset_id, Dataset.workspace_id == workspace_id)
    dataset = (await db.execute(query)).scalar_one_or_none()
    if dataset is None:
        raise NotFound("Dataset not found.")
    return dataset


async def stats(db: AsyncSession, dataset_ids: list[uuid.UUID]) -> dict[uuid.UUID, DatasetStats]:
    if not dataset_ids:
        return {}
    rows = await db.execute(
        select(
            Document.dataset_id,
            func.count(),
            func.coalesce(func.sum(Document.word_count), 0),
            func.count().filter(Document.enabled, Document.indexing_status == "completed"),
        )
        .where(Document.dataset_id.in_(dataset_ids), Document.archived.is_(False))
        .group_by(Document.dataset_id)
    )
    return {row[0]: DatasetStats(int(row[1]), int(row[2]), int(row[3])) for row in rows}


async def list_datasets(
    db: AsyncSession,
    workspace_id: uuid.UUID,
    *,
    page: int,
    limit: int,
    keyword: str | None = None,
) -> tuple[Page[Dataset], dict[uuid.UUID, DatasetStats]]:
    """A page of datasets, and the document counts of each."""
    query = select(Dataset).where(Dataset.workspace_id == workspace_id)
    if keyword:
        query = query.where(Dataset.name.icontains(keyword, autoescape=True))
    found = await paginate(db, query.order_by(Dataset.created_at.desc(), Dataset.id), page, limit)
    return found, await stats(db, [d.id for d in found.items])


async def update_dataset(
    db: AsyncSession, workspace_id: uuid.UUID, dataset_id: uuid.UUID, changes: Changes
) -> Dataset:
    dataset = await get_dataset(db, workspace_id, dataset_id)
    if changes.name is not None:
        dataset.name = _check_name(changes.name)
        await _unique_name(db, workspace_id, dataset.name, exclude=dataset.id)
    if changes.description is not None:
        dataset.description = changes.description
    if changes.permission is not None:
        dataset.permission = _check_choice(changes.permission, PERMISSIONS, "permission")
    if changes.retrieval_model is not None:
        default = retrieval_of(dataset).search_method
        dataset.retrieval_model = parse_retrieval(
            changes.retrieval_model, default_method=default
        ).as_dify()
    if changes.text_search_config not in (None, dataset.text_search_config):
        dataset.text_search_config = await _check_text_search(db, changes.text_search_config)
        await reindex_full_text(db, dataset)
    await db.flush()
    await db.refresh(dataset)
    return dataset


def tsvector_config(text_search_config: str) -> str:
    """The configuration of a dataset's tsvectors (trigram search keeps `simple` ones)."""
    return "simple" if text_search_config == TRIGRAM else text_search_config


async def reindex_full_text(db: AsyncSession, dataset: Dataset) -> None:
    await db.execute(
        text(
            "UPDATE document_segments SET content_tsv = to_tsvector(CAST(:config AS regconfig), "
            "content) WHERE dataset_id = :dataset"
        ),
        {"config": tsvector_config(dataset.text_search_config), "dataset": dataset.id},
    )


async def delete_dataset(db: AsyncSession, workspace_id: uuid.UUID, dataset_id: uuid.UUID) -> None:
    """The dataset with its documents and chunks (their rows cascade)."""
    query = delete(Dataset).where(Dataset.id == dataset_id, Dataset.workspace_id == workspace_id)
    if not (await db.execute(query.returning(Dataset.id))).first():
        raise NotFound("Dataset not found.")
