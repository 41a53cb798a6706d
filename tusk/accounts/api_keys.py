"""API keys: `app-…` for one app, `dataset-…` for a workspace's knowledge API.

A key is shown once, when created; only its SHA-256 is stored (keys are long and random, so
a fast hash is enough), with a hint such as `app-…x7Qz` to tell keys apart.
"""

from __future__ import annotations

import secrets
import string
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import ColumnElement, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tusk.accounts.tokens import sha256
from tusk.db.models import ApiKey
from tusk.errors import MaxKeysExceeded, NotFound, Unauthorized

KeyType = Literal["app", "dataset"]
PREFIXES: dict[KeyType, str] = {"app": "app-", "dataset": "dataset-"}
MAX_KEYS_PER_RESOURCE = 10
TOKEN_LENGTH = 24
_ALPHABET = string.ascii_letters + string.digits
# last_used_at is rewritten at most this often, so reads do not all become writes.
TOUCH_INTERVAL = timedelta(minutes=1)


@dataclass(frozen=True)
class NewKey:
    key: ApiKey
    token: str  # the only time the whole key exists outside its owner's hands


def generate_token(kind: KeyType) -> str:
    return PREFIXES[kind] + "".join(secrets.choice(_ALPHABET) for _ in range(TOKEN_LENGTH))


def hint(token: str) -> str:
    prefix = next((p for p in PREFIXES.values() if token.startswith(p)), "")
    return f"{prefix}…{token[-4:]}"


def _scope(
    workspace_id: uuid.UUID, kind: KeyType, app_id: uuid.UUID | None
) -> list[ColumnElement[bool]]:
    conditions = [ApiKey.workspace_id == workspace_id, ApiKey.type == kind]
    if kind == "app":
        conditions.append(ApiKey.app_id == app_id)
    return conditions


async def list_keys(
    db: AsyncSession, workspace_id: uuid.UUID, kind: KeyType, app_id: uuid.UUID | None = None
) -> list[ApiKey]:
    query = select(ApiKey).where(*_scope(workspace_id, kind, app_id)).order_by(ApiKey.created_at)
    return list((await db.execute(query)).scalars())


async def create_key(
    db: AsyncSession,
    workspace_id: uuid.UUID,
    kind: KeyType,
    *,
    app_id: uuid.UUID | None = None,
    created_by: uuid.UUID | None = None,
) -> NewKey:
    count_query = (
        select(func.count()).select_from(ApiKey).where(*_scope(workspace_id, kind, app_id))
    )
    if (await db.execute(count_query)).scalar_one() >= MAX_KEYS_PER_RESOURCE:
        raise MaxKeysExceeded(
            f"Cannot create more than {MAX_KEYS_PER_RESOURCE} API keys for this resource."
        )
    token = generate_token(kind)
    key = ApiKey(
        workspace_id=workspace_id,
        app_id=app_id,
        type=kind,
        key_hash=sha256(token),
        key_hint=hint(token),
        created_by=created_by,
    )
    db.add(key)
    await db.flush()
    await db.refresh(key)
    return NewKey(key, token)


async def revoke_key(
    db: AsyncSession,
    workspace_id: uuid.UUID,
    key_id: uuid.UUID,
    kind: KeyType,
    app_id: uuid.UUID | None = None,
) -> None:
    query = delete(ApiKey).where(ApiKey.id == key_id, *_scope(workspace_id, kind, app_id))
    if not (await db.execute(query.returning(ApiKey.id))).first():
        raise NotFound("API key not found.")


async def resolve_key(db: AsyncSession, token: str, kind: KeyType) -> ApiKey:
    """The key a bearer token stands for; every later query is scoped by its workspace."""
    query = select(ApiKey).where(ApiKey.key_hash == sha256(token), ApiKey.type == kind)
    key = (await db.execute(query)).scalar_one_or_none()
    if key is None:
        raise Unauthorized("Access token is invalid.")
    now = datetime.now(UTC)
    if key.last_used_at is None or now - key.last_used_at > TOUCH_INTERVAL:
        key.last_used_at = now
    return key
