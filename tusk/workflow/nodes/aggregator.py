"""Variable aggregator (and its old name, variable assigner): the first of several variables
that has a value, typically one per branch, so that what follows reads one place."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from tusk.workflow.graph import NodeSpec
from tusk.workflow.nodes.base import Config, Node, NodeContext, NodeResult, parse_config
from tusk.workflow.variables import Selector, VariablePool


class Group(Config):
    group_name: str
    output_type: str = "any"
    variables: list[list[str]] = []


class AdvancedSettings(Config):
    group_enabled: bool = False
    groups: list[Group] = []


class AggregatorConfig(Config):
    output_type: str = "any"
    variables: list[list[str]] = []
    advanced_settings: AdvancedSettings | None = None


def first_value(pool: VariablePool, selectors: Sequence[Selector]) -> Any:
    for selector in selectors:
        if pool.has(selector):
            return pool.get(selector)
    return None


class VariableAggregatorNode(Node):
    type = "variable-aggregator"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.config = parse_config(AggregatorConfig, spec)
        settings = self.config.advanced_settings
        self.groups = settings.groups if settings and settings.group_enabled else None

    def reads(self) -> Iterable[Selector]:
        if self.groups is None:
            return self.config.variables
        return [s for g in self.groups for s in g.variables]

    def output_names(self) -> frozenset[str]:
        if self.groups is None:
            return frozenset({"output"})
        return frozenset(g.group_name for g in self.groups)

    async def run(self, ctx: NodeContext) -> NodeResult:
        if self.groups is None:
            outputs = {"output": first_value(ctx.pool, self.config.variables)}
        else:
            outputs = {
                g.group_name: {"output": first_value(ctx.pool, g.variables)} for g in self.groups
            }
        return NodeResult(outputs=outputs)


class LegacyVariableAssignerNode(VariableAggregatorNode):
    type = "variable-assigner"
