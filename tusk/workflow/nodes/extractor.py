"""The parameter extractor: the model reads a text and fills the node's typed parameters, by a
function call (`reasoning_mode` "function_call") or by answering JSON ("prompt").

As in Dify, a bad answer does not fail the node: `__is_success` is 0, `__reason` says why, and
every parameter the answer did not give (or gave with the wrong type) holds its type's default
(0, false, "", []). Unlike Dify, an optional parameter that the answer leaves out is no failure
(Dify reports "Invalid number of parameters" then). "function_call" always offers the tool (Dify
falls back to "prompt" for models it knows have no tool calls); an answer in text instead of a
call is read as JSON all the same."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import field_validator

from tusk.models.types import Message, ToolCall, ToolDefinition
from tusk.workflow.graph import NodeSpec
from tusk.workflow.nodes.base import Config, Node, NodeContext, NodeResult, parse_config
from tusk.workflow.nodes.models import ModelConfig, Reply, call_model, call_record, spend, usage_of
from tusk.workflow.nodes.prompts import (
    MemoryConfig,
    VisionConfig,
    find_json_object,
    history,
    history_text,
    image_parts,
    template_reads,
    with_images,
)
from tusk.workflow.template import render
from tusk.workflow.values import to_text
from tusk.workflow.variables import Selector

TOOL_NAME = "extract_parameters"
RESERVED = frozenset({"__is_success", "__reason", "__usage"})
SCALARS = {"string": "string", "select": "string", "number": "number"}
BOOLEANS = frozenset({"bool", "boolean"})
ARRAYS = {
    "array[string]": "string",
    "array[number]": "number",
    "array[object]": "object",
    "array[bool]": "boolean",
    "array[boolean]": "boolean",
}
TYPES = frozenset({*SCALARS, *BOOLEANS, *ARRAYS})
SYSTEM_PROMPT = (
    "You extract structured parameters from a text.\n"
    "Take the values from the text only; leave out a parameter the text does not give."
    "{instructions}{histories}"
)
FUNCTION_PROMPT = (
    "Call the function {tool} with the parameters found in this text.\n\n"
    "Parameters (JSON Schema): {schema}\n\nText: {text}"
)
JSON_PROMPT = (
    "Answer with one JSON object of the parameters found in this text, and nothing else: no "
    "prose, no Markdown.\n\nParameters (JSON Schema): {schema}\n\nText: {text}"
)


class Parameter(Config):
    name: str
    type: str = "string"
    description: str = ""
    required: bool = False
    options: list[str] | None = None

    @field_validator("name")
    @classmethod
    def _usable_name(cls, name: str) -> str:
        if not name.strip():
            raise ValueError("a parameter needs a name")
        if name in RESERVED:
            raise ValueError(f"{name} is reserved for the node's own outputs")
        return name

    @field_validator("type")
    @classmethod
    def _known_type(cls, kind: str) -> str:
        if kind not in TYPES:
            raise ValueError(f"type {kind!r} is not one of {', '.join(sorted(TYPES))}")
        return kind

    def json_schema(self) -> dict[str, Any]:
        found: dict[str, Any] = {"description": self.description}
        if self.type in ARRAYS:
            found.update(type="array", items={"type": ARRAYS[self.type]})
        else:
            found["type"] = "boolean" if self.type in BOOLEANS else SCALARS[self.type]
        if self.options:
            found["enum"] = list(self.options)
        return found

    def default(self) -> Any:
        if self.type in ARRAYS:
            return []
        if self.type in BOOLEANS:
            return False
        return 0 if self.type == "number" else ""


class ExtractorConfig(Config):
    model: ModelConfig
    query: list[str] = []
    parameters: list[Parameter] = []
    instruction: str | None = None
    reasoning_mode: Literal["function_call", "prompt"] | None = "function_call"
    memory: MemoryConfig | None = None
    vision: VisionConfig = VisionConfig()


def parameters_schema(parameters: Iterable[Parameter]) -> dict[str, Any]:
    """The JSON Schema of the arguments: one property a parameter."""
    given = list(parameters)
    return {
        "type": "object",
        "properties": {p.name: p.json_schema() for p in given},
        "required": [p.name for p in given if p.required],
    }


class Mismatch(ValueError):
    pass


def _number(value: Any) -> int | float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return float(value) if "." in value or "e" in value.lower() else int(value)
        except ValueError:
            pass
    raise Mismatch


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise Mismatch


def _scalar(kind: str, value: Any) -> Any:
    if kind == "number":
        return _number(value)
    if kind == "boolean":
        return _boolean(value)
    if kind == "object":
        if isinstance(value, Mapping):
            return dict(value)
        raise Mismatch
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise Mismatch


def coerce(parameter: Parameter, value: Any) -> Any:
    """The value as the parameter's type; Mismatch when it cannot be one."""
    if parameter.type in ARRAYS:
        if not isinstance(value, list):
            raise Mismatch
        return [_scalar(ARRAYS[parameter.type], item) for item in value]
    kind = "boolean" if parameter.type in BOOLEANS else SCALARS[parameter.type]
    coerced = _scalar(kind, value)
    if parameter.options and coerced not in parameter.options:
        raise Mismatch
    return coerced


