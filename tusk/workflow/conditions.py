"""Comparison operators of if-else, loop break conditions and list filters, with Dify's meaning
for each value type. Pure: values in, booleans out."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from tusk.workflow.values import file_attribute, is_file


class ConditionError(ValueError):
    pass


def _number(expected: Any) -> float:
    try:
        return float(expected)
    except (TypeError, ValueError):
        raise ConditionError(f"{expected!r} is not a number") from None


def _need(value: Any, kinds: tuple[type, ...], what: str) -> None:
    if not isinstance(value, kinds):
        raise ConditionError(f"the operator needs {what}, not {type(value).__name__}")


def _contains(value: Any, expected: Any) -> bool:
    if not value:
        return False
    _need(value, (str, list, tuple), "a string or an array")
    return expected in value


def _starts(value: Any, expected: Any) -> bool:
    if not value:
        return False
    _need(value, (str,), "a string")
    return bool(value.startswith(str(expected or "")))


def _ends(value: Any, expected: Any) -> bool:
    if not value:
        return False
    _need(value, (str,), "a string")
    return bool(value.endswith(str(expected or "")))


def _is(value: Any, expected: Any) -> bool:
    if value is None:
        return False
    _need(value, (str, bool), "a string or a boolean")
    return bool(value == expected)


def _compare(test: Callable[[float, float], bool]) -> Callable[[Any, Any], bool]:
    def check(value: Any, expected: Any) -> bool:
        if value is None:
            return False
        _need(value, (int, float), "a number")
        return test(value, _number(expected))

    return check


def _equal(value: Any, expected: Any) -> bool:
    if value is None:
        return False
    _need(value, (int, float, bool), "a number or a boolean")
    if isinstance(value, bool):
        return value == bool(expected)
    return bool(value == _number(expected))


def _in(value: Any, expected: Any) -> bool:
    if not value:
        return False
    _need(expected, (list, tuple), "an array of expected values")
    return value in expected


def _all_of(value: Any, expected: Any) -> bool:
    if not value:
        return False
    _need(expected, (list, tuple), "an array of expected values")
    return all(item in value for item in expected)


OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "contains": _contains,
    "not contains": lambda v, e: not v or not _contains(v, e),
    "start with": _starts,
    "end with": _ends,
    "is": _is,
    "is not": lambda v, e: v is not None and not _is(v, e),
    "empty": lambda v, e: not v,
    "not empty": lambda v, e: bool(v),
    "=": _equal,
    "≠": lambda v, e: v is not None and not _equal(v, e),
    ">": _compare(lambda a, b: a > b),
    "<": _compare(lambda a, b: a < b),
    "≥": _compare(lambda a, b: a >= b),
    "≤": _compare(lambda a, b: a <= b),
    "null": lambda v, e: v is None,
    "not null": lambda v, e: v is not None,
    "in": _in,
    "not in": lambda v, e: not v or not _in(v, e),
    "all of": _all_of,
    "exists": lambda v, e: v is not None,
    "not exists": lambda v, e: v is None,
}
ALIASES = {"!=": "≠", ">=": "≥", "<=": "≤", "==": "="}
NO_EXPECTED = frozenset({"empty", "not empty", "null", "not null", "exists", "not exists"})


def _to_bool(expected: Any) -> Any:
    if isinstance(expected, bool) or expected is None:
        return expected
    if isinstance(expected, list):
        return [_to_bool(item) for item in expected]
    if isinstance(expected, int | float):
        return bool(expected)
    try:
        loaded = json.loads(str(expected).strip().lower())
    except ValueError:
        raise ConditionError(f"{expected!r} is not true or false") from None
    return bool(loaded)


def compare(value: Any, operator: str, expected: Any) -> bool:
    check = OPERATORS.get(ALIASES.get(operator, operator))
    if check is None:
        raise ConditionError(f"unknown comparison operator {operator!r}")
    if isinstance(value, bool) or (
        isinstance(value, list) and value and isinstance(value[0], bool)
    ):
        expected = _to_bool(expected)
    return check(value, expected)


def _normalized_extension(value: Any) -> Any:
    if isinstance(value, str) and value and not value.startswith("."):
        return "." + value
    return value


def compare_files(
    files: Sequence[Mapping[str, Any]], key: str, operator: str, expected: Any
) -> bool:
    """A condition on one attribute of every file of an array: any file for positive
    operators, every file for negative ones (`not contains`, `not in`, ...)."""
    values = [file_attribute(f, key) for f in files]
    if key == "extension":
        values, expected = (
            [_normalized_extension(v) for v in values],
            _normalized_extension(expected),
        )
    results = [compare(value, operator, expected) for value in values]
    return all(results) if "not" in operator else any(results)


def combine(results: Iterable[bool], logical_operator: str) -> bool:
    """`and`/`or` over results computed lazily (a generator stops as soon as it is known)."""
    return any(results) if logical_operator == "or" else all(results)


def file_list(value: Any) -> list[Mapping[str, Any]] | None:
    if is_file(value):
        return [value]
    if isinstance(value, list) and value and all(is_file(item) for item in value):
        return value
    return None
