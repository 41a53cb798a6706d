"""The inputs a run starts with, checked against the Start node's form as Dify checks them: the
same rules and the same messages, each naming the field. A bad input is a 400 `invalid_param`."""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from tusk.errors import InvalidParam
from tusk.workflow.nodes.flow import StartVariable

TEXT_TYPES = frozenset({"text-input", "paragraph", "select"})
TRUE, FALSE = frozenset({"true", "1", "yes", "on"}), frozenset({"false", "0", "no", "off"})
FileResolver = Callable[[Mapping[str, Any], StartVariable], Awaitable[dict[str, Any]]]


def _missing(value: Any) -> bool:
    return value is None or value == "" or value == []


async def check_inputs(
    form: Sequence[StartVariable], given: Mapping[str, Any], resolve_file: FileResolver
) -> dict[str, Any]:
    """The run's inputs: every form field checked and converted, defaults applied. Keys the
    form does not declare are kept as given (Dify passes them on to the pool too)."""
    if not isinstance(given, Mapping):
        raise InvalidParam("inputs must be an object.", params="inputs")
    inputs = dict(given)
    for field in form:
        value = given.get(field.variable)
        if _missing(value):
            if field.required:
                raise InvalidParam(
                    f"{field.variable} is required in input form", params=field.variable
                )
            inputs[field.variable] = field.default if field.default not in (None, "") else None
            continue
        inputs[field.variable] = await _convert(field, value, resolve_file)
    return inputs


async def _convert(field: StartVariable, value: Any, resolve_file: FileResolver) -> Any:
    kind = field.type
    if kind in TEXT_TYPES:
        return _text(field, value)
    if kind == "number":
        return _number(field, value)
    if kind == "checkbox":
        return _boolean(field, value)
    if kind == "json_object":
        return _json_object(field, value)
    if kind == "file":
        if not isinstance(value, Mapping):
            raise _wrong(field, "must be a file object")
        return await resolve_file(value, field)
    if kind == "file-list":
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            raise _wrong(field, "must be a list of file objects")
        if field.max_length and len(value) > field.max_length:
            raise _wrong(field, f"must have at most {field.max_length} files")
        return [await resolve_file(v, field) for v in value]
    return value


def _wrong(field: StartVariable, problem: str) -> InvalidParam:
    return InvalidParam(f"{field.variable} in input form {problem}", params=field.variable)


def _text(field: StartVariable, value: Any) -> str:
    if not isinstance(value, str):
        raise _wrong(field, "must be a string")
    text = value.replace("\x00", "")
    if field.type == "select":
        if field.options and text not in field.options:
            raise _wrong(field, f"must be one of the following: {field.options}")
        return text
    if field.max_length and len(text) > field.max_length:
        raise _wrong(field, f"must be less than {field.max_length} characters")
    return text


def _number(field: StartVariable, value: Any) -> int | float:
    if isinstance(value, bool):
        raise _wrong(field, "must be a valid number")
    if isinstance(value, int | float):
        number: int | float = value
    elif isinstance(value, str):
        try:
            number = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            raise _wrong(field, "must be a valid number") from None
    else:
        raise _wrong(field, "must be a valid number")
    if isinstance(number, float) and not math.isfinite(number):
        raise _wrong(field, "must be a valid number")
    return number


def _boolean(field: StartVariable, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | str) and str(value).strip().lower() in TRUE | FALSE:
        return str(value).strip().lower() in TRUE
    raise _wrong(field, "must be a boolean")


def _json_object(field: StartVariable, value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise _wrong(field, "must be a valid JSON object") from None
    if not isinstance(value, dict):
        raise _wrong(field, "must be a valid JSON object")
    return value
