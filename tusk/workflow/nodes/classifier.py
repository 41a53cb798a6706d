"""The question classifier: the model picks one of the node's classes for a text, and the run
goes on along the edges whose handle is that class's id. An answer that names no class (or is
not JSON) takes the first class, as Dify does."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Annotated

from pydantic import BeforeValidator

from tusk.models.types import Message
from tusk.workflow.graph import NodeSpec
from tusk.workflow.nodes.base import (
    Config,
    Node,
    NodeConfigError,
    NodeContext,
    NodeResult,
    parse_config,
)
from tusk.workflow.nodes.models import ModelConfig, call_model, call_record, spend, usage_of
from tusk.workflow.nodes.prompts import (
    MemoryConfig,
    find_json_object,
    history,
    history_text,
    template_reads,
)
from tusk.workflow.template import render
from tusk.workflow.values import to_text
from tusk.workflow.variables import Selector, VariablePool

SYSTEM_PROMPT = """You sort a text into exactly one of the categories you are given.
Read the text, compare it with every category, and choose the one that fits it best.
Answer with one JSON object and nothing else: no prose, no Markdown.
Its keys: "category_id" and "category_name", copied from the chosen category.
Example: {{"category_id": "c2", "category_name": "Billing"}}{instructions}{histories}"""
USER_PROMPT = "Categories: {categories}\n\nText: {text}"


class ClassItem(Config):
    id: Annotated[str, BeforeValidator(str)]
    name: str = ""


class ClassifierConfig(Config):
    model: ModelConfig
    query_variable_selector: list[str] = []
    classes: list[ClassItem] = []
    instruction: str | None = None
    memory: MemoryConfig | None = None


def choose(classes: list[ClassItem], answer: str) -> ClassItem:
    """The class the model's answer names (by id, else by name), or the first one."""
    found = find_json_object(answer) or {}
    wanted_id = found.get("category_id")
    for item in classes:
        if wanted_id is not None and item.id == str(wanted_id):
            return item
    wanted_name = str(found.get("category_name") or "").strip().casefold()
    for item in classes:
        if wanted_name and item.name.strip().casefold() == wanted_name:
            return item
    return classes[0]


class QuestionClassifierNode(Node):
    type = "question-classifier"
    branches = True

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.config = parse_config(ClassifierConfig, spec)
        if not self.config.classes:
            raise NodeConfigError("the question classifier has no classes: add at least one")

    def reads(self) -> Iterable[Selector]:
        config = self.config
        found = template_reads([config.instruction, *(c.name for c in config.classes)])
        return [s for s in [config.query_variable_selector, *found] if s]

    def output_names(self) -> frozenset[str]:
        return frozenset({"class_name", "class_id", "usage"})

    def handles(self) -> frozenset[str]:
        return frozenset(item.id for item in self.config.classes)

    def _classes(self, pool: VariablePool) -> list[ClassItem]:
        return [ClassItem(id=c.id, name=render(c.name, pool)) for c in self.config.classes]

    async def prompt(self, ctx: NodeContext, query: str, classes: list[ClassItem]) -> list[Message]:
        config = self.config
        instruction = render(config.instruction or "", ctx.pool).strip()
        past = history_text(await history(ctx, config.memory))
        system = SYSTEM_PROMPT.format(
            instructions=f"\n\nFollow these instructions:\n{instruction}" if instruction else "",
            histories=f"\n\nThe conversation so far:\n{past}" if past else "",
        )
        categories = [{"category_id": c.id, "category_name": c.name} for c in classes]
        user = USER_PROMPT.format(categories=json.dumps(categories, ensure_ascii=False), text=query)
        return [Message("system", system), Message("user", user)]

    async def run(self, ctx: NodeContext) -> NodeResult:
        config = self.config
        query = to_text(ctx.pool.get(config.query_variable_selector))
        classes = self._classes(ctx.pool)
        messages = await self.prompt(ctx, query, classes)
        reply = await call_model(ctx, config.model, messages)
        chosen = choose(classes, reply.text)
        usage = usage_of(ctx, reply)
        return NodeResult(
            outputs={"class_name": chosen.name, "class_id": chosen.id, "usage": usage},
            inputs={"query": query},
            process_data=call_record(config.model, messages, reply, usage),
            handle=chosen.id,
            metadata=spend(usage),
        )
