"""Values in a workflow: their Dify type names, how they read as text and as Markdown, files,
and the size limit on what a node may put into the run."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

FILE_IDENTITY = "__dify__file__"
FILE_ATTRIBUTES = {
    "name": "filename",
    "size": "size",
    "type": "type",
    "extension": "extension",
    "mime_type": "mime_type",
    "transfer_method": "transfer_method",
    "url": "url",
    "related_id": "related_id",
}


class ValueTooLarge(ValueError):
    pass


def is_file(value: Any) -> bool:
    return isinstance(value, Mapping) and value.get("dify_model_identity") == FILE_IDENTITY


def file_attribute(file: Mapping[str, Any], name: str) -> Any:
    key = FILE_ATTRIBUTES.get(name, name)
    if key == "url":
        return file.get("url") or file.get("remote_url")
    return file.get(key)


def type_of(value: Any) -> str:
    """Dify's type name for a value (`string`, `number`, `object`, `array[string]`, ...)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if is_file(value):
        return "file"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        kinds = {type_of(item) for item in value}
        return f"array[{kinds.pop()}]" if len(kinds) == 1 else "array[any]"
    return "any"


def conforms(value: Any, type_name: str) -> bool:
    """Whether `value` may stand where a value of `type_name` is expected."""
    actual = type_of(value)
    if type_name in (actual, "any", "array[any]" if actual.startswith("array") else ""):
        return True
    if type_name in ("integer", "float"):
        return actual == "number" and (type_name == "float" or isinstance(value, int))
    if type_name.startswith("array[") and isinstance(value, list | tuple) and not value:
        return True
    return type_name == "number" and actual == "boolean"


def to_text(value: Any) -> str:
    """The text a value puts into a template, as Dify writes it."""
    if value is None or is_file(value):
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        if not value or all(is_file(item) for item in value):
            return ""
        if all(isinstance(item, str) for item in value):
            return json.dumps(list(value), ensure_ascii=False)
        return str(list(value))
    return str(value)


def file_markdown(file: Mapping[str, Any]) -> str:
    link = f"[{file.get('filename') or ''}]({file_attribute(file, 'url') or ''})"
    return f"!{link}" if file.get("type") == "image" else link


def to_markdown(value: Any) -> str:
    """How a value reads in a chat answer."""
    if value is None:
        return ""
    if is_file(value):
        return file_markdown(value)
    if isinstance(value, Mapping):
        return json.dumps(value, ensure_ascii=False, indent=2)
    if isinstance(value, list | tuple):
        if value and all(is_file(item) for item in value):
            return "\n".join(file_markdown(item) for item in value)
        return "\n".join(f"- {item}" for item in value)
    return str(value)


def encoded_size(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode())
    if value is None or isinstance(value, bool | int | float):
        return 8
    return len(json.dumps(value, ensure_ascii=False, default=str).encode())


def check_size(name: str, value: Any, limit: int) -> None:
    if isinstance(value, str) and len(value) * 4 <= limit:
        return  # cannot be over, whatever the encoding
    if (size := encoded_size(value)) > limit:
        raise ValueTooLarge(f"{name} is {size} bytes; the limit is {limit} bytes")
