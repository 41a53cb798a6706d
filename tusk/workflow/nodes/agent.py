"""Agent: a model that calls tools round after round until it answers, with Dify's agent node
configuration: `agent_strategy_name` (`function_calling` or `ReAct`, the strategies of Dify's
own agent plugin) and `agent_parameters` {model, tools, instruction, query, maximum_iterations},
each `{type: constant|variable|mixed, value}`. Outputs `text` (streamed), `files` and `json`
(the JSON results of the tools); the rounds are kept in the execution's metadata (`agent_log`).

Tools are Dify's tool selectors: `provider_name`, `type` (the provider type), `tool_name`, and the
values the author fixed: `settings`, and `parameters` whose `auto` is 0 (the model sets the
others). Strategies of other plugins fail when the workflow is built, naming them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tusk.agent import Agent, AgentSetup, AgentTool, AnswerPiece, ToolRef, load_tool, make_agent
from tusk.agent.strategies import DEFAULT_MAX_ITERATIONS, strategy_name
from tusk.agent.toolbox import tool_context, unique
from tusk.errors import TuskError
from tusk.models.errors import ModelError
from tusk.models.prices import price_of
from tusk.models.types import Message
from tusk.tools.registry import builtin_equivalent
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
from tusk.workflow.nodes.models import (
    ModelCallFailed,
    ModelConfig,
    request_parameters,
    resolve_model,
    spend,
)
from tusk.workflow.nodes.tool import PROVIDER_TYPES, ToolInput, resolve
from tusk.workflow.template import references
from tusk.workflow.variables import Selector, VariablePool

PARAMETERS = ("model", "tools", "instruction", "query", "maximum_iterations")


class AgentNodeConfig(Config):
    agent_strategy_provider_name: str = ""
    agent_strategy_name: str
    agent_strategy_label: str = ""
    agent_parameters: dict[str, ToolInput] = {}


class AgentNodeError(NodeError):
    pass


def model_config(raw: Any) -> ModelConfig:
    """Dify's model selector value ({provider, model, mode, completion_params})."""
    if not isinstance(raw, Mapping) or not raw.get("model"):
        raise NodeConfigError("the agent node needs a model: choose one in its model parameter")
    return ModelConfig(
        provider=str(raw.get("provider") or ""),
        name=str(raw["model"]),
        mode="completion" if raw.get("mode") == "completion" else "chat",
        completion_params=dict(raw.get("completion_params") or {}),
    )


def _fixed_values(entry: Mapping[str, Any], pool: VariablePool | None) -> dict[str, Any]:
    """The values the author set: settings, and parameters the model does not fill (auto 0)."""
    fixed: dict[str, Any] = {}
    for name, setting in (entry.get("settings") or {}).items():
        fixed[name] = setting.get("value") if isinstance(setting, Mapping) else setting
    for name, parameter in (entry.get("parameters") or {}).items():
        if not isinstance(parameter, Mapping) or parameter.get("auto", 1):
            continue
        given = parameter.get("value")
        if isinstance(given, Mapping) and "type" in given:
            fixed[name] = resolve(ToolInput.model_validate(given), pool) if pool else None
        elif given is not None:
            fixed[name] = given
    return fixed


