"""The tools an agent may call: a tool of the tools layer with its call context and the parameters
the app's author fixed (which the model neither sees nor sets), found from Dify's tool entries."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tusk.tools import store
from tusk.tools.base import Tool, ToolContext, ToolResult, call, parse_arguments
from tusk.tools.registry import builtin_equivalent, builtin_providers, find_tool

DEFAULT_TOOL_TIMEOUT = 60.0


@dataclass(frozen=True)
class ToolRef:
    """A tool named as Dify's configurations name it, with the values its author fixed."""

    provider_type: str
    provider_id: str
    tool_name: str
    fixed: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""


@dataclass
class AgentTool:
    tool: Tool
    context: ToolContext
    fixed: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def name(self) -> str:
        return self.tool.name

    def parameters(self) -> dict[str, Any]:
        """The tool's schema without the fixed parameters."""
        schema = dict(self.tool.parameters)
        properties = {
            k: v for k, v in (schema.get("properties") or {}).items() if k not in self.fixed
        }
        required = [r for r in schema.get("required") or () if r not in self.fixed]
        schema["properties"] = properties
        if required or "required" in schema:
            schema["required"] = required
        return schema

    def arguments(self, given: Any, *, lenient: bool = False) -> Any:
        """What the model gave with the fixed values added. `lenient` reads a text that is not
        a JSON object as the value of the tool's only (required) parameter (ReAct models write
        `Action Input: Paris`); otherwise such a text is left for `call` to report."""
        if given is None or given == "":
            given = {}
        if isinstance(given, str):
            parsed = parse_arguments(given)
            if isinstance(parsed, str):
                schema = self.parameters()
                names = list(schema.get("required") or ()) or list(schema["properties"])
                if not lenient or len(names) != 1:
                    return given
                parsed = {names[0]: given}
            given = parsed
        if isinstance(given, Mapping):
            return {**given, **self.fixed}
        return json.dumps(given)  # `call` then says that it is not an object

    async def call(self, given: Any, *, lenient: bool = False) -> tuple[ToolResult, dict[str, Any]]:
        """The result (an error result rather than an exception) and Dify's tool meta."""
        started = time.perf_counter()
        result = await call(self.tool, self.arguments(given, lenient=lenient), self.context)
        meta = {
            "time_cost": round(time.perf_counter() - started, 3),
            "error": result.text if result.is_error else None,
            "tool_config": {"tool_name": self.name, "fixed_parameters": list(self.fixed)},
        }
        return result, meta


def unique(tools: Sequence[AgentTool]) -> list[AgentTool]:
    """One tool per name (a model calls tools by name); the first one given wins."""
    seen: dict[str, AgentTool] = {}
    for tool in tools:
        seen.setdefault(tool.name, tool)
    return list(seen.values())


async def load_tool(
    db: AsyncSession,
    secret_key: str,
    base: ToolContext,
    ref: ToolRef,
) -> AgentTool:
    """The tool a reference names, with its provider's credentials in the workspace; raises
    ToolNotFound (naming the provider) for a tool the workspace does not have."""
    workspace_id = base.workspace_id
    tool = await find_tool(
        db, secret_key, workspace_id, ref.provider_type, ref.provider_id, ref.tool_name
    )
    credentials: dict[str, str] = {}
    if ref.provider_type in ("builtin", "plugin"):
        name = builtin_equivalent(ref.provider_id, ref.tool_name).provider
        if builtin_providers()[name].credential_fields:
            credentials = await store.load_builtin_credentials(db, secret_key, workspace_id, name)
    context = ToolContext(
        workspace_id=workspace_id,
        resources=base.resources,
        user_id=base.user_id,
        app_id=base.app_id,
        credentials=credentials,
        timeout=base.timeout,
        max_depth=base.max_depth,
        runner=base.runner,
    )
    fixed = {k: v for k, v in ref.fixed.items() if v not in (None, "")}
    return AgentTool(tool, context, fixed, ref.label or tool.label or tool.name)


def tool_context(
    workspace_id: uuid.UUID,
    resources: Any,
    *,
    user_id: str = "",
    app_id: uuid.UUID | None = None,
    timeout: float = DEFAULT_TOOL_TIMEOUT,
    runner: Any = None,
) -> ToolContext:
    return ToolContext(
        workspace_id=workspace_id,
        resources=resources,
        user_id=user_id,
        app_id=app_id,
        timeout=timeout,
        runner=runner,
    )
