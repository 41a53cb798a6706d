"""What a tool is: a name, a description, a JSON Schema of its parameters and one async `invoke`;
and what every call goes through (`call`): arguments checked against the schema, a time limit, and
failures turned into an error result that an agent can show the model, never an exception."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from jsonschema import Draft202012Validator, SchemaError
from jsonschema.exceptions import ValidationError, best_match

from tusk.errors import TuskError

if TYPE_CHECKING:
    from tusk.workflow.context import Resources
    from tusk.workflow.runner import WorkflowRunner

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0


class ToolError(TuskError):
    """A tool could not do its work; the message is for the model or the workflow's author."""

    code, status = "tool_error", 400


class ToolNotFound(TuskError):
    code, status = "tool_not_found", 404


@dataclass(frozen=True)
class ToolResult:
    """What a tool gives back: text, JSON objects (Dify's `json` output is a list of them) and
    files (a run's file values)."""

    text: str = ""
    json: list[dict[str, Any]] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    is_error: bool = False

    @classmethod
    def error(cls, message: str) -> ToolResult:
        return cls(text=message, is_error=True)

    @classmethod
    def of_json(cls, value: Any, text: str | None = None) -> ToolResult:
        objects = [value] if isinstance(value, dict) else [{"data": value}]
        shown = text if text is not None else json.dumps(value, ensure_ascii=False)
        return cls(text=shown, json=objects)

    def observation(self) -> str:
        """The result as one text, for a model."""
        if self.text:
            return self.text
        if self.json:
            return json.dumps(self.json[0] if len(self.json) == 1 else self.json)
        return f"{len(self.files)} file(s)" if self.files else ""


@dataclass
class ToolContext:
    """Where a tool runs: the workspace, the process's resources, and the provider's stored
    credentials in this workspace."""

    workspace_id: uuid.UUID
    resources: Resources
    user_id: str = ""
    app_id: uuid.UUID | None = None
    credentials: Mapping[str, str] = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT
    max_depth: int = 5  # workflows called as tools, nested at most this deep
    runner: WorkflowRunner | None = None  # for workflow tools; one is made when None


def object_schema(properties: Mapping[str, Any], required: Sequence[str] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": dict(properties)}
    if required:
        schema["required"] = list(required)
    return schema


class Tool(ABC):
    """One callable tool. `parameters` is a JSON Schema of type object."""

    name: str
    description: str = ""
    label: str = ""
    parameters: dict[str, Any] = {"type": "object", "properties": {}}  # noqa: RUF012

    @abstractmethod
    async def invoke(self, params: dict[str, Any], context: ToolContext) -> ToolResult: ...

    def describe(self) -> dict[str, Any]:
        """The tool as a model's function declaration sees it."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


class ToolProvider(ABC):
    """A group of tools with one set of credentials (a built-in, an OpenAPI spec, an MCP server,
    a workflow). Built-ins register a subclass in the `tusk.tools` entry-point group."""

    name: str = ""
    label: str = ""
    description: str = ""
    credential_fields: ClassVar[tuple[str, ...]] = ()  # names of secret values it needs

    @abstractmethod
    def tools(self) -> Sequence[Tool]: ...

    def tool(self, name: str) -> Tool:
        found = next((t for t in self.tools() if t.name == name), None)
        if found is None:
            known = ", ".join(t.name for t in self.tools()) or "none"
            raise ToolNotFound(
                f"the tool provider {self.name!r} has no tool {name!r} (it has: {known})"
            )
        return found


# --- arguments ---------------------------------------------------------------------------------


def _json_or_same(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def _coerced(value: Any, schema: Mapping[str, Any]) -> Any:
    """A text argument read as the declared type, where it plainly is one ("3" for an integer):
    workflow nodes and some models send every argument as text."""
    if not isinstance(value, str):
        return value
    kind = schema.get("type")
    text = value.strip()
    if kind == "integer" and text.lstrip("-").isdigit():
        return int(text)
    if kind == "number":
        try:
            return float(text) if any(c in text for c in ".eE") else int(text)
        except ValueError:
            return value
    if kind == "boolean" and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if kind in ("object", "array") and text[:1] in ("{", "["):
        return _json_or_same(text)
    return value


def coerce(params: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    properties = schema.get("properties") or {}
    return {
        name: _coerced(value, properties.get(name) or {}) if value is not None else None
        for name, value in params.items()
    }


def _without_nulls(params: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """An optional argument given as null is an argument not given."""
    required = set(schema.get("required") or ())
    return {k: v for k, v in params.items() if v is not None or k in required}


def argument_problem(params: Any, schema: Mapping[str, Any]) -> str | None:
    """Why `params` do not fit `schema` (one sentence), or None."""
    if not isinstance(params, Mapping):
        return f"the arguments must be a JSON object, not {type(params).__name__}"
    try:
        validator = Draft202012Validator(schema)
        error: ValidationError | None = best_match(validator.iter_errors(dict(params)))
    except SchemaError as exc:
        return f"the tool's own parameter schema is invalid: {exc.message}"
    if error is None:
        return None
    where = ".".join(str(p) for p in error.absolute_path)
    return f"{where}: {error.message}" if where else error.message


def parse_arguments(raw: str | Mapping[str, Any] | None) -> dict[str, Any] | str:
    """Arguments as a model sends them (JSON text, or already an object): the object, or why
    they cannot be read."""
    if raw is None or raw == "":
        return {}
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        return f"the arguments are not valid JSON ({exc.msg} at character {exc.pos})"
    if not isinstance(value, dict):
        return f"the arguments must be a JSON object, not {type(value).__name__}"
    return value


# --- calling -----------------------------------------------------------------------------------


async def call(tool: Tool, raw: str | Mapping[str, Any] | None, context: ToolContext) -> ToolResult:
    """Check the arguments, invoke the tool within the context's time limit, and turn every
    failure into an error result naming the tool."""
    parsed = parse_arguments(raw)
    if isinstance(parsed, str):
        return ToolResult.error(f"Invalid arguments for tool {tool.name}: {parsed}")
    params = _without_nulls(coerce(parsed, tool.parameters), tool.parameters)
    problem = argument_problem(params, tool.parameters)
    if problem is not None:
        return ToolResult.error(f"Invalid arguments for tool {tool.name}: {problem}")
    try:
        async with asyncio.timeout(context.timeout):
            return await tool.invoke(params, context)
    except TimeoutError:
        return ToolResult.error(
            f"Tool {tool.name} did not finish within {context.timeout:g} seconds"
        )
    except TuskError as exc:
        return ToolResult.error(f"Tool {tool.name} failed: {exc.message}")
    except Exception as exc:
        log.exception("tool %s failed", tool.name)
        return ToolResult.error(f"Tool {tool.name} failed: {type(exc).__name__}: {exc}")
