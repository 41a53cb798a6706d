"""Rows to the JSON shapes of Dify's APIs (timestamps as Unix seconds)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tusk.db.models import ApiKey, App, UploadFile


def ts(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def api_key(key: ApiKey, token: str | None = None) -> dict[str, Any]:
    """`token` is the whole key right after creation; afterwards only its hint is known."""
    return {
        "id": str(key.id),
        "type": key.type,
        "token": token or key.key_hint,
        "last_used_at": ts(key.last_used_at),
        "created_at": ts(key.created_at),
    }


def app(row: App) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "name": row.name,
        "description": row.description,
        "mode": row.mode,
        "icon_type": row.icon_type,
        "icon": row.icon,
        "icon_background": row.icon_background,
        "enable_site": row.enable_site,
        "enable_api": row.enable_api,
        "use_icon_as_answer_icon": row.use_icon_as_answer_icon,
        "max_active_requests": row.max_active_requests,
        "created_by": str(row.created_by) if row.created_by else None,
        "created_at": ts(row.created_at),
        "updated_at": ts(row.updated_at),
    }


def upload_file(row: UploadFile) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "name": row.name,
        "size": row.size,
        "extension": row.extension,
        "mime_type": row.mime_type,
        "created_by": str(row.created_by) if row.created_by else None,
        "created_at": ts(row.created_at),
        "preview_url": None,
        "source_url": row.source_url,
        "tenant_id": str(row.workspace_id),
    }
