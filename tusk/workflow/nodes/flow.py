"""The nodes that frame a run: Start (the inputs), End (the outputs), Answer (the chat reply),
and the markers inside iterations and loops."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tusk.workflow.graph import NodeSpec
from tusk.workflow.nodes.base import Config, Node, NodeContext, NodeResult, parse_config
from tusk.workflow.template import references, render
from tusk.workflow.variables import SYSTEM, Selector


class StartVariable(Config):
    variable: str
    label: str = ""
    type: str = "text-input"
    required: bool = False
    default: Any = None
    max_length: int | None = None
    options: list[str] = []
    hide: bool = False
    allowed_file_types: list[str] = []
    allowed_file_extensions: list[str] = []
    allowed_file_upload_methods: list[str] = []
    json_schema: Any = None


class StartConfig(Config):
    variables: list[StartVariable] = []


class StartNode(Node):
    type = "start"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.config = parse_config(StartConfig, spec)

    def output_names(self) -> frozenset[str]:
        return frozenset(v.variable for v in self.config.variables)

    async def run(self, ctx: NodeContext) -> NodeResult:
        inputs = dict(ctx.run.inputs)
        system = ctx.pool.outputs(SYSTEM)
        outputs = {**inputs, **{f"sys.{name}": value for name, value in system.items()}}
        return NodeResult(outputs=outputs, inputs=inputs)


class EndOutput(Config):
    variable: str
    value_selector: list[str] = []
    value_type: str | None = None


class EndConfig(Config):
    outputs: list[EndOutput] = []


class EndNode(Node):
    type = "end"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.config = parse_config(EndConfig, spec)

    def reads(self) -> Iterable[Selector]:
        return [o.value_selector for o in self.config.outputs if o.value_selector]

    def output_names(self) -> frozenset[str]:
        return frozenset(o.variable for o in self.config.outputs)

    async def run(self, ctx: NodeContext) -> NodeResult:
        outputs = {
            o.variable: ctx.pool.get(o.value_selector) if o.value_selector else None
            for o in self.config.outputs
        }
        return NodeResult(outputs=outputs, inputs=outputs)


class AnswerConfig(Config):
    answer: str = ""


class AnswerNode(Node):
    type = "answer"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.config = parse_config(AnswerConfig, spec)

    def reads(self) -> Iterable[Selector]:
        return references(self.config.answer)

    def output_names(self) -> frozenset[str]:
        return frozenset({"answer", "files"})

    async def run(self, ctx: NodeContext) -> NodeResult:
        answer = render(self.config.answer, ctx.pool, markdown=True)
        return NodeResult(outputs={"answer": answer, "files": []})


class _Marker(Node):
    async def run(self, ctx: NodeContext) -> NodeResult:
        return NodeResult(outputs={})

    def output_names(self) -> frozenset[str]:
        return frozenset()


class IterationStartNode(_Marker):
    type = "iteration-start"


class LoopStartNode(_Marker):
    type = "loop-start"


class LoopEndNode(_Marker):
    """Reaching it ends the loop after the current round."""

    type = "loop-end"
