"""Provider credentials per workspace, encrypted in PostgreSQL, never returned whole."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from tusk import crypto
from tusk.db.models import ProviderCredential
from tusk.models.base import CredentialField
from tusk.models.types import ModelInfo

PURPOSE = "provider-credentials"
ROW_NAME = "default"


@dataclass(frozen=True)
class StoredProvider:
    """A workspace's configuration of one provider (or of a custom endpoint)."""

    provider: str  # the name models are called by: "openai", or a custom endpoint's name
    base_provider: str  # the provider class that speaks to it
    credentials: dict[str, str]
    models: list[ModelInfo] = field(default_factory=list)


def _context(workspace_id: uuid.UUID, provider: str) -> str:
    return f"{workspace_id}/{provider}"


def seal(
    secret_key: str, workspace_id: uuid.UUID, provider: str, values: Mapping[str, str]
) -> bytes:
    key = crypto.derive_key(secret_key, PURPOSE)
    return crypto.encrypt(key, json.dumps(dict(values)).encode(), _context(workspace_id, provider))


def unseal(secret_key: str, workspace_id: uuid.UUID, provider: str, blob: bytes) -> dict[str, str]:
    key = crypto.derive_key(secret_key, PURPOSE)
    plain = crypto.decrypt(key, blob, _context(workspace_id, provider))
    values: dict[str, str] = json.loads(plain)
    return values


def model_infos(raw: Sequence[Mapping[str, Any]]) -> list[ModelInfo]:
    return [ModelInfo(str(m["model"]), m["model_type"]) for m in raw]


async def save(
    db: AsyncSession, secret_key: str, workspace_id: uuid.UUID, stored: StoredProvider
) -> None:
    values = {
        "workspace_id": workspace_id,
        "provider": stored.provider,
        "name": ROW_NAME,
        "base_provider": stored.base_provider,
        "models": [{"model": m.name, "model_type": m.type} for m in stored.models],
        "encrypted_config": seal(secret_key, workspace_id, stored.provider, stored.credentials),
    }
    statement = insert(ProviderCredential).values(**values)
    update = {k: statement.excluded[k] for k in ("base_provider", "models", "encrypted_config")}
    await db.execute(
        statement.on_conflict_do_update(
            index_elements=["workspace_id", "provider", "name"], set_=update
        )
    )


async def load_all(
    db: AsyncSession, secret_key: str, workspace_id: uuid.UUID
) -> dict[str, StoredProvider]:
    rows = await db.execute(
        select(ProviderCredential).where(ProviderCredential.workspace_id == workspace_id)
    )
    return {
        row.provider: StoredProvider(
            row.provider,
            row.base_provider or row.provider,
            unseal(secret_key, workspace_id, row.provider, row.encrypted_config),
            model_infos(row.models),
        )
        for row in rows.scalars()
    }


async def remove(db: AsyncSession, workspace_id: uuid.UUID, provider: str) -> bool:
    query = delete(ProviderCredential).where(
        ProviderCredential.workspace_id == workspace_id, ProviderCredential.provider == provider
    )
    return (await db.execute(query.returning(ProviderCredential.id))).first() is not None


def masked(values: Mapping[str, str], fields: Sequence[CredentialField]) -> dict[str, str]:
    secret = {f.name for f in fields if f.secret}
    return {k: crypto.mask(v) if k in secret else v for k, v in values.items()}


class RotationFailed(Exception):
    pass


async def rotate(db: AsyncSession, old_key: str, new_key: str) -> int:
    """Re-encrypt every workspace's credentials under `new_key`, in the caller's transaction."""
    rows = (await db.execute(select(ProviderCredential).with_for_update())).scalars().all()
    for row in rows:
        try:
            values = unseal(old_key, row.workspace_id, row.provider, row.encrypted_config)
        except crypto.DecryptionFailed:
            raise RotationFailed(
                f"the credentials of {row.provider!r} in workspace {row.workspace_id} do not "
                "decrypt with the old key; nothing was changed"
            ) from None
        row.encrypted_config = seal(new_key, row.workspace_id, row.provider, values)
    return len(rows)
