"""Workflows of an app: one editable draft and immutable published versions, as Dify keeps them.
Secret environment variables are encrypted at rest and shown masked; everything is scoped to
its workspace."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tusk import crypto
from tusk.db.models import App, Workflow
from tusk.db.paging import Page, paginate
from tusk.errors import InvalidParam, NotFound, TuskError
from tusk.models.credentials import RotationFailed
from tusk.workflow.graph import GraphError
from tusk.workflow.plan import Mode, Plan, Problem, build_plan
from tusk.workflow.validate import validate

DRAFT = "draft"
HIDDEN = "[__HIDDEN__]"  # what the console sees, and sends back, for a secret's value
ENCRYPTED = "tusk:enc:"
WORKFLOW_MODES = {"workflow": "workflow", "advanced-chat": "chat"}


class DraftNotSynced(TuskError):
    code, status = "draft_workflow_not_sync", 400


class WorkflowInvalid(TuskError):
    code, status = "invalid_param", 400


@dataclass(frozen=True)
class DraftContent:
    graph: Mapping[str, Any]
    features: Mapping[str, Any]
    environment_variables: Sequence[Mapping[str, Any]] = ()
    conversation_variables: Sequence[Mapping[str, Any]] = ()


def engine_mode(app: App) -> Mode:
    try:
        return "chat" if WORKFLOW_MODES[app.mode] == "chat" else "workflow"
    except KeyError:
        raise InvalidParam(f"a {app.mode} app has no workflow.", params="app_id") from None


def content_hash(graph: Mapping[str, Any], features: Mapping[str, Any]) -> str:
    """Dify's `unique_hash`: lets the console notice that someone else saved the draft."""
    text = json.dumps({"graph": graph, "features": features}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def plan_of(workflow: Workflow, mode: Mode) -> Plan:
    try:
        return build_plan(workflow.graph, mode)
    except GraphError as exc:
        raise WorkflowInvalid(f"the workflow graph cannot be read: {exc}") from None


# --- secrets in environment variables ------------------------------------------------------


def _secret_context(app_id: uuid.UUID, name: str) -> str:
    return f"workflow-env:{app_id}:{name}"


def _seal(key: bytes, app_id: uuid.UUID, name: str, value: str) -> str:
    blob = crypto.encrypt(key, value.encode(), _secret_context(app_id, name))
    return ENCRYPTED + base64.b64encode(blob).decode()


def _unseal(key: bytes, app_id: uuid.UUID, name: str, value: str) -> str:
    if not value.startswith(ENCRYPTED):
        return value
    blob = base64.b64decode(value[len(ENCRYPTED) :])
    return crypto.decrypt(key, blob, _secret_context(app_id, name)).decode()


def env_key(secret_key: str) -> bytes:
    return crypto.derive_key(secret_key, "workflow-environment")


def seal_environment(
    given: Sequence[Mapping[str, Any]],
    previous: Sequence[Mapping[str, Any]],
    key: bytes,
    app_id: uuid.UUID,
) -> list[dict[str, Any]]:
    """Environment variables as stored: secrets encrypted; a secret sent back as HIDDEN keeps
    the value stored before."""
    before = {str(v.get("name")): v for v in previous}
    stored = []
    for variable in given:
        item = dict(variable)
        name = str(item.get("name") or "")
        if not name.isidentifier():
            raise InvalidParam(f"environment variable name {name!r} is not valid.", params="name")
        if item.get("value_type") == "secret":
            value = item.get("value")
            if value == HIDDEN:
                item["value"] = before.get(name, {}).get("value", "")
            elif not (isinstance(value, str) and value.startswith(ENCRYPTED)):
                item["value"] = _seal(key, app_id, name, str(value or ""))
        stored.append(item)
    return stored


def environment_values(workflow: Workflow, key: bytes) -> dict[str, Any]:
    """The env.* values of a run, secrets decrypted."""
    values = {}
    for variable in workflow.environment_variables or []:
        name, value = str(variable.get("name")), variable.get("value")
        if variable.get("value_type") == "secret" and isinstance(value, str):
            value = _unseal(key, workflow.app_id, name, value)
        values[name] = value
    return values


def masked_environment(workflow: Workflow) -> list[dict[str, Any]]:
    return [
        {**v, "value": HIDDEN} if v.get("value_type") == "secret" else dict(v)
        for v in workflow.environment_variables or []
    ]


def plain_environment(workflow: Workflow, key: bytes, *, secrets: bool) -> list[dict[str, Any]]:
    """For export: secrets decrypted, or blanked."""
    out = []
    for variable in workflow.environment_variables or []:
        item = dict(variable)
        if item.get("value_type") == "secret":
            value = str(item.get("value") or "")
            item["value"] = (
                _unseal(key, workflow.app_id, str(item["name"]), value) if secrets else ""
            )
        out.append(item)
    return out


# --- drafts and versions ---------------------------------------------------------------


async def get_draft(db: AsyncSession, workspace_id: uuid.UUID, app_id: uuid.UUID) -> Workflow:
    draft = await find_draft(db, workspace_id, app_id)
    if draft is None:
        raise NotFound("Workflow not initialized.")
    return draft


async def find_draft(
    db: AsyncSession, workspace_id: uuid.UUID, app_id: uuid.UUID
) -> Workflow | None:
    query = select(Workflow).where(
        Workflow.workspace_id == workspace_id, Workflow.app_id == app_id, Workflow.version == DRAFT
    )
    return (await db.execute(query)).scalar_one_or_none()


async def save_draft(
    db: AsyncSession,
    app: App,
    content: DraftContent,
    *,
    account_id: uuid.UUID | None,
    key: bytes,
    expected_hash: str | None = None,
) -> Workflow:
    mode = engine_mode(app)
    build_plan_or_fail(content.graph, mode)
    draft = await find_draft(db, app.workspace_id, app.id)
    if draft is None:
        draft = Workflow(
            workspace_id=app.workspace_id,
            app_id=app.id,
            type=WORKFLOW_MODES[app.mode],
            version=DRAFT,
            created_by=account_id,
        )
        db.add(draft)
    elif expected_hash and expected_hash != content_hash(draft.graph, draft.features):
        raise DraftNotSynced("The draft was changed elsewhere; reload it before saving.")
    draft.graph = dict(content.graph)
    draft.features = dict(content.features)
    previous = list(draft.environment_variables or [])
    draft.environment_variables = seal_environment(
        content.environment_variables, previous, key, app.id
    )
    draft.conversation_variables = [dict(v) for v in content.conversation_variables]
    draft.updated_by = account_id
    draft.updated_at = datetime.now(UTC)
    await db.flush()
    return draft


def build_plan_or_fail(graph: Mapping[str, Any], mode: Mode) -> Plan:
    if not isinstance(graph, Mapping):
        raise InvalidParam("graph must be an object with nodes and edges.", params="graph")
    try:
        return build_plan(graph, mode)
    except GraphError as exc:
        raise InvalidParam(f"graph cannot be read: {exc}", params="graph") from None


def describe(problems: Sequence[Problem]) -> str:
    shown = "; ".join(
        f"{p.title or p.node_id}: {p.message}" if p.node_id else p.message for p in problems[:5]
    )
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return shown + more


async def publish(
    db: AsyncSession,
    app: App,
    *,
    account_id: uuid.UUID | None,
    marked_name: str = "",
    marked_comment: str = "",
) -> Workflow:
    """A new immutable version from the draft; the app's runs use it from now on."""
    draft = await get_draft(db, app.workspace_id, app.id)
    problems = validate(plan_of(draft, engine_mode(app)))
    if problems:
        raise WorkflowInvalid(f"The workflow cannot be published: {describe(problems)}")
    version = Workflow(
        workspace_id=app.workspace_id,
        app_id=app.id,
        type=draft.type,
        version=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f"),
        marked_name=marked_name[:255],
        marked_comment=marked_comment,
        graph=draft.graph,
        features=draft.features,
        environment_variables=draft.environment_variables,
        conversation_variables=draft.conversation_variables,
        created_by=account_id,
        updated_by=account_id,
    )
    db.add(version)
    await db.flush()
    app.workflow_id = version.id
    app.updated_by = account_id
    await db.flush()
    return version


async def get_version(
    db: AsyncSession, workspace_id: uuid.UUID, app_id: uuid.UUID, workflow_id: uuid.UUID
) -> Workflow:
    query = select(Workflow).where(
        Workflow.id == workflow_id,
        Workflow.workspace_id == workspace_id,
        Workflow.app_id == app_id,
    )
    found = (await db.execute(query)).scalar_one_or_none()
    if found is None:
        raise NotFound("Workflow version not found.")
    return found


async def get_published(db: AsyncSession, app: App) -> Workflow:
    if app.workflow_id is None:
        raise WorkflowNotPublished("Workflow not published.")
    return await get_version(db, app.workspace_id, app.id, app.workflow_id)


class WorkflowNotPublished(TuskError):
    code, status = "not_found", 404


async def list_versions(
    db: AsyncSession, workspace_id: uuid.UUID, app_id: uuid.UUID, *, page: int, limit: int
) -> Page[Workflow]:
    query = select(Workflow).where(
        Workflow.workspace_id == workspace_id,
        Workflow.app_id == app_id,
        Workflow.version != DRAFT,
    )
    return await paginate(db, query.order_by(Workflow.created_at.desc(), Workflow.id), page, limit)


async def rotate_secrets(db: AsyncSession, old_secret: str, new_secret: str) -> int:
    """Re-encrypt the secret environment variables of every workflow (drafts and versions)
    under a new SECRET_KEY, in the caller's transaction; how many values were re-encrypted."""
    old, new = env_key(old_secret), env_key(new_secret)
    count = 0
    for workflow in (await db.execute(select(Workflow).with_for_update())).scalars():
        rotated = []
        for variable in workflow.environment_variables or []:
            item, value = dict(variable), variable.get("value")
            if item.get("value_type") == "secret" and isinstance(value, str):
                name = str(item["name"])
                try:
                    plain = _unseal(old, workflow.app_id, name, value)
                except crypto.DecryptionFailed:
                    raise RotationFailed(
                        f"the secret {name!r} of app {workflow.app_id} does not decrypt with the "
                        "old key; nothing was changed"
                    ) from None
                item["value"] = _seal(new, workflow.app_id, name, plain)
                count += 1
            rotated.append(item)
        workflow.environment_variables = rotated
    return count
