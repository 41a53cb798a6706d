"""Variable assigner: writes conversation variables (kept with the conversation) and loop
variables. Version 2 applies a list of operations; version 1 has one write mode."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

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
from tusk.workflow.variables import CONVERSATION, RESERVED, Selector, VariablePool


class Item(Config):
    variable_selector: list[str] = []
    input_type: Literal["variable", "constant"] = "variable"
    operation: str = "over-write"
    value: Any = None


class AssignerConfig(Config):
    version: str = "1"
    items: list[Item] = []
    # version 1
    assigned_variable_selector: list[str] = []
    write_mode: str = "over-write"
    input_variable_selector: list[str] = []

    def operations(self) -> list[Item]:
        if self.version == "2" or self.items:
            return self.items
        return [
            Item(
                variable_selector=self.assigned_variable_selector,
                input_type="variable",
                operation=self.write_mode,
                value=self.input_variable_selector,
            )
        ]


def _empty_like(current: Any) -> Any:
    if isinstance(current, bool):
        return False
    if isinstance(current, int | float):
        return 0
    for kind in (str, dict, list):
        if isinstance(current, kind):
            return kind()
    return None


def _list(current: Any, name: str) -> list[Any]:
    if current is None:
        return []
    if not isinstance(current, list):
        raise NodeError(f"{name} is not an array")
    return list(current)


def _number(value: Any, name: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise NodeError(f"{name} must be a number, not {type(value).__name__}")
    return value


def _arithmetic(apply: Callable[[Any, Any], Any]) -> Callable[[Any, Any, str], Any]:
    def operate(current: Any, value: Any, name: str) -> Any:
        return apply(_number(current, name), _number(value, f"the value for {name}"))

    return operate


def _divide(current: Any, value: Any) -> Any:
    if value == 0:
        raise NodeError("cannot divide by zero")
    return current / value


OPERATIONS: dict[str, Callable[[Any, Any, str], Any]] = {
    "over-write": lambda current, value, name: value,
    "set": lambda current, value, name: value,
    "clear": lambda current, value, name: _empty_like(current),
    "append": lambda current, value, name: [*_list(current, name), value],
    "extend": lambda current, value, name: [*_list(current, name), *_list(value, "the value")],
    "remove-first": lambda current, value, name: _list(current, name)[1:],
    "remove-last": lambda current, value, name: _list(current, name)[:-1],
    "+=": _arithmetic(lambda a, b: a + b),
    "-=": _arithmetic(lambda a, b: a - b),
    "*=": _arithmetic(lambda a, b: a * b),
    "/=": _arithmetic(_divide),
}


def _writable(selector: Selector, node: AssignerNode) -> None:
    if len(selector) < 2:
        raise NodeError(f"{node.title}: no variable to assign")
    if selector[0] in RESERVED and selector[0] != CONVERSATION:
        raise NodeError(f"{node.title}: {'.'.join(selector)} cannot be assigned")


class AssignerNode(Node):
    type = "assigner"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.config = parse_config(AssignerConfig, spec)
        self.items = self.config.operations()
        for item in self.items:
            if item.operation not in OPERATIONS:
                raise NodeConfigError(f"unknown assigner operation {item.operation!r}")

    def reads(self) -> Iterable[Selector]:
        values = [i.value for i in self.items if i.input_type == "variable" and i.value]
        return [i.variable_selector for i in self.items] + values

    def output_names(self) -> frozenset[str]:
        return frozenset()

    def _value(self, item: Item, pool: VariablePool) -> Any:
        if item.input_type == "constant":
            return item.value
        return pool.get(item.value) if isinstance(item.value, list) else None

    async def run(self, ctx: NodeContext) -> NodeResult:
        updated = []
        for item in self.items:
            selector = item.variable_selector
            _writable(selector, self)
            name = ".".join(selector)
            current = ctx.pool.get(selector)
            new = OPERATIONS[item.operation](current, self._value(item, ctx.pool), name)
            ctx.pool.set(selector[0], selector[1], new)
            updated.append({"selector": list(selector), "operation": item.operation, "value": new})
        return NodeResult(outputs={}, process_data={"updated_variables": updated})
