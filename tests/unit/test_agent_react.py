"""The ReAct format: what models write, well-formed or not, read into an action, a final answer,
or a problem to tell the model about; and the prompt that teaches the format."""

from __future__ import annotations

import pytest

from tusk.agent.react import (
    PROBLEM,
    Action,
    FinalAnswerStream,
    ReactOutput,
    parse,
    react_messages,
    round_messages,
)
from tusk.models.types import Message, ToolDefinition


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'Thought: I need the weather.\nAction: get_weather\nAction Input: {"city": "Paris"}',
            ReactOutput("I need the weather.", Action("get_weather", {"city": "Paris"})),
        ),
        (  # prefixes in another case, a name in backticks, a fenced input
            "thought: look it up\nACTION: `get_weather`\naction input:\n"
            '```json\n{"city": "Oslo"}\n```',
            ReactOutput("look it up", Action("get_weather", {"city": "Oslo"})),
        ),
        (  # an input that is not JSON stays text (the tool may take it as its only parameter)
            "Thought: search\nAction: search\nAction Input: tallest tower in Paris",
            ReactOutput("search", Action("search", "tallest tower in Paris")),
        ),
        (  # Dify's JSON blob
            "Thought: weather\nAction:\n```\n"
            '{"action": "get_weather", "action_input": {"city": "Rome"}}\n```',
            ReactOutput("weather", Action("get_weather", {"city": "Rome"})),
        ),
        (  # Dify's final answer blob
            "Thought: done\nAction:\n```\n"
            '{"action": "Final Answer", "action_input": "It is sunny."}\n```',
            ReactOutput("done", final="It is sunny."),
        ),
        (
            "Thought: I know this.\nFinal Answer: Paris is the capital of France.",
            ReactOutput("I know this.", final="Paris is the capital of France."),
        ),
        (  # an observation the model made up is cut off
            'Thought: t\nAction: get_weather\nAction Input: {"city": "Paris"}\nObservation: sunny\n'
            "Final Answer: sunny",
            ReactOutput("t", Action("get_weather", {"city": "Paris"})),
        ),
        (  # no format at all: the text is the answer
            "Hello! How can I help you today?",
            ReactOutput(
                "Hello! How can I help you today?", final="Hello! How can I help you today?"
            ),
        ),
        (  # an action without a name is a problem to report
            "Thought: hmm\nAction:\nAction Input: {}",
            ReactOutput("hmm", problem=PROBLEM),
        ),
        (  # an action with no input calls the tool without arguments
            "Thought: what time is it\nAction: current_time",
            ReactOutput("what time is it", Action("current_time", {})),
        ),
    ],
)
def test_parse(text: str, expected: ReactOutput) -> None:
    assert parse(text) == expected


def test_the_final_answer_streams_as_it_is_written() -> None:
    stream = FinalAnswerStream()
    pieces = ["Thought: easy\nFinal", " Answer:", " Paris", " is", " big."]
    shown = "".join(stream.feed(piece) for piece in pieces)
    assert shown == "Paris is big."
    assert stream.rest("Paris is big.") == ""
    silent = FinalAnswerStream()
    assert silent.feed("Thought: x\nAction: search\n") == ""
    assert silent.rest("whole text") == "whole text"


def test_the_prompt_keeps_the_instruction_and_lists_the_tools() -> None:
    tool = ToolDefinition("get_weather", "The weather in a city", {"type": "object"})
    base = [Message("system", "You are a travel agent."), Message("user", "Weather in Paris?")]
    scratch = round_messages("Thought: t\nAction: get_weather", "sunny")
    messages = react_messages(base, [tool], scratch)
    assert messages[0].role == "system"
    assert messages[0].text.startswith("You are a travel agent.")
    assert "get_weather: The weather in a city" in messages[0].text
    assert [m.role for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[-1].text == "Observation: sunny"
    last = react_messages(base, [], scratch, last_round=True)
    assert "get_weather" not in last[0].text
    assert "cannot use tools" in last[-1].text
