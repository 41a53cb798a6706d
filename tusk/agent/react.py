"""ReAct for models without native tool calling: the prompt that teaches the format, and a parser
of what models really write (pure: no I/O).

The format asked for is `Thought:`, then either `Action:` with `Action Input:` (a JSON object) or
`Final Answer:`. The parser also reads Dify's style (a JSON blob `{"action": ..., "action_input":
...}`, fenced or bare), tolerates prefixes in any case, fenced inputs, a tool name in quotes or
backticks, an observation the model made up (cut off), and text that follows no format at all
(the answer). An `Action:` it cannot read is a problem to report back to the model."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tusk.models.types import Message, ToolDefinition

OBSERVATION_STOP = "Observation:"
FINAL_NAMES = frozenset({"final answer", "final_answer", "finalanswer"})

FORMAT = """You can use these tools:

{tools}

To use a tool, answer in exactly this form and then stop:

Thought: what you need to do next
Action: the tool's name, one of [{names}]
Action Input: the tool's arguments as one JSON object

You will then get the tool's result as "Observation: ...". Repeat Thought / Action / Action Input
as many times as you need. When you can answer, write:

Thought: I can answer now
Final Answer: your answer to the user

Always start with "Thought:". Use one action at a time."""

NO_TOOLS = """Answer the user directly, in this form:

Thought: what you consider
Final Answer: your answer to the user"""

LAST_ROUND = (
    "You cannot use tools any more. Give your best answer now from what you know, in the form "
    '"Final Answer: ..."'
)

MARK = re.compile(
    r"^[ \t*]*(thought|action input|action|final answer|observation)[ \t*]*:", re.I | re.M
)
FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", re.S)


@dataclass(frozen=True)
class Action:
    name: str
    input: Any  # a JSON value, or the text as written when it is not JSON


@dataclass(frozen=True)
class ReactOutput:
    thought: str
    action: Action | None = None
    final: str | None = None
    problem: str | None = None  # an action that could not be read, said for the model


# --- the prompt ----------------------------------------------------------------------------------


def describe_tools(tools: Sequence[ToolDefinition]) -> str:
    lines = []
    for tool in tools:
        schema = json.dumps(tool.parameters, ensure_ascii=False)
        lines.append(f"- {tool.name}: {tool.description or tool.name}\n  arguments: {schema}")
    return "\n".join(lines)


def format_text(tools: Sequence[ToolDefinition]) -> str:
    if not tools:
        return NO_TOOLS
    names = ", ".join(tool.name for tool in tools)
    return FORMAT.format(tools=describe_tools(tools), names=names)


def react_messages(
    base: Sequence[Message],
    tools: Sequence[ToolDefinition],
    scratchpad: Sequence[Message],
    *,
    last_round: bool = False,
) -> list[Message]:
    """The conversation as given (its system message, history and question) with the format
    added to the system message, then the rounds so far."""
    rest = list(base)
    instruction = ""
    if rest and rest[0].role == "system":
        instruction = rest.pop(0).text.strip()
    system = "\n\n".join(part for part in (instruction, format_text(tools)) if part)
    messages = [Message("system", system), *rest, *scratchpad]
    if last_round:
        messages.append(Message("user", LAST_ROUND))
    return messages


def round_messages(text: str, observation: str) -> list[Message]:
    """What one round adds to the scratchpad: the model's words, then what it observed."""
    return [Message("assistant", text.strip()), Message("user", f"Observation: {observation}")]


# --- the parser ----------------------------------------------------------------------------------


def _without_made_up_observation(text: str) -> str:
    for match in MARK.finditer(text):
        if match.group(1).lower() == "observation":
            return text[: match.start()]
    return text


def _strip_fence(text: str) -> str:
    found = FENCE.search(text)
    return found.group(1).strip() if found else text.strip().strip("`").strip()


def _json_value(text: str) -> Any:
    cleaned = _strip_fence(text)
    try:
        return json.loads(cleaned)
    except ValueError:
        return cleaned


