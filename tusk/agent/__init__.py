"""Agents: a model that decides which tools to call, round after round, until it answers. Two
strategies (`function_call`, `react`), each round recorded as a Step (Dify's
message_agent_thoughts). See docs/tools.md, "Agents".

    agent = make_agent("function_call", AgentSetup(model, messages, tools, price))
    async for event in agent.events():  # ThoughtChanged(step) | AnswerPiece(text)
        ...
    agent.answer, agent.steps, agent.usage, agent.files
"""

from tusk.agent.steps import AgentEvent, AnswerPiece, Step, ThoughtChanged
from tusk.agent.strategies import Agent, AgentSetup, make_agent, strategy_name
from tusk.agent.toolbox import AgentTool, ToolRef, load_tool

__all__ = [
    "Agent",
    "AgentEvent",
    "AgentSetup",
    "AgentTool",
    "AnswerPiece",
    "Step",
    "ThoughtChanged",
    "ToolRef",
    "load_tool",
    "make_agent",
    "strategy_name",
]
