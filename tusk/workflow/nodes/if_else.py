"""If/else: the first case whose conditions hold decides the branch; none holding takes
`false`. Old graphs have one unnamed case, whose branches are `true` and `false`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from tusk.workflow.conditions import ConditionError, combine, compare, compare_files, file_list
from tusk.workflow.graph import NodeSpec
from tusk.workflow.nodes.base import Config, Node, NodeContext, NodeError, NodeResult, parse_config
from tusk.workflow.template import render
from tusk.workflow.variables import Selector, VariablePool

Logic = Literal["and", "or"]


class SubCondition(Config):
    key: str = ""
    comparison_operator: str
    value: Any = None


class SubConditions(Config):
    logical_operator: Logic = "and"
    conditions: list[SubCondition] = []


class Condition(Config):
    variable_selector: list[str] = []
    comparison_operator: str
    value: Any = None
    sub_variable_condition: SubConditions | None = None


class Case(Config):
    case_id: str
    logical_operator: Logic = "and"
    conditions: list[Condition] = []


class IfElseConfig(Config):
    cases: list[Case] | None = None
    conditions: list[Condition] | None = None  # before cases existed
    logical_operator: Logic = "and"

    def all_cases(self) -> list[Case]:
        if self.cases is not None:
            return self.cases
        legacy = Case(
            case_id="true", logical_operator=self.logical_operator, conditions=self.conditions or []
        )
        return [legacy]


def expected_value(value: Any, pool: VariablePool) -> Any:
    return render(value, pool) if isinstance(value, str) else value


def holds(condition: Condition, pool: VariablePool) -> bool:
    actual = pool.get(condition.variable_selector)
    operator = condition.comparison_operator
    files = file_list(actual)
    sub = condition.sub_variable_condition
    if files is not None and sub is not None and sub.conditions:
        checks = (
            compare_files(files, s.key, s.comparison_operator, s.value) for s in sub.conditions
        )
        return combine(checks, sub.logical_operator)
    return compare(actual, operator, expected_value(condition.value, pool))


def evaluate(conditions: list[Condition], logic: str, pool: VariablePool) -> bool:
    try:
        return combine((holds(c, pool) for c in conditions), logic)
    except ConditionError as exc:
        raise NodeError(f"a condition cannot be evaluated: {exc}") from None


class IfElseNode(Node):
    type = "if-else"
    branches = True

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.config = parse_config(IfElseConfig, spec)
        self.cases = self.config.all_cases()

    def reads(self) -> Iterable[Selector]:
        return [c.variable_selector for case in self.cases for c in case.conditions]

    def output_names(self) -> frozenset[str]:
        return frozenset({"result", "selected_case_id"})

    def handles(self) -> frozenset[str]:
        return frozenset({case.case_id for case in self.cases} | {"false"})

    async def run(self, ctx: NodeContext) -> NodeResult:
        selected = "false"
        for case in self.cases:
            if evaluate(case.conditions, case.logical_operator, ctx.pool):
                selected = case.case_id
                break
        inputs = {
            "conditions": [
                {
                    "selector": c.variable_selector,
                    "operator": c.comparison_operator,
                    "actual": ctx.pool.get(c.variable_selector),
                    "expected": c.value,
                }
                for case in self.cases
                for c in case.conditions
            ]
        }
        outputs = {"result": selected != "false", "selected_case_id": selected}
        return NodeResult(outputs=outputs, inputs=inputs, handle=selected)