def _objects(text: str) -> list[tuple[int, dict[str, Any]]]:
    """The JSON objects in the text (fenced or bare), with where they start."""
    decoder = json.JSONDecoder()
    found = []
    for index, char in enumerate(text):
        if char != "{":
            continue
        try:
            value, _ = decoder.raw_decode(text, index)
        except ValueError:
            continue
        if isinstance(value, dict):
            found.append((index, value))
    return found


def _blob(text: str) -> tuple[int, Action] | None:
    """Dify's action blob: the first object with an `action` key."""
    for start, value in _objects(text):
        name = value.get("action")
        if isinstance(name, str) and name.strip():
            return start, Action(name.strip(), value.get("action_input", {}))
    return None


def _clean_name(raw: str) -> str:
    line = raw.strip().splitlines()[0] if raw.strip() else ""
    return line.strip().strip("`'\"[]").strip()


def _thought(text: str) -> str:
    found = re.match(r"^\s*[*]*thought[*]*\s*:\s*", text, re.I)
    return (text[found.end() :] if found else text).strip()


def _marks(text: str) -> dict[str, re.Match[str]]:
    marks: dict[str, re.Match[str]] = {}
    for match in MARK.finditer(text):
        marks.setdefault(match.group(1).lower(), match)
    return marks


def _final_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _text_action(text: str, marks: dict[str, re.Match[str]]) -> ReactOutput:
    action = marks["action"]
    given = marks.get("action input")
    thought = _thought(text[: action.start()])
    if given is None or given.start() < action.end():
        name = _clean_name(text[action.end() :])
        blob = _blob(text[action.end() :])
        if blob is not None:
            return _from_blob(thought, blob[1])
        if name:
            return ReactOutput(thought, Action(name, {}))
        return ReactOutput(thought, problem=PROBLEM)
    name = _clean_name(text[action.end() : given.start()])
    if not name:
        return ReactOutput(thought, problem=PROBLEM)
    return ReactOutput(thought, Action(name, _json_value(text[given.end() :])))


def _from_blob(thought: str, action: Action) -> ReactOutput:
    if action.name.lower() in FINAL_NAMES:
        return ReactOutput(thought, final=_final_text(action.input).strip())
    return ReactOutput(thought, action)


PROBLEM = (
    "Your reply has an Action that could not be read. Write the tool's name after "
    '"Action:" and its arguments as one JSON object after "Action Input:", or give '
    '"Final Answer:".'
)


def parse(text: str) -> ReactOutput:
    """What a model's ReAct reply says: an action, a final answer, an action that could not be
    read (`problem`), or, when it follows no format, its whole text as the final answer."""
    text = _without_made_up_observation(text)
    marks = _marks(text)
    final = marks.get("final answer")
    action = marks.get("action")
    blob = _blob(text)
    if action is not None and (final is None or action.start() < final.start()):
        return _text_action(text, marks)
    if blob is not None and (final is None or blob[0] < final.start()):
        return _from_blob(_thought(text[: blob[0]].rstrip().rstrip("`").rstrip()), blob[1])
    if final is not None:
        return ReactOutput(_thought(text[: final.start()]), final=text[final.end() :].strip())
    plain = _thought(text)
    return ReactOutput(plain, final=plain)


class FinalAnswerStream:
    """Lets through, as the model writes it, only what follows `Final Answer:`."""

    def __init__(self) -> None:
        self.text = ""
        self.shown = ""
        self._start: int | None = None

    def feed(self, piece: str) -> str:
        self.text += piece
        if self._start is None:
            found = next(
                (m for m in MARK.finditer(self.text) if m.group(1).lower() == "final answer"),
                None,
            )
            if found is None:
                return ""
            self._start = found.end()
        visible = self.text[self._start :].lstrip()
        fresh = visible[len(self.shown) :]
        self.shown = visible
        return fresh

    def rest(self, final: str) -> str:
        """What remains to be shown of the final answer, once the reply is complete."""
        return final[len(self.shown) :] if final.startswith(self.shown) else ""
