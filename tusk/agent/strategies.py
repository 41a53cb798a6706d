"""The two agent strategies: `function_call` (the model's native tool calling; the calls of one
round run concurrently) and `react` (a text format for models without it; see react.py).

Both run at most `max_iterations` rounds in which the model may call tools, then one more without
tools, so that a run always ends with an answer. A tool that fails, times out, is unknown or gets
arguments it cannot take gives the model an error observation; the run goes on. Every round is a
Step; `events()` yields each change of a step and each piece of the answer."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tusk.agent import react
from tusk.agent.steps import AgentEvent, AnswerPiece, Step, ThoughtChanged
from tusk.agent.toolbox import AgentTool
from tusk.models.base import ChatModel
from tusk.models.prices import Price
from tusk.models.types import (
    ChatRequest,
    Finish,
    Message,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolDefinition,
    Usage,
)
from tusk.tools.base import ToolResult, parse_arguments
from tusk.workflow.nodes.models import Reply, add_usage, empty_usage, usage_json
from tusk.workflow.nodes.prompts import saved_prompts

DEFAULT_MAX_ITERATIONS = 10
MAX_ITERATIONS = 99  # as Dify caps it
STRATEGIES = ("function_call", "react")
# Dify's names: agent-chat apps write "cot" for ReAct; agent nodes "function_calling", "ReAct".
ALIASES = {
    "function_call": "function_call",
    "function_calling": "function_call",
    "react": "react",
    "cot": "react",
}


def strategy_name(given: str) -> str | None:
    """Tusk's name of a strategy named as Dify names it, or None."""
    return ALIASES.get(given.strip().lower())


@dataclass
class AgentSetup:
    model: ChatModel
    messages: Sequence[Message]  # the system prompt, the conversation so far and the question
    tools: Sequence[AgentTool]
    price: Price = field(default_factory=lambda: Price(Decimal(0), Decimal(0)))
    parameters: dict[str, Any] = field(default_factory=dict)
    max_iterations: int = DEFAULT_MAX_ITERATIONS

    @property
    def rounds(self) -> int:
        return max(1, min(self.max_iterations, MAX_ITERATIONS)) + 1


def _definition(tool: AgentTool) -> ToolDefinition:
    return ToolDefinition(tool.name, tool.tool.description, tool.parameters())


def no_such_tool(name: str, tools: Sequence[AgentTool]) -> ToolResult:
    known = ", ".join(t.name for t in tools) or "none"
    return ToolResult.error(f"There is no tool named {name!r}. The tools are: {known}.")


class Agent:
    """One run of a strategy: its steps, its answer, its files and JSON results, its usage."""

    def __init__(self, setup: AgentSetup) -> None:
        self.setup = setup
        self.tools = {tool.name: tool for tool in setup.tools}
        self.steps: list[Step] = []
        self.answer = ""
        self.files: list[dict[str, Any]] = []
        self.json: list[dict[str, Any]] = []
        self.usage: dict[str, Any] = empty_usage()
        self.started = time.perf_counter()

    def events(self) -> AsyncIterator[AgentEvent]:
        raise NotImplementedError

    def _step(self) -> Step:
        step = Step(position=len(self.steps) + 1)
        self.steps.append(step)
        return step

    def _label(self, name: str) -> dict[str, str]:
        tool = self.tools.get(name)
        label = tool.label if tool is not None else name
        return {"en_US": label, "zh_Hans": label}

    async def _stream(
        self, messages: Sequence[Message], tools: Sequence[ToolDefinition], reply: Reply
    ) -> AsyncIterator[str]:
        """One model call: its text pieces as they come; `reply` gathers the whole."""
        request = ChatRequest(list(messages), tools=list(tools), parameters=self.setup.parameters)
        started = time.perf_counter()
        heads: dict[int, tuple[str, str]] = {}
        parts: dict[int, list[str]] = {}
        try:
            async for event in self.setup.model.stream(request):
                if isinstance(event, TextDelta | ToolCallDelta) and reply.first_token is None:
                    reply.first_token = time.perf_counter() - started
                if isinstance(event, TextDelta):
                    reply.text += event.text
                    yield event.text
                elif isinstance(event, ToolCallDelta):
                    call_id, name = heads.get(event.index, ("", ""))
                    heads[event.index] = (event.id or call_id, event.name or name)
                    parts.setdefault(event.index, []).append(event.arguments)
                elif isinstance(event, Usage):
                    reply.usage = event
                elif isinstance(event, Finish):
                    reply.finish_reason = event.reason
        finally:
            reply.latency = time.perf_counter() - started
        reply.tool_calls = [
            ToolCall(heads[i][0] or f"call_{uuid.uuid4().hex[:12]}", heads[i][1], "".join(parts[i]))
            for i in sorted(heads)
        ]

    def _account(self, step: Step, messages: Sequence[Message], reply: Reply) -> None:
        step.prompt = saved_prompts(messages)
        step.usage = usage_json(self.setup.price, reply)
        self.usage = add_usage(self.usage, step.usage)

    async def _invoke(self, step: Step, name: str, given: Any, *, lenient: bool) -> str:
        """Call one tool of the step; record its observation, meta and files."""
        tool = self.tools.get(name)
        if tool is None:
            result, meta = no_such_tool(name, self.setup.tools), {"error": "unknown tool"}
        else:
            result, meta = await tool.call(given, lenient=lenient)
        observation = result.observation()
        step.observations[name] = observation
        step.tool_meta[name] = meta
        step.files += result.files
        self.files += result.files
        self.json += result.json
        return observation

    def _finish(self) -> None:
        self.usage["latency"] = round(time.perf_counter() - self.started, 3)


