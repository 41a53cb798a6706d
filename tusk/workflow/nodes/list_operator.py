"""List operator: filter, pick one item of, sort and cut an array of strings, numbers, booleans
or files, in that order (as Dify does). Outputs the array as `result`, and its `first_record`
and `last_record` (None when it is empty)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from tusk.workflow.conditions import ConditionError, compare, compare_files
from tusk.workflow.graph import NodeSpec
from tusk.workflow.nodes.base import Config, Node, NodeContext, NodeError, NodeResult, parse_config
from tusk.workflow.template import render
from tusk.workflow.values import file_attribute, type_of
from tusk.workflow.variables import Selector, VariablePool

SUPPORTED = frozenset({"array[string]", "array[number]", "array[boolean]", "array[file]"})
FILE_TEXT_KEYS = frozenset(
    {"name", "type", "extension", "mime_type", "transfer_method", "url", "related_id"}
)
FILE_KEYS = FILE_TEXT_KEYS | {"size"}


class FilterCondition(Config):
    key: str = ""
    comparison_operator: str = "contains"
    value: str | list[str] | bool | int | float | None = ""


class FilterBy(Config):
    enabled: bool = False
    conditions: list[FilterCondition] = []


class OrderBy(Config):
    enabled: bool = False
    key: str = ""
    value: Literal["asc", "desc"] = "asc"


class LimitConfig(Config):
    enabled: bool = False
    size: int = -1


class ExtractBy(Config):
    enabled: bool = False
    serial: str = "1"


class ListOperatorConfig(Config):
    variable: list[str] = []
    filter_by: FilterBy = FilterBy()
    order_by: OrderBy = OrderBy()
    limit: LimitConfig = LimitConfig()
    extract_by: ExtractBy = ExtractBy()


class ListOperatorError(NodeError):
    pass


# --- the operations (pure) ---------------------------------------------------------------------


def _expected(value: Any, pool: VariablePool) -> Any:
    return render(value, pool) if isinstance(value, str) else value


def _text_test(operator: str, expected: Any) -> Callable[[Any], bool]:
    if operator in ("in", "not in") and isinstance(expected, str):
        # With one text as the expected value, "in" means "is part of that text".
        negate = operator == "not in"
        return lambda item: (str(item) in expected) != negate
    return lambda item: compare(item, operator, expected)


def _number_test(operator: str, expected: Any) -> Callable[[Any], bool]:
    try:
        number = float(expected)
    except (TypeError, ValueError):
        raise ListOperatorError(f"the filter value {expected!r} is not a number") from None
    return lambda item: compare(item, operator, number)


def _boolean_test(operator: str, expected: Any) -> Callable[[Any], bool]:
    if operator not in ("is", "is not"):
        raise ListOperatorError(f"booleans are filtered with 'is' or 'is not', not {operator!r}")
    return lambda item: compare(item, operator, expected)


def _file_test(key: str, operator: str, expected: Any) -> Callable[[Any], bool]:
    if key not in FILE_KEYS:
        raise ListOperatorError(f"files cannot be filtered by {key!r}; use one of {_keys()}")
    return lambda item: compare_files([item], key, operator, expected)


def _keys() -> str:
    return ", ".join(sorted(FILE_KEYS))


def item_test(kind: str, condition: FilterCondition, pool: VariablePool) -> Callable[[Any], bool]:
    expected = _expected(condition.value, pool)
    operator = condition.comparison_operator
    if kind == "array[string]":
        return _text_test(operator, expected)
    if kind == "array[number]":
        return _number_test(operator, expected)
    if kind == "array[boolean]":
        return _boolean_test(operator, expected)
    return _file_test(condition.key, operator, expected)


def filtered(items: list[Any], test: Callable[[Any], bool]) -> list[Any]:
    try:
        return [item for item in items if test(item)]
    except ConditionError as exc:
        raise ListOperatorError(f"a filter condition cannot be evaluated: {exc}") from None


def picked(items: list[Any], serial: str) -> list[Any]:
    """The item at a 1-based position, as a one-item array."""
    try:
        position = int(serial.strip())
    except ValueError:
        raise ListOperatorError(f"the item number {serial!r} is not an integer") from None
    if not 1 <= position <= len(items):
        raise ListOperatorError(
            f"the item number must be between 1 and {len(items)} (the array's length), "
            f"not {position}"
        )
    return [items[position - 1]]


def _file_sort_key(key: str) -> Callable[[Mapping[str, Any]], Any]:
    if key == "size":
        return lambda file: file_attribute(file, "size") or 0
    if key in FILE_TEXT_KEYS:
        return lambda file: str(file_attribute(file, key) or "")
    raise ListOperatorError(f"files cannot be sorted by {key!r}; use one of {_keys()}")


def ordered(items: list[Any], kind: str, key: str, descending: bool) -> list[Any]:
    if kind == "array[file]":
        return sorted(items, key=_file_sort_key(key), reverse=descending)
    return sorted(items, reverse=descending)


def records(items: Sequence[Any]) -> dict[str, Any]:
    return {
        "result": list(items),
        "first_record": items[0] if items else None,
        "last_record": items[-1] if items else None,
    }


# --- the node ----------------------------------------------------------------------------------


class ListOperatorNode(Node):
    type = "list-operator"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.config = parse_config(ListOperatorConfig, spec)

    def reads(self) -> Iterable[Selector]:
        return [self.config.variable] if self.config.variable else []

    def output_names(self) -> frozenset[str]:
        return frozenset({"result", "first_record", "last_record"})

    def _source(self, pool: VariablePool) -> tuple[list[Any], str]:
        selector = self.config.variable
        if not pool.has(selector):
            raise ListOperatorError(f"no variable at {'.'.join(selector) or '(none)'}")
        value = pool.get(selector)
        if value is None or (isinstance(value, list) and not value):
            return [], "array[any]"
        kind = type_of(value)
        if kind not in SUPPORTED:
            raise ListOperatorError(
                f"{'.'.join(selector)} is {kind}; the list operator takes an array of strings, "
                "numbers, booleans or files"
            )
        return list(value), kind

    def _apply(self, items: list[Any], kind: str, pool: VariablePool) -> list[Any]:
        config = self.config
        if config.filter_by.enabled:
            for condition in config.filter_by.conditions:
                items = filtered(items, item_test(kind, condition, pool))
        if config.extract_by.enabled:
            items = picked(items, render(config.extract_by.serial, pool))
        if config.order_by.enabled:
            descending = config.order_by.value == "desc"
            items = ordered(items, kind, config.order_by.key, descending)
        if config.limit.enabled and config.limit.size >= 0:
            items = items[: config.limit.size]
        return items

    async def run(self, ctx: NodeContext) -> NodeResult:
        items, kind = self._source(ctx.pool)
        inputs = {"variable": items}
        if not items:
            return NodeResult(outputs=records([]), inputs=inputs, process_data=inputs)
        result = self._apply(items, kind, ctx.pool)
        return NodeResult(outputs=records(result), inputs=inputs, process_data=inputs)
