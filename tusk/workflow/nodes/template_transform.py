"""Template transform: a Jinja2 template rendered with the node's variables into `output`.

Rendered in-process with Jinja2's sandboxed environment (no attribute access to Python
internals, bounded `range`), with a deadline and an output limit checked as the text is produced.
A template with loops or calls renders in a worker thread, so that a runaway one does not block
the run's event loop; one without (text, values and filters: most templates) takes microseconds,
less than a thread's hop, and renders on the loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment

from tusk.workflow.graph import NodeSpec
from tusk.workflow.nodes.base import (
    Config,
    Node,
    NodeContext,
    NodeError,
    NodeResult,
    inputs_of,
    parse_config,
)
from tusk.workflow.variables import Selector

MAX_OUTPUT_CHARS = 400_000  # Dify's TEMPLATE_TRANSFORM_MAX_LENGTH
RENDER_SECONDS = 10.0
TEMPLATE_NAME = "<template>"  # the file name Jinja2 gives frames of template code


class TemplateVariable(Config):
    variable: str
    value_selector: list[str] = []


class TemplateConfig(Config):
    template: str = ""
    variables: list[TemplateVariable] = []


class TemplateRenderError(NodeError):
    pass


ENVIRONMENT = SandboxedEnvironment(autoescape=False, undefined=jinja2.Undefined)


def template_line(traceback: TracebackType | None) -> int | None:
    """The template line a rendering error happened on (Jinja2 rewrites the traceback so that
    template frames carry template line numbers)."""
    line = None
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == TEMPLATE_NAME:
            line = traceback.tb_lineno
        traceback = traceback.tb_next
    return line


def _at(line: int | None) -> str:
    return f" (line {line})" if line else ""


# What makes a template's work grow beyond the size of its text and values.
LOOPS_AND_CALLS = (nodes.For, nodes.Macro, nodes.CallBlock, nodes.Call, nodes.FilterBlock)


@dataclass(frozen=True)
class Compiled:
    template: jinja2.Template
    in_thread: bool  # it loops or calls


def compile_template(source: str) -> Compiled:
    try:
        parsed = ENVIRONMENT.parse(source)
        template = ENVIRONMENT.from_string(parsed)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateRenderError(
            f"template syntax error{_at(exc.lineno)}: {exc.message}"
        ) from None
    in_thread = any(True for kind in LOOPS_AND_CALLS for _ in parsed.find_all(kind))
    return Compiled(template, in_thread)


async def render(compiled: Compiled, variables: Mapping[str, Any]) -> str:
    if compiled.in_thread:
        return await asyncio.to_thread(render_template, compiled.template, variables)
    return render_template(compiled.template, variables)


def render_template(
    template: jinja2.Template,
    variables: Mapping[str, Any],
    *,
    max_chars: int = MAX_OUTPUT_CHARS,
    seconds: float = RENDER_SECONDS,
) -> str:
    """The rendered text, stopped with an error once it is too long or too slow."""
    deadline = time.monotonic() + seconds
    pieces: list[str] = []
    size = 0
    try:
        for piece in template.generate(dict(variables)):
            size += len(piece)
            if size > max_chars:
                raise TemplateRenderError(f"the output is longer than {max_chars} characters")
            if time.monotonic() > deadline:
                raise TemplateRenderError(f"rendering took longer than {seconds:g} seconds")
            pieces.append(piece)
    except TemplateRenderError:
        raise
    except Exception as exc:  # any error inside the template is the author's to fix
        line = template_line(exc.__traceback__)
        raise TemplateRenderError(
            f"template error{_at(line)}: {type(exc).__name__}: {exc}"
        ) from None
    return "".join(pieces)


class TemplateTransformNode(Node):
    type = "template-transform"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.config = parse_config(TemplateConfig, spec)
        self._compiled: Compiled | None = None

    def reads(self) -> Iterable[Selector]:
        return [v.value_selector for v in self.config.variables if v.value_selector]

    def output_names(self) -> frozenset[str]:
        return frozenset({"output"})

    async def run(self, ctx: NodeContext) -> NodeResult:
        variables = inputs_of(
            ctx.pool, {v.variable: v.value_selector for v in self.config.variables}
        )
        if self._compiled is None:
            self._compiled = compile_template(self.config.template)
        output = await render(self._compiled, variables)
        return NodeResult(outputs={"output": output}, inputs=variables)
