"""The ReAct parser for `bench.agents`: `tusk.agent.react.parse` on well-formed and malformed
replies, against the single regular expression of the classic ReAct examples."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.agents_tools import micros
from bench.common import Stats, markdown_table, ratio
from tusk.agent import react

CODE_ANSWER = (
    "Here is the configuration you asked for, with each service and its limits:\n\n"
    + "\n".join(
        f'{{"service": "worker-{i}", "limits": {{"cpu": {i % 4 + 1}, "memory": "{i}Gi"}}, '
        f'"env": {{"QUEUE": "jobs-{i}", "RETRIES": {i % 3}}}}}'
        for i in range(40)
    )
    + "\n\nApply it with the usual command."
)
PROSE = " ".join(["The weather in Paris is mild in spring, with rain now and then."] * 16)


@dataclass(frozen=True)
class Sample:
    name: str
    well_formed: bool
    text: str
    kind: str  # what it must parse to: "action", "final" or "problem"
    tool: str = ""  # the action's tool


SAMPLES = (
    Sample(
        "Thought / Action / Action Input",
        True,
        'Thought: I need the time.\nAction: current_time\nAction Input: {"timezone": "UTC"}',
        "action",
        "current_time",
    ),
    Sample(
        "Thought / Final Answer",
        True,
        "Thought: I can answer now.\nFinal Answer: It is noon in Paris.",
        "final",
    ),
    Sample(
        "Dify's JSON blob, fenced",
        True,
        'Thought: I need the time.\n```json\n{"action": "current_time", "action_input": '
        '{"timezone": "UTC"}}\n```',
        "action",
        "current_time",
    ),
    Sample(
        "made-up Observation and answer after the action",
        False,
        'Thought: I need the time.\nAction: current_time\nAction Input: {"timezone": "UTC"}\n'
        "Observation: 12:00\nThought: I know it.\nFinal Answer: It is noon.",
        "action",
        "current_time",
    ),
    Sample(
        "lower-case marks, name in backticks, fenced input",
        False,
        "thought: the time, please\n**action**: `current_time`\naction input:\n```json\n"
        '{"timezone": "Europe/Paris"}\n```',
        "action",
        "current_time",
    ),
    Sample("Action without a name", False, "Thought: hm\nAction:\nAction Input: {}", "problem"),
    Sample("no format: 1 KB of prose", False, PROSE, "final"),
    Sample("no format: a 4 KB answer full of JSON objects", False, CODE_ANSWER, "final"),
)  # fmt: skip

CLASSIC = re.compile(r"Action\s*:\s*(.*?)\s*\nAction\s*Input\s*:\s*(.*)", re.S)
CLASSIC_FINAL = "Final Answer:"


def classic_parse(text: str) -> tuple[str, str] | None:
    """The baseline: the single regular expression of the classic ReAct examples, which reads
    the well-formed replies only; None when it cannot read one."""
    found = CLASSIC.search(text)
    if found:
        return "action", found.group(1).strip()
    if CLASSIC_FINAL in text:
        return "final", ""
    return None


def _kind(output: react.ReactOutput) -> tuple[str, str]:
    if output.action is not None:
        return "action", output.action.name
    return ("problem", "") if output.problem is not None else ("final", "")


@dataclass(frozen=True)
class ParseResult:
    sample: Sample
    tusk: list[float]  # seconds of each parse
    classic: list[float]
    tusk_right: bool
    classic_right: bool


def _parses(parse: Callable[[str], object], text: str, seconds: float) -> list[float]:
    """Parse `text` again and again for `seconds` (200 times at least); each parse's time."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(latencies) < 200 or time.perf_counter() < deadline:
        before = time.perf_counter()
        parse(text)
        latencies.append(time.perf_counter() - before)
    return latencies


def measure(seconds: float = 0.5) -> list[ParseResult]:
    results = []
    for sample in SAMPLES:
        expected = (sample.kind, sample.tool)
        tusk_right = _kind(react.parse(sample.text)) == expected
        classic = classic_parse(sample.text)
        classic_right = classic is not None and classic == expected
        tusk = _parses(react.parse, sample.text, seconds / 2)
        baseline = _parses(classic_parse, sample.text, seconds / 2)
        tusk += _parses(react.parse, sample.text, seconds / 2)  # A B A: drift falls on both
        results.append(ParseResult(sample, tusk, baseline, tusk_right, classic_right))
    return results


# --- the report -------------------------------------------------------------------------------


def section(results: list[ParseResult]) -> list[str]:
    headers = ["reply", "well-formed", "bytes", "Tusk parses/s", "Tusk p50 (µs)"]
    headers += ["Tusk p99 (µs)", "Tusk reads it", "regex parses/s", "regex reads it"]
    headers += ["Tusk ÷ regex (p50)"]
    rows = []
    for r in results:
        tusk, classic = Stats.of(r.tusk), Stats.of(r.classic)
        rows.append(
            [r.sample.name, "yes" if r.sample.well_formed else "no", len(r.sample.text.encode()),
             f"{len(r.tusk) / sum(r.tusk):,.0f}", micros(tusk.p50), micros(tusk.p99),
             "yes" if r.tusk_right else "**NO**", f"{len(r.classic) / sum(r.classic):,.0f}",
             "yes" if r.classic_right else "no", ratio(tusk.p50, classic.p50)]
        )  # fmt: skip
    return [
        "### ReAct parser",
        "`tusk.agent.react.parse` on one reply at a time, repeated for 0.5 s (parses/s: parses "
        "over their summed time). Baseline: the single regular expression of the classic ReAct "
        "examples (`Action: (.*?)\\nAction Input: (.*)`, else `Final Answer:`), which reads only "
        "well-formed replies. *Reads it*: the parse gives the expected kind (action and its tool, "
        "final answer, or a problem to tell the model).",
        markdown_table(headers, rows, left=2),
    ]