def extracted(
    parameters: Iterable[Parameter], found: Mapping[str, Any] | None
) -> tuple[dict[str, Any], str | None]:
    """Every parameter's value (its default where the answer fails it), and the first problem."""
    problems = [] if found is not None else ["the model's answer holds no JSON object"]
    values: dict[str, Any] = {}
    for parameter in parameters:
        value = (found or {}).get(parameter.name)
        values[parameter.name] = parameter.default()
        if value is None:
            if parameter.required:
                problems.append(f"parameter {parameter.name} is required")
            continue
        try:
            values[parameter.name] = coerce(parameter, value)
        except Mismatch:
            problems.append(f"invalid {parameter.type} value for parameter {parameter.name}")
    return values, (problems[0] if problems else None)


def answer_json(reply: Reply) -> dict[str, Any] | None:
    """The arguments of the model's call, or else the JSON of its text."""
    for call in reply.tool_calls:
        if call.name == TOOL_NAME and (found := find_json_object(call.arguments)) is not None:
            return found
    return find_json_object(reply.text)


class ParameterExtractorNode(Node):
    type = "parameter-extractor"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.config = parse_config(ExtractorConfig, spec)
        self.schema = parameters_schema(self.config.parameters)
        self.function_call = self.config.reasoning_mode != "prompt"

    def reads(self) -> Iterable[Selector]:
        config = self.config
        found = [config.query, *template_reads([config.instruction])]
        if config.vision.enabled:
            found.append(config.vision.configs.variable_selector)
        return [s for s in found if s]

    def output_names(self) -> frozenset[str]:
        return frozenset({p.name for p in self.config.parameters} | RESERVED)

    def tool(self) -> ToolDefinition:
        return ToolDefinition(
            TOOL_NAME, "Extract the parameters from the natural-language text", self.schema
        )

    async def prompt(self, ctx: NodeContext, query: str) -> list[Message]:
        config = self.config
        instruction = render(config.instruction or "", ctx.pool).strip()
        past = history_text(await history(ctx, config.memory))
        system = SYSTEM_PROMPT.format(
            instructions=f"\n\nFollow these instructions:\n{instruction}" if instruction else "",
            histories=f"\n\nThe conversation so far:\n{past}" if past else "",
        )
        template = FUNCTION_PROMPT if self.function_call else JSON_PROMPT
        user = template.format(tool=TOOL_NAME, schema=_json(self.schema), text=query)
        messages = [Message("system", system), Message("user", user)]
        if config.vision.enabled:
            selector = config.vision.configs.variable_selector
            images = await image_parts(ctx, ctx.pool.get(selector), config.vision.configs.detail)
            messages = with_images(messages, images)
        return messages

    async def run(self, ctx: NodeContext) -> NodeResult:
        config = self.config
        query = to_text(ctx.pool.get(config.query))
        messages = await self.prompt(ctx, query)
        tools = [self.tool()] if self.function_call else []
        reply = await call_model(ctx, config.model, messages, tools=tools)
        values, reason = extracted(config.parameters, answer_json(reply))
        usage = usage_of(ctx, reply)
        process_data = call_record(config.model, messages, reply, usage)
        process_data.update(
            function=_tool_json(self.tool()) if self.function_call else {},
            tool_call=_call_json(reply.tool_calls[0]) if reply.tool_calls else None,
            llm_text=reply.text,
        )
        outputs = {**values, "__is_success": 0 if reason else 1, "__reason": reason}
        return NodeResult(
            outputs={**outputs, "__usage": usage},
            inputs={"query": query, "parameters": self.schema, "instruction": config.instruction},
            process_data=process_data,
            metadata=spend(usage),
        )


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _tool_json(tool: ToolDefinition) -> dict[str, Any]:
    return {"name": tool.name, "description": tool.description, "parameters": tool.parameters}


def _call_json(call: ToolCall) -> dict[str, Any]:
    function = {"name": call.name, "arguments": call.arguments}
    return {"id": call.id, "type": "function", "function": function}
