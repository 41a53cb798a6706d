"""Iteration and loop: nodes that run the graph inside them, once per item of an array or
until a condition holds. Each pass gets a scope of the variable pool of its own."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import Field

from tusk.workflow.events import ContainerNext
from tusk.workflow.graph import NodeSpec
from tusk.workflow.nodes.base import (
    Config,
    InnerRun,
    Node,
    NodeContext,
    NodeError,
    NodeResult,
    parse_config,
)
from tusk.workflow.nodes.if_else import Condition, evaluate
from tusk.workflow.variables import Selector, VariablePool

ErrorMode = Literal["terminated", "continue-on-error", "remove-abnormal-output"]
MAX_PARALLEL_ITEMS = 10


class IterationConfig(Config):
    iterator_selector: list[str] = []
    output_selector: list[str] = []
    output_type: str | None = None
    is_parallel: bool = False
    parallel_nums: int = Field(MAX_PARALLEL_ITEMS, ge=1)
    error_handle_mode: ErrorMode = "terminated"
    flatten_output: bool = True


class _Container(Node):
    def pass_scope(self, ctx: NodeContext) -> VariablePool:
        return ctx.pool.scope(self.children | {self.id})


def flatten(items: list[Any]) -> list[Any]:
    if items and all(isinstance(item, list) for item in items):
        return [value for item in items for value in item]
    return items


class IterationNode(_Container):
    type = "iteration"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.config = parse_config(IterationConfig, spec)

    def reads(self) -> Iterable[Selector]:
        return [self.config.iterator_selector]

    def output_names(self) -> frozenset[str]:
        return frozenset({"output", "item", "index"})

    def _items(self, ctx: NodeContext) -> list[Any]:
        value = ctx.pool.get(self.config.iterator_selector)
        if value is None:
            return []
        if not isinstance(value, list | tuple):
            raise NodeError(f"{self.title}: the iterator is a {type(value).__name__}, not an array")
        limit = ctx.run.limits.max_iterations
        if len(value) > limit:
            raise NodeError(f"{self.title}: {len(value)} items, over {limit} (MAX_ITERATIONS_NUM)")
        return list(value)

    async def _one(self, ctx: NodeContext, index: int, item: Any) -> tuple[InnerRun, Any]:
        pool = self.pass_scope(ctx)
        pool.set(self.id, "item", item)
        pool.set(self.id, "index", index)
        ctx.emit(ContainerNext(ctx.execution, index))
        outcome: InnerRun = await ctx.run_inner(self, pool, index)
        return outcome, pool.get(self.config.output_selector)

    async def run(self, ctx: NodeContext) -> NodeResult:
        items = self._items(ctx)
        if self.config.is_parallel and len(items) > 1:
            width = min(self.config.parallel_nums, MAX_PARALLEL_ITEMS, ctx.run.limits.max_parallel)
            results = await self._parallel(ctx, items, width)
        else:
            results = [await self._one(ctx, i, item) for i, item in enumerate(items)]
        outputs = self._collect(results)
        steps = sum(outcome.steps for outcome, _ in results)
        tokens = sum(outcome.tokens for outcome, _ in results)
        return NodeResult(
            outputs={"output": flatten(outputs) if self.config.flatten_output else outputs},
            inputs={"iterator_selector": items},
            metadata={"steps": steps, "total_tokens": tokens, "iteration_length": len(items)},
        )

    async def _parallel(
        self, ctx: NodeContext, items: list[Any], width: int
    ) -> list[tuple[InnerRun, Any]]:
        gate = asyncio.Semaphore(width)

        async def one(index: int, item: Any) -> tuple[InnerRun, Any]:
            async with gate:
                return await self._one(ctx, index, item)

        return list(await asyncio.gather(*(one(i, item) for i, item in enumerate(items))))

    def _collect(self, results: list[tuple[InnerRun, Any]]) -> list[Any]:
        mode = self.config.error_handle_mode
        outputs: list[Any] = []
        for index, (outcome, value) in enumerate(results):
            if outcome.status == "stopped":
                raise asyncio.CancelledError
            if outcome.status != "failed":
                outputs.append(value)
            elif mode == "terminated":
                raise NodeError(f"{self.title}: item {index} failed: {outcome.error}")
            elif mode == "continue-on-error":
                outputs.append(None)
        return outputs


class LoopVariable(Config):
    label: str
    var_type: str = "string"
    value_type: Literal["variable", "constant"] = "constant"
    value: Any = None


class LoopConfig(Config):
    loop_count: int = Field(10, ge=0)
    break_conditions: list[Condition] = []
    logical_operator: Literal["and", "or"] = "and"
    loop_variables: list[LoopVariable] = []


def constant(value: Any, var_type: str) -> Any:
    """A loop variable's initial value as the editor stores it, in its declared type."""
    if not isinstance(value, str):
        return value
    try:
        if var_type == "number":
            return float(value) if "." in value else int(value)
        if var_type == "boolean":
            return value.strip().lower() in ("true", "1")
        if var_type == "object" or var_type.startswith("array"):
            return json.loads(value) if value.strip() else ({} if var_type == "object" else [])
    except ValueError:
        raise NodeError(f"{value!r} is not a valid {var_type}") from None
    return value


