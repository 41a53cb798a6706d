"""What a run works with: its identity, its limits, and the process's resources its nodes use."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from tusk.config import Settings
    from tusk.models.runtime import ModelRuntime
    from tusk.models.types import Message
    from tusk.sandbox import Sandbox
    from tusk.storage import Storage


@dataclass(frozen=True)
class Limits:
    max_steps: int = 500
    max_time: float = 1200.0
    max_depth: int = 5
    max_parallel: int = 10
    max_iterations: int = 99
    max_loops: int = 100
    max_variable_size: int = 204800

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_steps=settings.workflow_max_execution_steps,
            max_time=settings.workflow_max_execution_time,
            max_depth=settings.workflow_call_max_depth,
            max_parallel=settings.workflow_max_parallelism,
            max_iterations=settings.max_iterations_num,
            max_loops=settings.loop_node_max_count,
            max_variable_size=settings.max_variable_size,
        )


@dataclass(frozen=True)
class Resources:
    """The process's shared parts that nodes call (made once, by the API or the worker)."""

    settings: Settings
    sessions: async_sessionmaker[AsyncSession]
    storage: Storage
    models: ModelRuntime
    sandbox: Sandbox


class History(Protocol):
    """The conversation so far, for nodes with memory (chatflows)."""

    async def messages(self, window: int | None) -> Sequence[Message]: ...


@dataclass
class RunContext:
    workspace_id: uuid.UUID
    app_id: uuid.UUID
    workflow_id: uuid.UUID
    run_id: uuid.UUID
    resources: Resources
    inputs: dict[str, Any] = field(default_factory=dict)  # validated against the Start node
    limits: Limits = field(default_factory=Limits)
    user_id: str = ""
    conversation_id: uuid.UUID | None = None
    history: History | None = None
    depth: int = 0
