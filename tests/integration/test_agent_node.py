"""The agent workflow node with Dify's configuration, run by the engine against FakeOpenAI with a
real built-in tool: the answer streamed and output, fixed tool settings hidden from the model,
the rounds in the metadata, and configurations Tusk cannot run refused by name."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio

from tests.support.api import SECRET
from tests.support.knowledge import new_workspace, services_on
from tests.support.workflow import chain, node, run_graph
from tusk.models.runtime import ModelRuntime
from tusk.services import Services
from tusk.testing.llm_server import ToolCall
from tusk.testing.openai_server import FakeOpenAI
from tusk.workflow.context import Resources

pytestmark = pytest.mark.asyncio(loop_scope="module")
KEY = "sk-agent-node"
MODEL = {
    "provider": "langgenius/openai/openai",
    "model": "gpt-4o-mini",
    "mode": "chat",
    "model_type": "llm",
    "completion_params": {"temperature": 0.1},
    "type": "model-selector",
}
TIME_TOOL = {
    "enabled": True,
    "provider_name": "time",
    "tool_name": "current_time",
    "type": "builtin",
    "tool_label": "Current Time",
    "parameters": {"timezone": {"auto": 1, "value": None}},
    "settings": {"format": {"value": "%Y"}},
}


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


def agent_node(strategy: str = "function_calling", **parameters: Any) -> dict[str, Any]:
    given = {
        "model": {"type": "constant", "value": MODEL},
        "tools": {"type": "constant", "value": [TIME_TOOL]},
        "instruction": {"type": "constant", "value": "You tell the time."},
        "query": {"type": "constant", "value": "{{#start.question#}}"},
        "maximum_iterations": {"type": "constant", "value": 3},
        **parameters,
    }
    return node(
        "agent",
        "agent",
        agent_strategy_provider_name="langgenius/agent/agent",
        agent_strategy_name=strategy,
        agent_strategy_label=strategy,
        agent_parameters=given,
    )


def graph(agent: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    question = {"variable": "question", "label": "Question", "type": "text-input"}
    nodes = [
        node("start", "start", variables=[question]),
        agent,
        node("end", "end", outputs=[{"variable": "answer", "value_selector": ["agent", "text"]}]),
    ]
    return nodes, chain("start", "agent", "end")


async def run_agent(services: Services, workspace: uuid.UUID, agent: dict[str, Any]) -> Any:
    # No usage recorder: these runs have no app row for model_usage to point at.
    models = ModelRuntime(services.sessions, SECRET, services.models.config)
    resources = Resources(
        services.settings, services.sessions, services.storage, models, services.sandbox
    )
    nodes, edges = graph(agent)
    return await run_graph(
        nodes, edges, {"question": "Which year is it?"}, resources=resources,
        workspace_id=workspace,
    )  # fmt: skip


async def test_the_agent_node_calls_tools_and_answers(
    services: Services, workspace: uuid.UUID, openai: FakeOpenAI
) -> None:
    openai.clear()
    openai.reply_tool_calls([ToolCall("current_time", {"timezone": "Europe/Paris"})])
    openai.reply("It is the year on the clock.")
    outcome = await run_agent(services, workspace, agent_node())
    assert outcome.state.status == "succeeded", outcome.state.error
    assert outcome.state.outputs == {"answer": "It is the year on the clock."}
    assert outcome.streamed == "It is the year on the clock."
    first = openai.requests[0].json
    assert first["messages"][0] == {"role": "system", "content": "You tell the time."}
    assert first["messages"][1] == {"role": "user", "content": "Which year is it?"}
    declared = first["tools"][0]["function"]
    assert declared["name"] == "current_time"
    assert "format" not in declared["parameters"]["properties"]  # fixed by the author
    tool_reply = openai.requests[1].json["messages"][-1]
    assert tool_reply["content"] == str(datetime.now(UTC).year)
    finished = outcome.finished("agent")[-1].node
    log = finished.metadata["agent_log"]
    assert [entry["tool"] for entry in log] == ["current_time", ""]
    assert finished.metadata["total_tokens"] > 0
    assert finished.outputs["files"] == []


async def test_react_through_the_node(
    services: Services, workspace: uuid.UUID, openai: FakeOpenAI
) -> None:
    openai.clear()
    openai.reply('Thought: check\nAction: current_time\nAction Input: {"timezone": "UTC"}')
    openai.reply("Thought: done\nFinal Answer: A fine year.")
    outcome = await run_agent(services, workspace, agent_node("ReAct"))
    assert outcome.state.status == "succeeded", outcome.state.error
    assert outcome.state.outputs == {"answer": "A fine year."}
    assert "Observation: " + str(datetime.now(UTC).year) in str(openai.requests[1].json)


async def test_configurations_tusk_cannot_run_are_named(
    services: Services, workspace: uuid.UUID
) -> None:
    strategy = await run_agent(services, workspace, agent_node("mcp_sse_function_calling"))
    assert strategy.state.status == "failed"
    assert "mcp_sse_function_calling" in (strategy.state.error or "")
    unknown = {**TIME_TOOL, "provider_name": "langgenius/tavily/tavily", "tool_name": "search"}
    tools = {"type": "constant", "value": [unknown]}
    provider = await run_agent(services, workspace, agent_node(tools=tools))
    assert provider.state.status == "failed"
    assert "langgenius/tavily/tavily" in (provider.state.error or "")