def _parsed_input(call: ToolCall) -> Any:
    parsed = parse_arguments(call.arguments)
    return parsed if isinstance(parsed, dict) else call.arguments


class FunctionCallAgent(Agent):
    async def events(self) -> AsyncIterator[AgentEvent]:
        messages = list(self.setup.messages)
        definitions = [_definition(tool) for tool in self.setup.tools]
        for number in range(1, self.setup.rounds + 1):
            offered = definitions if number < self.setup.rounds else []
            step = self._step()
            yield ThoughtChanged(step)
            reply = Reply(self.setup.model.full_name)
            async for piece in self._stream(messages, offered, reply):
                self.answer += piece
                yield AnswerPiece(piece)
            self._account(step, messages, reply)
            step.thought = step.answer = reply.text
            calls = reply.tool_calls if offered else []
            if not calls:
                yield ThoughtChanged(step)
                break
            step.tools = [call.name for call in calls]
            step.tool_inputs = {call.name: _parsed_input(call) for call in calls}
            step.tool_labels = {call.name: self._label(call.name) for call in calls}
            yield ThoughtChanged(step)
            observations = await asyncio.gather(
                *(self._invoke(step, c.name, c.arguments, lenient=False) for c in calls)
            )
            yield ThoughtChanged(step)
            messages.append(Message("assistant", reply.text, tool_calls=calls))
            messages += [
                Message("tool", text, tool_call_id=call.id)
                for call, text in zip(calls, observations, strict=True)
            ]
        self._finish()


class ReactAgent(Agent):
    async def events(self) -> AsyncIterator[AgentEvent]:
        definitions = [_definition(tool) for tool in self.setup.tools]
        scratchpad: list[Message] = []
        stops = list(self.setup.parameters.get("stop") or [])
        self.setup.parameters = {**self.setup.parameters, "stop": [*stops, react.OBSERVATION_STOP]}
        for number in range(1, self.setup.rounds + 1):
            last = number == self.setup.rounds
            offered = [] if last else definitions
            messages = react.react_messages(
                self.setup.messages, offered, scratchpad, last_round=last and bool(definitions)
            )
            step = self._step()
            yield ThoughtChanged(step)
            reply, shown = Reply(self.setup.model.full_name), react.FinalAnswerStream()
            async for piece in self._stream(messages, [], reply):
                if visible := shown.feed(piece):
                    self.answer += visible
                    yield AnswerPiece(visible)
            self._account(step, messages, reply)
            output = react.parse(reply.text)
            step.thought, step.answer = output.thought, reply.text
            if (output.action is None and output.problem is None) or last:
                async for event in self._final(step, output, shown):
                    yield event
                break
            async for event in self._act(step, output):
                yield event
            observation = next(iter(step.observations.values()), step.note)
            scratchpad += react.round_messages(reply.text, observation)
        self._finish()

    async def _final(
        self, step: Step, output: react.ReactOutput, shown: react.FinalAnswerStream
    ) -> AsyncIterator[AgentEvent]:
        final = output.final if output.final is not None else output.thought
        rest = shown.rest(final)
        if rest:
            self.answer += rest
            yield AnswerPiece(rest)
        yield ThoughtChanged(step)

    async def _act(self, step: Step, output: react.ReactOutput) -> AsyncIterator[AgentEvent]:
        if output.action is None:  # an action that could not be read: say so to the model
            step.note = output.problem or ""
            yield ThoughtChanged(step)
            return
        name = output.action.name
        step.tools = [name]
        step.tool_inputs = {name: output.action.input}
        step.tool_labels = {name: self._label(name)}
        yield ThoughtChanged(step)
        await self._invoke(step, name, output.action.input, lenient=True)
        yield ThoughtChanged(step)


def make_agent(strategy: str, setup: AgentSetup) -> Agent:
    """An agent of the strategy named (as Tusk or Dify names it)."""
    name = strategy_name(strategy)
    if name == "react":
        return ReactAgent(setup)
    if name == "function_call":
        return FunctionCallAgent(setup)
    raise ValueError(f"unknown agent strategy {strategy!r} (Tusk has {', '.join(STRATEGIES)})")
