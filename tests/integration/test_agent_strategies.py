"""Agent strategies against FakeOpenAI scripted to call tools, through the real model runtime:
single and parallel calls, a tool that fails, one that times out, an unknown tool, arguments that
are not JSON or of the wrong type, the iteration limit, and ReAct rounds written well or badly."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from tests.support.knowledge import new_workspace, services_on
from tusk.agent import AgentSetup, AgentTool, AnswerPiece, ThoughtChanged, make_agent
from tusk.models.types import Message
from tusk.services import Services
from tusk.testing.llm_server import ToolCall
from tusk.testing.openai_server import FakeOpenAI
from tusk.tools.base import Tool, ToolContext, ToolResult, object_schema
from tusk.workflow.context import Resources

pytestmark = pytest.mark.asyncio(loop_scope="module")
KEY = "sk-agents"
MODEL = "openai:gpt-4o-mini"


class Weather(Tool):
    name = "get_weather"
    description = "The weather in a city"
    parameters = object_schema(
        {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}}, ["city"]
    )

    async def invoke(self, params: dict[str, Any], context: ToolContext) -> ToolResult:
        await asyncio.sleep(0.3)  # long enough that calls in turn would show
        return ToolResult(text=f"sunny in {params['city']}", json=[{"city": params["city"]}])


class Broken(Tool):
    name = "broken"
    description = "Always fails"

    async def invoke(self, params: dict[str, Any], context: ToolContext) -> ToolResult:
        raise RuntimeError("the disk is full")


class Sleepy(Tool):
    name = "sleepy"
    description = "Takes far too long"

    async def invoke(self, params: dict[str, Any], context: ToolContext) -> ToolResult:
        await asyncio.sleep(30)
        return ToolResult(text="never")


class BrokenJson(ToolCall):
    """A tool call whose arguments are not JSON, as models sometimes write them."""

    def arguments_json(self) -> str:
        return '{"city": "Paris"'


@pytest.fixture(scope="module")
def openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY) as fake:
        yield fake


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def services(database: str, openai: FakeOpenAI) -> AsyncIterator[Services]:
    async with services_on(database, openai_api_key=KEY, openai_api_base=openai.base_url) as made:
        yield made


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def workspace(services: Services) -> uuid.UUID:
    return await new_workspace(services)


def toolbox(services: Services, workspace: uuid.UUID, *tools: Tool) -> list[AgentTool]:
    resources = Resources(
        services.settings, services.sessions, services.storage, services.models, services.sandbox
    )
    context = ToolContext(workspace, resources, timeout=0.5)
    return [AgentTool(tool, context) for tool in tools]


async def run(
    services: Services, workspace: uuid.UUID, strategy: str, tools: list[AgentTool], **kw: Any
) -> tuple[Any, list[Any]]:
    model = await services.models.chat(workspace, MODEL)
    messages = [Message("system", "You help travellers."), Message("user", "Weather in Paris?")]
    agent = make_agent(strategy, AgentSetup(model, messages, tools, **kw))
    events = [event async for event in agent.events()]
    return agent, events


def sent(openai: FakeOpenAI, index: int) -> dict[str, Any]:
    body = openai.requests[index].json
    assert isinstance(body, dict)
    return body


async def test_one_tool_call_then_the_answer(
    services: Services, workspace: uuid.UUID, openai: FakeOpenAI
) -> None:
    openai.clear()
    openai.reply_tool_calls([ToolCall("get_weather", {"city": "Paris"})], "Let me check.")
    openai.reply("It is sunny in Paris.")
    agent, events = await run(
        services, workspace, "function_call", toolbox(services, workspace, Weather())
    )
    assert agent.answer == "Let me check.It is sunny in Paris."
    assert "".join(e.text for e in events if isinstance(e, AnswerPiece)) == agent.answer
    first, second = agent.steps
    assert (first.position, first.tool, first.thought) == (1, "get_weather", "Let me check.")
    assert json.loads(first.tool_input) == {"get_weather": {"city": "Paris"}}
    assert json.loads(first.observation) == {"get_weather": "sunny in Paris"}
    assert (second.tool, second.thought) == ("", "It is sunny in Paris.")
    assert agent.json == [{"city": "Paris"}]
    assert agent.usage["total_tokens"] == sum(s.usage["total_tokens"] for s in agent.steps) > 0
    # the model saw its call and the result, answering the call by its id
    messages = sent(openai, 1)["messages"]
    call_id = messages[-2]["tool_calls"][0]["id"]
    assert messages[-1] == {"role": "tool", "content": "sunny in Paris", "tool_call_id": call_id}
    assert sent(openai, 0)["tools"][0]["function"]["name"] == "get_weather"
    changed = [e.step.position for e in events if isinstance(e, ThoughtChanged)]
    assert changed == [1, 1, 1, 2, 2]  # begun, calls known, observations; begun, answered


async def test_parallel_calls_run_concurrently(
    services: Services, workspace: uuid.UUID, openai: FakeOpenAI
) -> None:
    openai.clear()
    calls = [ToolCall("get_weather", {"city": "Paris"}), ToolCall("get_weather", {"city": "Oslo"}),
             ToolCall("broken")]  # fmt: skip
    openai.reply_tool_calls(calls)
    openai.reply("Done.")
    tools = toolbox(services, workspace, Weather(), Broken())
    started = time.perf_counter()
    agent, _ = await run(services, workspace, "function_call", tools)
    assert time.perf_counter() - started < 1.5
    assert agent.steps[0].tool == "get_weather;get_weather;broken"
    tool_messages = [m for m in sent(openai, 1)["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages] == [
        "sunny in Paris",
        "sunny in Oslo",
        "Tool broken failed: RuntimeError: the disk is full",
    ]
    assert agent.steps[0].tool_meta["broken"]["error"].startswith("Tool broken failed")
    assert agent.answer == "Done."


async def test_timeouts_bad_arguments_and_unknown_tools_are_observations(
    services: Services, workspace: uuid.UUID, openai: FakeOpenAI
) -> None:
    openai.clear()
    openai.reply_tool_calls([
        ToolCall("sleepy"),
        BrokenJson("get_weather"),
        ToolCall("get_weather", {"city": "Paris", "days": 0}),
        ToolCall("teleport", {"to": "Mars"}),
    ])  # fmt: skip
    openai.reply("Sorry, I could not find out.")
    tools = toolbox(services, workspace, Weather(), Sleepy())
    agent, _ = await run(services, workspace, "function_call", tools)
    observations = [m["content"] for m in sent(openai, 1)["messages"] if m["role"] == "tool"]
    assert observations[0] == "Tool sleepy did not finish within 0.5 seconds"
    assert observations[1].startswith(
        "Invalid arguments for tool get_weather: the arguments are not valid JSON"
    )
    assert observations[2] == (
        "Invalid arguments for tool get_weather: days: 0 is less than the minimum of 1"
    )
    assert (
        observations[3] == "There is no tool named 'teleport'. The tools are: get_weather, sleepy."
    )
    assert json.loads(agent.steps[0].tool_input)["get_weather"] == {"city": "Paris", "days": 0}
    assert agent.answer == "Sorry, I could not find out."


async def test_the_last_round_offers_no_tools(
    services: Services, workspace: uuid.UUID, openai: FakeOpenAI
) -> None:
    openai.clear()
    for city in ("Paris", "Oslo"):
        openai.reply_tool_calls([ToolCall("get_weather", {"city": city})])
    openai.reply("Paris and Oslo are sunny.")
    tools = toolbox(services, workspace, Weather())
    agent, _ = await run(services, workspace, "function_call", tools, max_iterations=2)
    assert len(openai.requests) == 3
    assert [bool(sent(openai, i).get("tools")) for i in range(3)] == [True, True, False]
    assert [s.tool for s in agent.steps] == ["get_weather", "get_weather", ""]
    assert agent.answer == "Paris and Oslo are sunny."


async def test_react_rounds_well_and_badly_written(
    services: Services, workspace: uuid.UUID, openai: FakeOpenAI
) -> None:
    openai.clear()
    openai.reply("Thought: I should look.\nAction: get_weather\nAction Input: Paris")
    openai.reply("Thought: hmm\nAction:\n")  # an action without a tool: told to the model
    final = ["Thought: I know now.\nFinal", " Answer: It is", " sunny in Paris."]
    openai.reply("".join(final), chunks=final)
    tools = toolbox(services, workspace, Weather())
    agent, events = await run(services, workspace, "react", tools)
    assert agent.answer == "It is sunny in Paris."
    pieces = [e.text for e in events if isinstance(e, AnswerPiece)]
    assert pieces == ["It is", " sunny in Paris."]  # only the final answer, as it came
    first, second, third = agent.steps
    assert (first.thought, first.tool) == ("I should look.", "get_weather")
    assert json.loads(first.observation) == {"get_weather": "sunny in Paris"}  # text as the city
    assert second.tool == ""
    assert "could not be read" in second.observation
    assert third.thought == "I know now."
    request = sent(openai, 2)
    assert "tools" not in request
    assert "Observation:" in request["stop"]
    assert request["messages"][0]["content"].startswith("You help travellers.")
    assert "Action Input" in request["messages"][0]["content"]
    assert request["messages"][-1]["content"].startswith("Observation: Your reply has an Action")


async def test_react_text_without_the_format_is_the_answer(
    services: Services, workspace: uuid.UUID, openai: FakeOpenAI
) -> None:
    openai.clear()
    openai.reply("Hello! Ask me about the weather.")
    agent, events = await run(services, workspace, "cot", toolbox(services, workspace, Weather()))
    assert agent.answer == "Hello! Ask me about the weather."
    assert [e.text for e in events if isinstance(e, AnswerPiece)] == [agent.answer]
    assert len(agent.steps) == 1
