"""Tool: one tool of a built-in, OpenAPI, MCP or workflow provider called with the node's
parameters, as Dify's tool node does. Outputs `text`, `files` and `json`.

Parameters come from `tool_configurations` then `tool_parameters` (which win), each as
`{type: variable, value: selector}`, `{type: mixed, value: "text with {{#node.var#}}"}` or
`{type: constant, value: ...}` (older files give a configuration as a bare value). Dify's
built-in providers that Tusk has (time, webscraper, code) map to Tusk's; any other fails naming
the provider."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from tusk.errors import TuskError
from tusk.tools import store
from tusk.tools.base import DEFAULT_TIMEOUT, Tool, ToolContext, call
from tusk.tools.registry import builtin_equivalent, builtin_providers, find_tool
from tusk.workflow.graph import NodeSpec
from tusk.workflow.nodes.base import (
    Config,
    Node,
    NodeConfigError,
    NodeContext,
    NodeError,
    NodeResult,
    parse_config,
)
from tusk.workflow.template import references, render
from tusk.workflow.variables import Selector, VariablePool

PROVIDER_TYPES = ("builtin", "plugin", "api", "mcp", "workflow")


class ToolInput(Config):
    type: Literal["mixed", "variable", "constant"] = "constant"
    value: Any = None


class ToolNodeConfig(Config):
    provider_id: str
    provider_type: str = "builtin"
    provider_name: str = ""
    tool_name: str
    tool_parameters: dict[str, ToolInput] = {}
    tool_configurations: dict[str, Any] = {}


class ToolNodeError(NodeError):
    pass


def inputs_of(config: ToolNodeConfig) -> dict[str, ToolInput]:
    """Configurations and parameters as one set of inputs; parameters win."""
    merged: dict[str, ToolInput] = {}
    for name, raw in config.tool_configurations.items():
        is_input = isinstance(raw, Mapping) and raw.get("type") in ("mixed", "variable", "constant")
        merged[name] = ToolInput.model_validate(raw) if is_input else ToolInput(value=raw)
    return {**merged, **config.tool_parameters}


def resolve(given: ToolInput, pool: VariablePool) -> Any:
    if given.type == "variable":
        if not isinstance(given.value, list) or not given.value:
            raise NodeConfigError(
                f"a variable tool parameter needs a selector, not {given.value!r}"
            )
        return pool.get(given.value)
    if isinstance(given.value, str):
        return render(given.value, pool)
    return given.value


def arguments(
    inputs: Mapping[str, ToolInput], pool: VariablePool, schema: Mapping[str, Any]
) -> dict[str, Any]:
    """The tool's arguments: only what its schema declares (when it declares anything), without
    the empty values that stand for "not given" in the editor."""
    properties: Mapping[str, Any] = schema.get("properties") or {}
    values = {}
    for name, given in inputs.items():
        if properties and name not in properties:
            continue
        value = resolve(given, pool)
        declared = (properties.get(name) or {}).get("type")
        if value is None or (value == "" and declared not in (None, "string")):
            continue
        values[name] = value
    return values


class ToolNode(Node):
    type = "tool"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.config = parse_config(ToolNodeConfig, spec)
        self.inputs = inputs_of(self.config)
        kind = self.config.provider_type
        if kind not in PROVIDER_TYPES:
            raise NodeConfigError(
                f"tool provider {self.config.provider_name or self.config.provider_id!r} is of "
                f"type {kind!r}, which Tusk does not support (it supports "
                f"{', '.join(PROVIDER_TYPES)})"
            )
        if kind in ("builtin", "plugin"):
            self._check_builtin()

    def _check_builtin(self) -> None:
        try:
            builtin_equivalent(self.config.provider_id, self.config.tool_name)
        except TuskError as exc:
            raise NodeConfigError(exc.message) from None

    def reads(self) -> Iterable[Selector]:
        selectors: list[Selector] = []
        for given in self.inputs.values():
            if given.type == "variable" and isinstance(given.value, list) and given.value:
                selectors.append(given.value)
            elif isinstance(given.value, str):
                selectors += references(given.value)
        return selectors

    def output_names(self) -> frozenset[str]:
        return frozenset({"text", "files", "json"})

    def _tool_info(self) -> dict[str, Any]:
        return {"provider_type": self.config.provider_type, "provider_id": self.config.provider_id}

    async def _tool(self, ctx: NodeContext) -> tuple[Tool, dict[str, str]]:
        run, config = ctx.run, self.config
        secret = run.resources.models.secret_key
        async with run.resources.sessions.begin() as db:
            try:
                tool = await find_tool(
                    db,
                    secret,
                    run.workspace_id,
                    config.provider_type,
                    config.provider_id,
                    config.tool_name,
                )
            except TuskError as exc:
                raise ToolNodeError(exc.message) from None
            credentials: dict[str, str] = {}
            if config.provider_type in ("builtin", "plugin"):
                name = builtin_equivalent(config.provider_id, config.tool_name).provider
                if builtin_providers()[name].credential_fields:
                    credentials = await store.load_builtin_credentials(
                        db, secret, run.workspace_id, name
                    )
        return tool, credentials

    def _context(self, ctx: NodeContext, credentials: dict[str, str]) -> ToolContext:
        run = ctx.run
        slow = self.config.provider_type == "workflow"
        return ToolContext(
            workspace_id=run.workspace_id,
            resources=run.resources,
            user_id=run.user_id,
            app_id=run.app_id,
            credentials=credentials,
            timeout=run.limits.max_time if slow else DEFAULT_TIMEOUT,
            max_depth=run.limits.max_depth,
        )

    async def run(self, ctx: NodeContext) -> NodeResult:
        tool, credentials = await self._tool(ctx)
        params = arguments(self.inputs, ctx.pool, tool.parameters)
        result = await call(tool, params, self._context(ctx, credentials))
        if result.is_error:
            raise ToolNodeError(result.text)
        outputs = {"text": result.text, "files": result.files, "json": result.json}
        metadata = {"tool_info": self._tool_info()}
        return NodeResult(outputs=outputs, inputs=params, metadata=metadata)
