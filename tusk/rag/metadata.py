"""Metadata fields of a dataset (Dify's `doc_metadata`) and the values documents give them.

A document's values live in `documents.doc_metadata` and are copied to its chunks, so that
retrieval filters on them without a join.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from tusk.db.models import Dataset, Document
from tusk.errors import InvalidParam, NotFound
from tusk.rag.documents import get_document

TYPES = ("string", "number", "time")
NAME = re.compile(r"^[a-z][a-z0-9_]{0,254}$")


def fields_of(dataset: Dataset) -> list[dict[str, str]]:
    return list(dataset.metadata_fields or [])


def _field(dataset: Dataset, field_id: str) -> dict[str, str]:
    found = next((f for f in fields_of(dataset) if f["id"] == field_id), None)
    if found is None:
        raise NotFound("Metadata field not found.")
    return found


def _check_name(dataset: Dataset, name: str, exclude: str | None = None) -> str:
    if not NAME.match(name):
        raise InvalidParam(
            "a metadata name is lower-case letters, digits and underscores, starting with a letter",
            params="name",
        )
    if any(f["name"] == name and f["id"] != exclude for f in fields_of(dataset)):
        raise InvalidParam(f"the metadata field {name!r} already exists", params="name")
    return name


async def field_counts(db: AsyncSession, dataset: Dataset) -> list[dict[str, Any]]:
    """The fields, each with how many documents give it a value."""
    rows = await db.execute(
        text(
            "SELECT key, count(*) FROM documents, jsonb_object_keys(doc_metadata) AS key "
            "WHERE dataset_id = :ds GROUP BY key"
        ),
        {"ds": dataset.id},
    )
    counts = {str(row[0]): int(row[1]) for row in rows}
    return [{**f, "count": counts.get(f["name"], 0)} for f in fields_of(dataset)]


async def add_field(db: AsyncSession, dataset: Dataset, name: str, type_: str) -> dict[str, str]:
    if type_ not in TYPES:
        raise InvalidParam(f"type must be one of {', '.join(TYPES)}", params="type")
    field = {"id": str(uuid.uuid4()), "name": _check_name(dataset, name), "type": type_}
    dataset.metadata_fields = [*fields_of(dataset), field]
    await db.flush()
    return field


async def _rewrite_values(
    db: AsyncSession, dataset: Dataset, sql_value: str, params: dict[str, Any]
) -> None:
    """Apply one jsonb expression to the values of every document and chunk of the dataset."""
    for table in ("documents", "document_segments"):
        await db.execute(
            text(f"UPDATE {table} SET doc_metadata = {sql_value} WHERE dataset_id = :ds"),  # noqa: S608
            {**params, "ds": dataset.id},
        )


async def rename_field(
    db: AsyncSession, dataset: Dataset, field_id: str, name: str
) -> dict[str, str]:
    field = _field(dataset, field_id)
    old, new = field["name"], _check_name(dataset, name, exclude=field_id)
    dataset.metadata_fields = [
        {**f, "name": new} if f["id"] == field_id else f for f in fields_of(dataset)
    ]
    await _rewrite_values(
        db,
        dataset,
        "CASE WHEN doc_metadata ? :old THEN (doc_metadata - CAST(:old AS text)) || "
        "jsonb_build_object(CAST(:new AS text), doc_metadata -> :old) ELSE doc_metadata END",
        {"old": old, "new": new},
    )
    await db.flush()
    return {**field, "name": new}


async def delete_field(db: AsyncSession, dataset: Dataset, field_id: str) -> None:
    field = _field(dataset, field_id)
    dataset.metadata_fields = [f for f in fields_of(dataset) if f["id"] != field_id]
    await _rewrite_values(
        db, dataset, "doc_metadata - CAST(:name AS text)", {"name": field["name"]}
    )
    await db.flush()


def _value(field: Mapping[str, str], value: Any) -> Any:
    if value is None:
        return None
    if field["type"] == "number":
        try:
            return float(value) if not isinstance(value, int) else value
        except (TypeError, ValueError):
            raise InvalidParam(f"{field['name']} takes a number", params="metadata_list") from None
    if field["type"] == "time":
        try:
            datetime.fromisoformat(str(value))
        except ValueError:
            raise InvalidParam(
                f"{field['name']} takes an ISO 8601 time", params="metadata_list"
            ) from None
    return str(value)


def document_values(dataset: Dataset, metadata_list: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """{name: value} from Dify's [{id, name, value}], each checked against its field's type."""
    by_name = {f["name"]: f for f in fields_of(dataset)}
    by_id = {f["id"]: f for f in fields_of(dataset)}
    values: dict[str, Any] = {}
    for item in metadata_list:
        field = by_id.get(str(item.get("id"))) or by_name.get(str(item.get("name")))
        if field is None:
            raise InvalidParam(
                f"no metadata field {item.get('name') or item.get('id')!r}", params="metadata_list"
            )
        values[field["name"]] = _value(field, item.get("value"))
    return values


async def set_document_values(
    db: AsyncSession,
    dataset: Dataset,
    document_id: uuid.UUID,
    values: Mapping[str, Any],
    *,
    partial: bool,
) -> Document:
    document = await get_document(db, dataset, document_id, for_update=True)
    merged = {**(document.doc_metadata or {}), **values} if partial else dict(values)
    document.doc_metadata = merged
    await db.execute(
        text(
            "UPDATE document_segments SET doc_metadata = CAST(:m AS jsonb) WHERE document_id = :d"
        ),
        {"m": json.dumps(merged), "d": document.id},
    )
    await db.flush()
    return document
