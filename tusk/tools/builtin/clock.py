"""Current time: now, in a time zone, in a strftime format."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tusk.tools.base import Tool, ToolContext, ToolError, ToolProvider, ToolResult, object_schema

DEFAULT_FORMAT = "%Y-%m-%d %H:%M:%S %Z"


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name.strip() or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ToolError(
            f"unknown time zone {name!r}: use an IANA name such as 'UTC' or 'Europe/Paris'"
        ) from None


def now_text(timezone: str, fmt: str, now: datetime | None = None) -> str:
    moment = (now or datetime.now(tz=zone("UTC"))).astimezone(zone(timezone))
    try:
        return moment.strftime(fmt or DEFAULT_FORMAT)
    except ValueError as exc:
        raise ToolError(f"the format {fmt!r} cannot be used: {exc}") from None


class CurrentTime(Tool):
    name = "current_time"
    label = "Current Time"
    description = "The current date and time in a time zone (IANA name, default UTC)."
    parameters = object_schema(
        {
            "timezone": {"type": "string", "description": "IANA time zone, e.g. Europe/Paris"},
            "format": {"type": "string", "description": f"strftime format, {DEFAULT_FORMAT}"},
        }
    )

    async def invoke(self, params: dict[str, Any], context: ToolContext) -> ToolResult:
        timezone = str(params.get("timezone") or "UTC")
        return ToolResult(text=now_text(timezone, str(params.get("format") or DEFAULT_FORMAT)))


class TimeProvider(ToolProvider):
    name = "time"
    label = "Time"
    description = "Date and time."

    def tools(self) -> Sequence[Tool]:
        return (CurrentTime(),)
