"""Code: the author's Python or JavaScript `main` run in the sandbox, its returned dict checked
against the declared outputs with Dify's limits (string length, number range and precision,
array lengths, nesting depth)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import field_validator

from tusk.errors import InvalidParam
from tusk.sandbox import CodeExecutionError, SandboxUnavailable, parse_language
from tusk.workflow.graph import NodeSpec
from tusk.workflow.nodes.base import (
    Config,
    Node,
    NodeConfigError,
    NodeContext,
    NodeError,
    NodeResult,
    inputs_of,
    parse_config,
)
from tusk.workflow.variables import Selector

OUTPUT_TYPES = (
    "string",
    "number",
    "boolean",
    "object",
    "array[string]",
    "array[number]",
    "array[object]",
    "array[boolean]",
)


@dataclass(frozen=True)
class CodeLimits:
    """Dify's CODE_* defaults."""

    max_string_length: int = 400_000
    max_number: int = 9_223_372_036_854_775_807
    min_number: int = -9_223_372_036_854_775_807
    max_precision: int = 20
    max_depth: int = 5
    max_string_array_length: int = 30
    max_object_array_length: int = 30
    max_number_array_length: int = 1000


LIMITS = CodeLimits()


class CodeVariable(Config):
    variable: str
    value_selector: list[str] = []


class CodeOutput(Config):
    type: str
    children: dict[str, CodeOutput] | None = None

    @field_validator("type")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in OUTPUT_TYPES:
            raise ValueError(f"{value!r} is not an output type of code; use one of {OUTPUT_TYPES}")
        return value


class CodeConfig(Config):
    code_language: str = "python3"
    code: str = ""
    variables: list[CodeVariable] = []
    outputs: dict[str, CodeOutput] = {}


class CodeExecutionFailed(NodeError):
    """The code did not run to the end (syntax error, exception, timeout, memory, ...)."""

    @property
    def error_type(self) -> str:
        return "CodeExecutionError"


class OutputValidationError(NodeError):
    pass


class DepthLimitError(OutputValidationError):
    pass


# --- checking the outputs (pure) ---------------------------------------------------------------


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_string(value: Any, name: str, limits: CodeLimits) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise OutputValidationError(f"output {name} must be a string, not {_kind(value)}")
    if len(value) > limits.max_string_length:
        raise OutputValidationError(
            f"output {name} is {len(value)} characters long; the limit is "
            f"{limits.max_string_length}"
        )
    return value.replace("\x00", "")


def _precision(value: float) -> int:
    exponent = Decimal(str(value)).normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _check_number(value: Any, name: str, limits: CodeLimits) -> int | float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return int(value)  # older workflows return True/False for numbers
    if not isinstance(value, int | float):
        raise OutputValidationError(f"output {name} must be a number, not {_kind(value)}")
    if not limits.min_number <= value <= limits.max_number:
        raise OutputValidationError(
            f"output {name} is out of range: it must be between {limits.min_number} and "
            f"{limits.max_number}"
        )
    if isinstance(value, float) and _precision(value) > limits.max_precision:
        raise OutputValidationError(
            f"output {name} has more than {limits.max_precision} digits after the decimal point"
        )
    return value


