"""The tool interface: arguments checked against the schema (with clear errors a model can act
on), text arguments read as their declared types, time limits, and failures as error results."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from tusk.tools.base import (
    Tool,
    ToolContext,
    ToolError,
    ToolResult,
    argument_problem,
    call,
    coerce,
    object_schema,
    parse_arguments,
)
from tusk.tools.builtin.clock import CurrentTime, now_text
from tusk.workflow.context import Resources

SCHEMA = object_schema(
    {
        "city": {"type": "string"},
        "days": {"type": "integer", "minimum": 1},
        "metric": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    ["city"],
)


class Forecast(Tool):
    name = "forecast"
    parameters = SCHEMA

    def __init__(self, behaviour: str = "ok") -> None:
        self.behaviour = behaviour

    async def invoke(self, params: dict[str, Any], context: ToolContext) -> ToolResult:
        if self.behaviour == "slow":
            await asyncio.sleep(5)
        if self.behaviour == "refuses":
            raise ToolError("the city is not covered")
        if self.behaviour == "crashes":
            raise KeyError("boom")
        return ToolResult.of_json(params)


def context(timeout: float = 5.0) -> ToolContext:
    return ToolContext(uuid.uuid4(), cast(Resources, None), timeout=timeout)


def test_text_arguments_are_read_as_their_declared_types() -> None:
    given = {"city": "Lyon", "days": "3", "metric": "true", "tags": '["a"]'}
    assert coerce(given, SCHEMA) == {"city": "Lyon", "days": 3, "metric": True, "tags": ["a"]}
    assert coerce({"days": "three"}, SCHEMA) == {"days": "three"}


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({}, "'city' is a required property"),
        ({"city": "Lyon", "days": 0}, "days: 0 is less than the minimum of 1"),
        ({"city": 5}, "city: 5 is not of type 'string'"),
        ([1], "must be a JSON object"),
    ],
)
def test_argument_problems_say_what_is_wrong(params: Any, problem: str) -> None:
    found = argument_problem(params, SCHEMA)
    assert found is not None
    assert problem in found


def test_model_arguments_that_are_not_an_object_are_explained() -> None:
    assert parse_arguments('{"city": "Lyon"}') == {"city": "Lyon"}
    assert parse_arguments(None) == {}
    assert "not valid JSON" in str(parse_arguments('{"city": '))
    assert "must be a JSON object" in str(parse_arguments("[1, 2]"))


async def test_a_valid_call_returns_the_tools_result() -> None:
    result = await call(Forecast(), '{"city": "Lyon", "days": "2"}', context())
    assert not result.is_error
    assert result.json == [{"city": "Lyon", "days": 2}]


@pytest.mark.parametrize(
    ("behaviour", "raw", "message"),
    [
        ("ok", '{"days": 2}', "Invalid arguments for tool forecast: 'city' is a required"),
        ("ok", "{not json", "Invalid arguments for tool forecast: the arguments are not valid"),
        ("refuses", '{"city": "Lyon"}', "Tool forecast failed: the city is not covered"),
        ("crashes", '{"city": "Lyon"}', "Tool forecast failed: KeyError"),
        ("slow", '{"city": "Lyon"}', "Tool forecast did not finish within 0.2 seconds"),
    ],
)
async def test_failures_become_error_results(behaviour: str, raw: str, message: str) -> None:
    result = await call(Forecast(behaviour), raw, context(timeout=0.2))
    assert result.is_error
    assert result.text.startswith(message)


async def test_current_time_in_a_time_zone() -> None:
    noon = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    assert now_text("Asia/Tokyo", "%H:%M %Z", noon) == "21:00 JST"
    result = await call(CurrentTime(), {"timezone": "Mars/Base"}, context())
    assert result.is_error
    assert "unknown time zone 'Mars/Base'" in result.text
    result = await call(CurrentTime(), {"format": "%Y"}, context())
    assert result.text == str(datetime.now(UTC).year)
