"""An agent's steps kept as Dify's message_agent_thoughts rows, and read back in the shape of the
`agent_thoughts` of Dify's message listings."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tusk.agent.steps import Step, dumps
from tusk.db.models.agent import MessageAgentThought


def _decimal(value: Any) -> Decimal | None:
    try:
        return None if value is None else Decimal(str(value))
    except InvalidOperation:
        return None


def thought_row(
    step: Step,
    workspace_id: uuid.UUID,
    message_id: uuid.UUID,
    created_by_role: str,
    created_by: uuid.UUID | None,
) -> MessageAgentThought:
    usage = step.usage
    return MessageAgentThought(
        id=step.id,
        workspace_id=workspace_id,
        message_id=message_id,
        position=step.position,
        thought=step.thought,
        tool=step.tool,
        tool_labels_str=dumps(step.tool_labels),
        tool_meta_str=dumps(step.tool_meta),
        tool_input=step.tool_input,
        observation=step.observation,
        message=dumps(step.prompt),
        message_token=usage.get("prompt_tokens"),
        message_unit_price=_decimal(usage.get("prompt_unit_price")),
        message_price_unit=_decimal(usage.get("prompt_price_unit")),
        message_files=dumps(step.file_ids()),
        answer=step.answer,
        answer_token=usage.get("completion_tokens"),
        answer_unit_price=_decimal(usage.get("completion_unit_price")),
        answer_price_unit=_decimal(usage.get("completion_price_unit")),
        tokens=usage.get("total_tokens"),
        total_price=_decimal(usage.get("total_price")),
        currency=usage.get("currency"),
        latency=usage.get("latency"),
        created_by_role=created_by_role,
        created_by=created_by,
    )


async def save_steps(
    db: AsyncSession,
    steps: Sequence[Step],
    *,
    workspace_id: uuid.UUID,
    message_id: uuid.UUID,
    created_by_role: str,
    created_by: uuid.UUID | None,
) -> None:
    for step in steps:
        db.add(thought_row(step, workspace_id, message_id, created_by_role, created_by))
    await db.flush()


def _loaded(text: str | None, default: Any) -> Any:
    try:
        return json.loads(text) if text else default
    except ValueError:
        return default


def thought_json(row: MessageAgentThought) -> dict[str, Any]:
    """A row as Dify lists it under a message's `agent_thoughts`."""
    return {
        "id": str(row.id),
        "chain_id": str(row.message_chain_id) if row.message_chain_id else None,
        "message_id": str(row.message_id),
        "position": row.position,
        "thought": row.thought or "",
        "tool": row.tool or "",
        "tool_labels": _loaded(row.tool_labels_str, {}),
        "tool_input": row.tool_input or "",
        "created_at": int(row.created_at.timestamp()),
        "observation": row.observation or "",
        "files": _loaded(row.message_files, []),
    }


async def agent_thoughts(
    db: AsyncSession, workspace_id: uuid.UUID, message_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[dict[str, Any]]]:
    """The agent thoughts of these messages (of one workspace), by message, in order."""
    found: dict[uuid.UUID, list[dict[str, Any]]] = {message_id: [] for message_id in message_ids}
    if not message_ids:
        return found
    query = (
        select(MessageAgentThought)
        .where(
            MessageAgentThought.workspace_id == workspace_id,
            MessageAgentThought.message_id.in_(list(message_ids)),
        )
        .order_by(MessageAgentThought.message_id, MessageAgentThought.position)
    )
    for row in (await db.execute(query)).scalars():
        found[row.message_id].append(thought_json(row))
    return found