def _check_boolean(value: Any, name: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise OutputValidationError(f"output {name} must be a boolean, not {_kind(value)}")
    return value


def _check_array(value: Any, name: str, limit: int) -> list[Any] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise OutputValidationError(f"output {name} must be an array, not {_kind(value)}")
    if len(value) > limit:
        raise OutputValidationError(f"output {name} has {len(value)} items; the limit is {limit}")
    return value


class OutputChecker:
    """Checks and normalises what `main` returned against the declared outputs."""

    def __init__(self, limits: CodeLimits = LIMITS) -> None:
        self.limits = limits

    def check(
        self, result: Mapping[str, Any], schema: Mapping[str, CodeOutput] | None
    ) -> dict[str, Any]:
        return self._object(result, schema, "", 1)

    def _object(
        self,
        result: Mapping[str, Any],
        schema: Mapping[str, CodeOutput] | None,
        prefix: str,
        depth: int,
    ) -> dict[str, Any]:
        if depth > self.limits.max_depth:
            raise DepthLimitError(
                f"output {prefix} is nested deeper than {self.limits.max_depth} levels"
            )
        if schema is None:
            for name, value in result.items():
                self._untyped(value, f"{prefix}.{name}" if prefix else name, depth)
            return dict(result)
        missing = [name for name in schema if name not in result]
        if missing:
            raise OutputValidationError(f"main() did not return {_names(prefix, missing)}")
        undeclared = [name for name in result if name not in schema]
        if undeclared:
            raise OutputValidationError(
                f"main() returned {_names(prefix, undeclared)}, which the node does not declare "
                "as outputs"
            )
        return {
            name: self._typed(result[name], spec, f"{prefix}.{name}" if prefix else name, depth)
            for name, spec in schema.items()
        }

    def _typed(self, value: Any, spec: CodeOutput, name: str, depth: int) -> Any:
        limits = self.limits
        match spec.type:
            case "string":
                return _check_string(value, name, limits)
            case "number":
                return _check_number(value, name, limits)
            case "boolean":
                return _check_boolean(value, name)
            case "object":
                if value is None:
                    return None
                if not isinstance(value, dict):
                    raise OutputValidationError(
                        f"output {name} must be an object, not {_kind(value)}"
                    )
                return self._object(value, spec.children, name, depth + 1)
            case "array[string]":
                items = _check_array(value, name, limits.max_string_array_length)
                return _each(items, lambda v, n: _check_string(v, n, limits), name)
            case "array[number]":
                items = _check_array(value, name, limits.max_number_array_length)
                return _each(items, lambda v, n: _required_number(v, n, limits), name)
            case "array[boolean]":
                items = _check_array(value, name, limits.max_number_array_length)
                return _each(items, _check_boolean, name)
            case _:  # array[object]
                items = _check_array(value, name, limits.max_object_array_length)
                return _each(items, lambda v, n: self._array_object(v, spec, n, depth), name)

    def _array_object(self, value: Any, spec: CodeOutput, name: str, depth: int) -> Any:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise OutputValidationError(f"output {name} must be an object, not {_kind(value)}")
        return self._object(value, spec.children, name, depth + 1)

    def _untyped(self, value: Any, name: str, depth: int) -> None:
        """An object output without declared children: its values must still be values."""
        limits = self.limits
        if isinstance(value, dict):
            self._object(value, None, name, depth + 1)
        elif isinstance(value, bool) or value is None:
            return
        elif isinstance(value, int | float):
            _check_number(value, name, limits)
        elif isinstance(value, str):
            _check_string(value, name, limits)
        elif isinstance(value, list):
            self._untyped_array(value, name, depth)
        else:
            raise OutputValidationError(f"output {name} is not a JSON value")

    def _untyped_array(self, items: list[Any], name: str, depth: int) -> None:
        kinds = {_family(item) for item in items if item is not None}
        if len(kinds) > 1:
            raise OutputValidationError(
                f"output {name} mixes {', '.join(sorted(kinds))}; an array's items must be of "
                "one type"
            )
        for index, item in enumerate(items):
            if item is not None:
                self._untyped(item, f"{name}[{index}]", depth)


def _family(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object" if isinstance(value, dict) else "array" if isinstance(value, list) else "other"


def _required_number(value: Any, name: str, limits: CodeLimits) -> int | float | None:
    if value is None:
        raise OutputValidationError(f"output {name} must be a number, not null")
    return _check_number(value, name, limits)


def _each(items: list[Any] | None, check: Callable[[Any, str], Any], name: str) -> list[Any] | None:
    if items is None:
        return None
    return [check(item, f"{name}[{index}]") for index, item in enumerate(items)]


def _names(prefix: str, names: list[str]) -> str:
    listed = ", ".join(f"{prefix}.{n}" if prefix else n for n in names)
    return f"output{'s' if len(names) > 1 else ''} {listed}"


# --- running -----------------------------------------------------------------------------------


def execution_message(exc: CodeExecutionError) -> str:
    """The sandbox's message, with the line when it knows it and the message does not say."""
    message = str(exc)
    line = exc.details.get("line")
    if isinstance(line, int) and f"line {line}" not in message:
        message = f"{message} (line {line})"
    return message


class CodeNode(Node):
    type = "code"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.config = parse_config(CodeConfig, spec)
        try:
            self.language = parse_language(self.config.code_language)
        except InvalidParam as exc:
            raise NodeConfigError(f"code node configuration is invalid: {exc}") from None

    def reads(self) -> Iterable[Selector]:
        return [v.value_selector for v in self.config.variables if v.value_selector]

    def output_names(self) -> frozenset[str]:
        return frozenset(self.config.outputs)

    async def run(self, ctx: NodeContext) -> NodeResult:
        inputs = inputs_of(ctx.pool, {v.variable: v.value_selector for v in self.config.variables})
        try:
            result = await ctx.run.resources.sandbox.run(self.language, self.config.code, inputs)
        except CodeExecutionError as exc:
            raise CodeExecutionFailed(execution_message(exc)) from None
        except (SandboxUnavailable, InvalidParam) as exc:
            raise CodeExecutionFailed(str(exc)) from None
        outputs = OutputChecker().check(result.outputs, self.config.outputs)
        return NodeResult(outputs=outputs, inputs=inputs)
