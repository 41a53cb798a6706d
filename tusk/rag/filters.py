"""Metadata filters (Dify's `metadata_filtering_conditions`) as a SQL condition on the chunks'
`doc_metadata`, with every value passed as a bound parameter."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tusk.errors import InvalidParam

TEXT_OPERATORS = {
    "is": "{f} = :{p}",
    "=": "{f} = :{p}",
    "is not": "{f} IS DISTINCT FROM :{p}",
    "≠": "{f} IS DISTINCT FROM :{p}",
    "!=": "{f} IS DISTINCT FROM :{p}",
    "contains": "{f} ILIKE '%' || :{p} || '%'",
    "not contains": "coalesce({f}, '') NOT ILIKE '%' || :{p} || '%'",
    "start with": "{f} ILIKE :{p} || '%'",
    "end with": "{f} ILIKE '%' || :{p}",
}
NUMBER_OPERATORS = {">": ">", "<": "<", "≥": ">=", ">=": ">=", "≤": "<=", "<=": "<="}
TIME_OPERATORS = {"before": "<", "after": ">"}


@dataclass
class Condition:
    """A SQL condition and its parameters; empty when there is nothing to filter."""

    sql: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def and_sql(self) -> str:
        return f" AND ({self.sql})" if self.sql else ""


def _field(name: str, index: int, params: dict[str, Any]) -> str:
    params[f"mf{index}"] = name
    return f"(s.doc_metadata ->> :mf{index})"


def _one(condition: Mapping[str, Any], index: int, params: dict[str, Any]) -> str:
    name = condition.get("name")
    operator = str(condition.get("comparison_operator", "is")).lower()
    if not isinstance(name, str) or not name:
        raise InvalidParam(
            "every metadata condition needs a name", params="metadata_filtering_conditions"
        )
    column = _field(name, index, params)
    value, key = condition.get("value"), f"mv{index}"
    if operator == "empty":
        return f"coalesce({column}, '') = ''"
    if operator == "not empty":
        return f"coalesce({column}, '') <> ''"
    if operator in ("in", "not in"):
        params[key] = [str(v) for v in (value if isinstance(value, list) else [value])]
        found = f"{column} = ANY(:{key})"
        return found if operator == "in" else f"NOT coalesce({found}, false)"
    if operator in NUMBER_OPERATORS:
        params[key] = _number(value)
        return f"{_as(column, 'numeric')} {NUMBER_OPERATORS[operator]} :{key}"
    if operator in TIME_OPERATORS:
        params[key] = str(value)
        return (
            f"{_as(column, 'timestamptz')} {TIME_OPERATORS[operator]} CAST(:{key} AS timestamptz)"
        )
    if operator in TEXT_OPERATORS:
        params[key] = str(value)
        return TEXT_OPERATORS[operator].format(f=column, p=key)
    raise InvalidParam(
        f"unknown comparison_operator {operator!r}", params="metadata_filtering_conditions"
    )


def _as(column: str, type_name: str) -> str:
    """The value as `type_name`, or NULL where it is not one (rather than a query error)."""
    return (
        f"(CASE WHEN pg_input_is_valid({column}, '{type_name}') THEN ({column})::{type_name} END)"
    )


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidParam(
            f"{value!r} is not a number", params="metadata_filtering_conditions"
        ) from None


def metadata_condition(filters: Mapping[str, Any] | None) -> Condition:
    conditions = (filters or {}).get("conditions") or []
    if not conditions:
        return Condition()
    joiner = (
        " OR " if str((filters or {}).get("logical_operator", "and")).lower() == "or" else " AND "
    )
    params: dict[str, Any] = {}
    parts = [_one(condition, i, params) for i, condition in enumerate(conditions)]
    return Condition(joiner.join(f"({part})" for part in parts), params)