def tool_entries(raw: Any) -> list[Mapping[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise NodeConfigError("the agent node's tools must be a list of tools")
    return [e for e in raw if isinstance(e, Mapping) and e.get("enabled", True)]


def tool_ref(entry: Mapping[str, Any], pool: VariablePool | None) -> ToolRef:
    kind = str(entry.get("type") or entry.get("provider_type") or "builtin")
    provider = str(entry.get("provider_name") or entry.get("provider_id") or "")
    if kind not in PROVIDER_TYPES:
        raise NodeConfigError(
            f"the agent's tool provider {provider!r} is of type {kind!r}, which Tusk does not "
            f"support (it supports {', '.join(PROVIDER_TYPES)})"
        )
    name = str(entry.get("tool_name") or "")
    label = str(entry.get("tool_label") or name)
    return ToolRef(kind, provider, name, _fixed_values(entry, pool), label)


class AgentNode(Node):
    type = "agent"
    streams = frozenset({"text"})

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.config = parse_config(AgentNodeConfig, spec)
        self.strategy = strategy_name(self.config.agent_strategy_name)
        if self.strategy is None:
            shown = self.config.agent_strategy_label or self.config.agent_strategy_name
            raise NodeConfigError(
                f"the agent strategy {shown!r} of {self.config.agent_strategy_provider_name!r} "
                "is not available in Tusk, which has function_calling and ReAct"
            )
        self.model = model_config(self._constant("model"))
        for entry in tool_entries(self._constant("tools")):
            self._check_tool(tool_ref(entry, None))

    def _constant(self, name: str) -> Any:
        given = self.config.agent_parameters.get(name)
        return given.value if given is not None else None

    def _check_tool(self, ref: ToolRef) -> None:
        if ref.provider_type in ("builtin", "plugin"):
            try:
                builtin_equivalent(ref.provider_id, ref.tool_name)
            except TuskError as exc:
                raise NodeConfigError(exc.message) from None

    def reads(self) -> Iterable[Selector]:
        found: list[Selector] = []
        for given in self.config.agent_parameters.values():
            if given.type == "variable" and isinstance(given.value, list) and given.value:
                found.append(given.value)
            elif given.type == "mixed" and isinstance(given.value, str):
                found += references(given.value)
        return found

    def output_names(self) -> frozenset[str]:
        return frozenset({"text", "files", "json"})

    def _value(self, name: str, pool: VariablePool) -> Any:
        given = self.config.agent_parameters.get(name)
        return resolve(given, pool) if given is not None else None

    def _iterations(self, pool: VariablePool) -> int:
        raw = self._value("maximum_iterations", pool)
        try:
            return int(raw) if raw not in (None, "") else DEFAULT_MAX_ITERATIONS
        except (TypeError, ValueError):
            raise AgentNodeError(f"maximum_iterations must be a number, not {raw!r}") from None

    def _messages(self, pool: VariablePool) -> list[Message]:
        instruction = str(self._value("instruction", pool) or "").strip()
        query = str(self._value("query", pool) or "").strip()
        if not query and not instruction:
            raise AgentNodeError("the agent node has no query: set its query parameter")
        messages = [Message("system", instruction)] if instruction else []
        return [*messages, Message("user", query or instruction)]

    async def _tools(self, ctx: NodeContext) -> list[AgentTool]:
        run = ctx.run
        base = tool_context(run.workspace_id, run.resources, user_id=run.user_id, app_id=run.app_id)
        tools = []
        async with run.resources.sessions() as db:
            for entry in tool_entries(self._constant("tools")):
                try:
                    ref = tool_ref(entry, ctx.pool)
                    tools.append(await load_tool(db, run.resources.models.secret_key, base, ref))
                except TuskError as exc:
                    raise AgentNodeError(exc.message) from None
        return unique(tools)

    async def _agent(self, ctx: NodeContext) -> Agent:
        model = await resolve_model(ctx, self.model)
        setup = AgentSetup(
            model=model,
            messages=self._messages(ctx.pool),
            tools=await self._tools(ctx),
            price=price_of(ctx.run.resources.models.config.prices, model.full_name),
            parameters=request_parameters(self.model.completion_params),
            max_iterations=self._iterations(ctx.pool),
        )
        assert self.strategy is not None
        return make_agent(self.strategy, setup)

    async def run(self, ctx: NodeContext) -> NodeResult:
        agent = await self._agent(ctx)
        try:
            async for event in agent.events():
                if isinstance(event, AnswerPiece):
                    ctx.stream("text", event.text)
        except ModelError as exc:
            raise ModelCallFailed(str(exc)) from None
        outputs = {"text": agent.answer, "files": agent.files, "json": agent.json}
        inputs: dict[str, Any] = {str(m.role): m.text for m in agent.setup.messages}
        metadata = {
            **spend(agent.usage),
            "agent_log": [step.log_json() for step in agent.steps],
            "agent_strategy": self.config.agent_strategy_name,
        }
        return NodeResult(outputs=outputs, inputs=inputs, metadata=metadata)