class LoopNode(_Container):
    type = "loop"

    def __init__(self, spec: NodeSpec) -> None:
        super().__init__(spec)
        self.config = parse_config(LoopConfig, spec)

    def output_names(self) -> frozenset[str]:
        return frozenset({v.label for v in self.config.loop_variables} | {"loop_round", "index"})

    def pass_scope(self, ctx: NodeContext) -> VariablePool:
        return ctx.pool.scope(self.children)  # loop variables outlive the round

    def _start_variables(self, ctx: NodeContext) -> dict[str, Any]:
        values = {}
        for var in self.config.loop_variables:
            if var.value_type == "variable":
                values[var.label] = ctx.pool.get(var.value) if isinstance(var.value, list) else None
            else:
                values[var.label] = constant(var.value, var.var_type)
            ctx.pool.set(self.id, var.label, values[var.label])
        return values

    def _should_break(self, ctx: NodeContext) -> bool:
        conditions = self.config.break_conditions
        return bool(conditions) and evaluate(conditions, self.config.logical_operator, ctx.pool)

    def _current(self, ctx: NodeContext) -> dict[str, Any]:
        return {v.label: ctx.pool.get([self.id, v.label]) for v in self.config.loop_variables}

    async def run(self, ctx: NodeContext) -> NodeResult:
        inputs = {"loop_count": self.config.loop_count, **self._start_variables(ctx)}
        rounds = min(self.config.loop_count, ctx.run.limits.max_loops)
        done, steps, tokens, reason = 0, 0, 0, "loop_completed"
        if self._should_break(ctx):
            rounds, reason = 0, "loop_break"
        for index in range(rounds):
            ctx.pool.set(self.id, "index", index)
            outcome: InnerRun = await ctx.run_inner(self, self.pass_scope(ctx), index)
            done, steps, tokens = index + 1, steps + outcome.steps, tokens + outcome.tokens
            if outcome.status == "stopped":
                raise asyncio.CancelledError
            if outcome.status == "failed":
                raise NodeError(f"{self.title}: round {index} failed: {outcome.error}")
            if outcome.break_requested or self._should_break(ctx):
                reason = "loop_break"
                break
            ctx.emit(ContainerNext(ctx.execution, index + 1, pre_loop_output=self._current(ctx)))
        outputs = {**self._current(ctx), "loop_round": done}
        metadata = {"steps": steps, "total_tokens": tokens, "completed_reason": reason}
        return NodeResult(outputs=outputs, inputs=inputs, metadata=metadata)
