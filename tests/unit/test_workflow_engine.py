"""The executor's semantics with trivial nodes: branches, skips, joins, parallelism, response
streaming order, containers, retries, error strategies, limits and stop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from tests.support.workflow import chain, child, edge, node, run_graph
from tusk.workflow.context import Limits
from tusk.workflow.events import (
    ContainerCompleted,
    ContainerNext,
    ContainerStarted,
    NodeFinished,
    NodeRetry,
    NodeStarted,
    RunFailed,
    TextChunk,
    WorkflowFinished,
    WorkflowStarted,
)
from tusk.workflow.nodes import node_types
from tusk.workflow.nodes.base import Node, NodeContext, NodeError, NodeResult

START = node("start", "start", variables=[{"variable": "x", "type": "number"}])


class Flaky(Node):
    """Fails `fail_times` times per run, then succeeds (a test node type)."""

    type = "test-flaky"
    attempts: ClassVar[dict[str, int]] = {}

    async def run(self, ctx: NodeContext) -> NodeResult:
        key = f"{ctx.run.run_id}:{self.id}"
        self.attempts[key] = self.attempts.get(key, 0) + 1
        if self.attempts[key] <= int(self.spec.data.get("fail_times", 0)):
            raise NodeError(f"attempt {self.attempts[key]} failed")
        return NodeResult(outputs={"value": self.spec.data.get("value", "ok")})


class Slow(Node):
    """Sleeps, streams its text in pieces, then returns it (a test node type)."""

    type = "test-slow"
    streams = frozenset({"text"})

    async def run(self, ctx: NodeContext) -> NodeResult:
        pieces = list(self.spec.data.get("pieces", ["a", "b"]))
        for piece in pieces:
            await asyncio.sleep(float(self.spec.data.get("delay", 0.01)))
            ctx.stream("text", piece)
        return NodeResult(outputs={"text": "".join(pieces)})


class Double(Node):
    """Doubles the iteration's current item; fails on anything but a number (a test node type)."""

    type = "test-double"

    async def run(self, ctx: NodeContext) -> NodeResult:
        item = ctx.pool.get(["it", "item"])
        if not isinstance(item, int | float):
            raise NodeError(f"{item!r} is not a number")
        return NodeResult(outputs={"v": item * 2})


class Broken(Node):
    """Succeeds with a result the engine cannot take in: a fault of the engine's own, after
    the node has run (a test node type)."""

    type = "test-broken"

    async def run(self, ctx: NodeContext) -> NodeResult:
        return NodeResult(outputs={}, metadata=["not", "a", "mapping"])  # type: ignore[arg-type]


TEST_TYPES: dict[str, type[Node]] = {
    "test-flaky": Flaky,
    "test-slow": Slow,
    "test-double": Double,
    "test-broken": Broken,
}


@pytest.fixture(autouse=True)
def test_nodes() -> Iterator[None]:
    types = node_types()
    types.update(TEST_TYPES)
    yield
    for name in TEST_TYPES:
        types.pop(name)


def if_x_over(limit: int, node_id: str = "cond") -> dict[str, Any]:
    condition = {
        "variable_selector": ["start", "x"],
        "comparison_operator": ">",
        "value": str(limit),
    }
    return node(node_id, "if-else", cases=[{"case_id": "big", "conditions": [condition]}])


def template(node_id: str, text: str) -> dict[str, Any]:
    return node(node_id, "answer", answer=text)


def end(*outputs: tuple[str, list[str]]) -> dict[str, Any]:
    return node("end", "end", outputs=[{"variable": n, "value_selector": s} for n, s in outputs])


def order(outcome: Any) -> list[str]:
    return [e.node.node_id for e in outcome.events if isinstance(e, NodeStarted)]


async def test_branch_takes_one_side_and_skips_the_other() -> None:
    nodes = [
        START,
        if_x_over(5),
        template("big", "big"),
        template("small", "small"),
        node("agg", "variable-aggregator", variables=[["big", "answer"], ["small", "answer"]]),
        end(("out", ["agg", "output"])),
    ]
    edges = [
        edge("start", "cond"),
        edge("cond", "big", "big"),
        edge("cond", "small", "false"),
        *chain("big", "agg", "end"),
        edge("small", "agg"),
    ]
    high = await run_graph(nodes, edges, {"x": 9})
    low = await run_graph(nodes, edges, {"x": 1})
    assert high.state.outputs == {"out": "big"}
    assert "small" not in order(high)
    assert low.state.outputs == {"out": "small"}
    assert "big" not in order(low)
    assert high.outputs("cond") == {"result": True, "selected_case_id": "big"}
    assert low.outputs("cond")["selected_case_id"] == "false"


async def test_skip_propagates_through_a_whole_branch() -> None:
    nodes = [START, if_x_over(5), template("a1", "a"), template("a2", "b"), end()]
    edges = [
        edge("start", "cond"),
        edge("cond", "a1", "big"),
        *chain("a1", "a2"),
        edge("cond", "end", "false"),
    ]
    outcome = await run_graph(nodes, edges, {"x": 1})
    assert order(outcome) == ["start", "cond", "end"]
    assert outcome.state.status == "succeeded"


async def test_join_waits_for_every_parallel_branch() -> None:
    nodes = [
        START,
        node("slow", "test-slow", pieces=["s"], delay=0.05),
        node("fast", "test-flaky", value="f"),
        template("join", "{{#slow.text#}}{{#fast.value#}}"),
        end(("out", ["join", "answer"])),
    ]
    edges = [
        edge("start", "slow"),
        edge("start", "fast"),
        edge("slow", "join"),
        edge("fast", "join"),
        edge("join", "end"),
    ]
    outcome = await run_graph(nodes, edges, {"x": 1})
    assert outcome.state.outputs == {"out": "sf"}
    started = order(outcome)
    assert started.index("join") > started.index("slow")
    assert len(outcome.finished("join")) == 1


async def test_parallel_branches_run_concurrently() -> None:
    branches = [node(f"b{i}", "test-slow", pieces=["x"], delay=0.2) for i in range(5)]
    edges = [edge("start", f"b{i}") for i in range(5)]
    loop = asyncio.get_running_loop()
    began = loop.time()
    outcome = await run_graph([START, *branches], edges, {"x": 1})
    assert outcome.state.status == "succeeded"
    assert loop.time() - began < 0.6  # five 0.2 s nodes at once, not one after another


async def test_parallelism_is_capped() -> None:
    branches = [node(f"b{i}", "test-slow", pieces=["x"], delay=0.1) for i in range(4)]
    edges = [edge("start", f"b{i}") for i in range(4)]
    loop = asyncio.get_running_loop()
    began = loop.time()
    await run_graph([START, *branches], edges, {"x": 1}, limits=Limits(max_parallel=1))
    assert loop.time() - began >= 0.4


async def test_answer_streams_the_llm_like_node_while_it_runs() -> None:
    nodes = [
        START,
        node("llm", "test-slow", pieces=["Hel", "lo"]),
        template("ans", "A: {{#llm.text#}}!"),
    ]
    outcome = await run_graph(nodes, chain("start", "llm", "ans"), {"x": 1}, mode="chat")
    llm_done = next(
        i
        for i, e in enumerate(outcome.events)
        if isinstance(e, NodeFinished) and e.node.node_id == "llm"
    )
    chunks = [i for i, e in enumerate(outcome.events) if isinstance(e, TextChunk)]
    assert outcome.streamed == "A: Hello!"
    assert chunks[0] < llm_done
    assert chunks[2] < llm_done
    assert outcome.state.outputs["answer"] == "A: Hello!"
    assert outcome.outputs("ans")["answer"] == "A: Hello!"


async def test_answer_behind_a_branch_waits_for_the_decision() -> None:
    nodes = [
        START,
        node("llm", "test-slow", pieces=["x", "y"]),
        if_x_over(5),
        template("ans", "{{#llm.text#}}"),
    ]
    edges = [*chain("start", "llm", "cond"), edge("cond", "ans", "big")]
    outcome = await run_graph(nodes, edges, {"x": 9}, mode="chat")
    first_chunk = next(i for i, e in enumerate(outcome.events) if isinstance(e, TextChunk))
    cond_done = next(
        i
        for i, e in enumerate(outcome.events)
        if isinstance(e, NodeFinished) and e.node.node_id == "cond"
    )
    assert first_chunk > cond_done
    assert outcome.streamed == "xy"


async def test_two_answers_stream_in_order() -> None:
    nodes = [
        START,
        node("slow", "test-slow", pieces=["1", "2"], delay=0.05),
        node("quick", "test-slow", pieces=["a", "b"], delay=0.001),
        template("first", "{{#slow.text#}}|"),
        template("second", "{{#quick.text#}}"),
    ]
    edges = [*chain("start", "slow", "first"), *chain("start", "quick", "second")]
    outcome = await run_graph(nodes, edges, {"x": 1}, mode="chat")
    assert outcome.streamed in ("12|ab", "ab12|")
    texts = [e.text for e in outcome.events if isinstance(e, TextChunk)]
    assert texts in (["1", "2", "|", "a", "b"], ["a", "b", "1", "2", "|"])


async def test_end_node_streams_text_chunks_in_workflow_mode() -> None:
    nodes = [START, node("llm", "test-slow", pieces=["p", "q"]), end(("text", ["llm", "text"]))]
    outcome = await run_graph(nodes, chain("start", "llm", "end"), {"x": 1})
    assert [e.text for e in outcome.events if isinstance(e, TextChunk)] == ["p", "q"]
    assert outcome.state.outputs == {"text": "pq"}


async def test_events_come_in_dify_order() -> None:
    outcome = await run_graph([START, end(("x", ["start", "x"]))], chain("start", "end"), {"x": 3})
    names = [type(e).__name__ for e in outcome.events if not isinstance(e, TextChunk)]
    assert names[0] == "WorkflowStarted"
    assert names[-1] == "WorkflowFinished"
    assert names[1:5] == ["NodeStarted", "NodeFinished", "NodeStarted", "NodeFinished"]
    assert isinstance(outcome.events[0], WorkflowStarted)
    finished = outcome.events[-1]
    assert isinstance(finished, WorkflowFinished)
    assert finished.run.total_steps == 2
    assert finished.run.outputs == {"x": 3}
    indexes = [e.node.index for e in outcome.events if isinstance(e, NodeFinished)]
    assert indexes == [1, 2]
    assert outcome.finished("end")[0].node.predecessor_node_id == "start"


async def test_retry_then_success_emits_node_retry() -> None:
    flaky = node(
        "f",
        "test-flaky",
        fail_times=2,
        retry_config={"retry_enabled": True, "max_retries": 3, "retry_interval": 1},
    )
    outcome = await run_graph(
        [START, flaky, end(("v", ["f", "value"]))], chain("start", "f", "end"), {"x": 1}
    )
    retries = [e for e in outcome.events if isinstance(e, NodeRetry)]
    assert [r.retry_index for r in retries] == [1, 2]
    assert retries[0].node.error == "attempt 1 failed"
    assert retries[0].node.status == "retry"
    assert outcome.state.status == "succeeded"
    assert outcome.state.outputs == {"v": "ok"}


async def test_retries_exhausted_fail_the_run() -> None:
    flaky = node(
        "f",
        "test-flaky",
        fail_times=5,
        retry_config={"retry_enabled": True, "max_retries": 1, "retry_interval": 1},
    )
    outcome = await run_graph([START, flaky, end()], chain("start", "f", "end"), {"x": 1})
    assert outcome.state.status == "failed"
    assert outcome.state.error == "attempt 2 failed"
    assert isinstance(outcome.events[-1], RunFailed)
    assert "end" not in order(outcome)
    assert outcome.finished("f")[0].node.status == "failed"


async def test_fail_branch_takes_the_error_edge() -> None:
    flaky = node("f", "test-flaky", fail_times=1, error_strategy="fail-branch")
    nodes = [
        START,
        flaky,
        template("ok", "ok"),
        template("oops", "{{#f.error_message#}}"),
        node("agg", "variable-aggregator", variables=[["ok", "answer"], ["oops", "answer"]]),
        end(("out", ["agg", "output"])),
    ]
    edges = [
        edge("start", "f"),
        edge("f", "ok"),
        edge("f", "oops", "fail-branch"),
        *chain("ok", "agg", "end"),
        edge("oops", "agg"),
    ]
    outcome = await run_graph(nodes, edges, {"x": 1})
    assert outcome.state.status == "partial-succeeded"
    assert outcome.state.exceptions_count == 1
    assert outcome.state.outputs == {"out": "attempt 1 failed"}
    finished = outcome.finished("f")[0].node
    assert finished.status == "exception"
    assert finished.outputs == {"error_message": "attempt 1 failed", "error_type": "NodeError"}
    assert "ok" not in order(outcome)


async def test_fail_branch_node_that_succeeds_takes_the_normal_edge() -> None:
    flaky = node("f", "test-flaky", fail_times=0, error_strategy="fail-branch")
    nodes = [START, flaky, template("ok", "ok"), template("oops", "oops")]
    edges = [edge("start", "f"), edge("f", "ok"), edge("f", "oops", "fail-branch")]
    outcome = await run_graph(nodes, edges, {"x": 1}, mode="chat")
    assert outcome.state.status == "succeeded"
    assert outcome.streamed == "ok"


async def test_default_value_replaces_the_outputs() -> None:
    flaky = node(
        "f",
        "test-flaky",
        fail_times=1,
        error_strategy="default-value",
        default_value=[{"key": "value", "type": "string", "value": "fallback"}],
    )
    outcome = await run_graph(
        [START, flaky, end(("v", ["f", "value"]))], chain("start", "f", "end"), {"x": 1}
    )
    assert outcome.state.status == "partial-succeeded"
    assert outcome.state.outputs == {"v": "fallback"}
    assert outcome.finished("f")[0].node.outputs["error_message"] == "attempt 1 failed"


async def test_max_steps_stops_the_run() -> None:
    ids = [f"n{i}" for i in range(10)]
    nodes = [START, *(template(i, i) for i in ids)]
    outcome = await run_graph(nodes, chain("start", *ids), {"x": 1}, limits=Limits(max_steps=5))
    assert outcome.state.status == "failed"
    assert "WORKFLOW_MAX_EXECUTION_STEPS" in (outcome.state.error or "")
    assert len(order(outcome)) == 5


async def test_max_time_stops_the_run() -> None:
    slow = node("slow", "test-slow", pieces=["a"], delay=5)
    outcome = await run_graph(
        [START, slow], chain("start", "slow"), {"x": 1}, limits=Limits(max_time=0.1)
    )
    assert outcome.state.status == "failed"
    assert "WORKFLOW_MAX_EXECUTION_TIME" in (outcome.state.error or "")
    assert outcome.finished("slow")[0].node.status == "stopped"


def iteration(**data: Any) -> list[dict[str, Any]]:
    return [
        node(
            "it",
            "iteration",
            iterator_selector=["start", "items"],
            output_selector=["t", "answer"],
            start_node_id="it-start",
            **data,
        ),
        child("it", "it-start", "iteration-start"),
        child("it", "t", "answer", answer="<{{#it.item#}}:{{#it.index#}}>"),
    ]


ITEMS_START = node("start", "start", variables=[{"variable": "items", "type": "json_object"}])


async def test_iteration_collects_each_items_output() -> None:
    nodes = [ITEMS_START, *iteration(), end(("out", ["it", "output"]))]
    edges = [*chain("start", "it", "end"), edge("it-start", "t")]
    outcome = await run_graph(nodes, edges, {"items": ["a", "b", "c"]})
    assert outcome.state.outputs == {"out": ["<a:0>", "<b:1>", "<c:2>"]}
    nexts = [e.index for e in outcome.events if isinstance(e, ContainerNext)]
    assert nexts == [0, 1, 2]
    assert any(isinstance(e, ContainerStarted) for e in outcome.events)
    completed = [e for e in outcome.events if isinstance(e, ContainerCompleted)]
    assert completed[0].node.outputs == {"out": None} or completed[0].node.outputs["output"]
    inner = [
        e.node for e in outcome.events if isinstance(e, NodeFinished) and e.node.node_id == "t"
    ]
    assert [n.metadata["iteration_index"] for n in inner] == [0, 1, 2]
    assert all(n.iteration_id == "it" for n in inner)


async def test_parallel_iteration_keeps_item_order() -> None:
    nodes = [
        ITEMS_START,
        node(
            "it",
            "iteration",
            iterator_selector=["start", "items"],
            output_selector=["s", "text"],
            start_node_id="it-start",
            is_parallel=True,
            parallel_nums=4,
        ),
        child("it", "it-start", "iteration-start"),
        child("it", "s", "test-slow", pieces=["{{#it.item#}}"], delay=0.05),
        end(("out", ["it", "output"])),
    ]
    edges = [*chain("start", "it", "end"), edge("it-start", "s")]
    loop = asyncio.get_running_loop()
    began = loop.time()
    outcome = await run_graph(nodes, edges, {"items": list(range(8))})
    assert loop.time() - began < 0.3  # 8 × 0.05 s in batches of 4
    assert len(outcome.state.outputs["out"]) == 8


async def test_iteration_error_modes() -> None:
    nodes = [
        ITEMS_START,
        node(
            "it",
            "iteration",
            iterator_selector=["start", "items"],
            output_selector=["d", "v"],
            start_node_id="it-start",
            error_handle_mode="remove-abnormal-output",
        ),
        child("it", "it-start", "iteration-start"),
        child("it", "d", "test-double"),
        end(("out", ["it", "output"])),
    ]
    edges = [*chain("start", "it", "end"), edge("it-start", "d")]
    removed = await run_graph(nodes, edges, {"items": [1, "x", 3]})
    assert removed.state.outputs == {"out": [2, 6]}
    nodes[1]["data"]["error_handle_mode"] = "continue-on-error"
    kept = await run_graph(nodes, edges, {"items": [1, "x", 3]})
    assert kept.state.outputs == {"out": [2, None, 6]}
    nodes[1]["data"]["error_handle_mode"] = "terminated"
    failed = await run_graph(nodes, edges, {"items": [1, "x", 3]})
    assert failed.state.status == "failed"
    assert "not a number" in (failed.state.error or "")


async def test_flatten_output() -> None:
    nodes = [
        ITEMS_START,
        node(
            "it",
            "iteration",
            iterator_selector=["start", "items"],
            output_selector=["it", "item"],
            start_node_id="it-start",
            flatten_output=True,
        ),
        child("it", "it-start", "iteration-start"),
        end(("out", ["it", "output"])),
    ]
    outcome = await run_graph(nodes, chain("start", "it", "end"), {"items": [[1, 2], [3]]})
    assert outcome.state.outputs == {"out": [1, 2, 3]}
    nodes[1]["data"]["flatten_output"] = False
    plain = await run_graph(nodes, chain("start", "it", "end"), {"items": [[1, 2], [3]]})
    assert plain.state.outputs == {"out": [[1, 2], [3]]}


def counting_loop(**data: Any) -> list[dict[str, Any]]:
    return [
        node(
            "lp",
            "loop",
            loop_count=10,
            start_node_id="lp-start",
            loop_variables=[
                {"label": "n", "var_type": "number", "value_type": "constant", "value": "0"}
            ],
            **data,
        ),
        child("lp", "lp-start", "loop-start"),
        child(
            "lp",
            "inc",
            "assigner",
            version="2",
            items=[
                {
                    "variable_selector": ["lp", "n"],
                    "input_type": "constant",
                    "operation": "+=",
                    "value": 2,
                }
            ],
        ),
    ]


async def test_loop_runs_until_its_break_condition() -> None:
    breaks = [{"variable_selector": ["lp", "n"], "comparison_operator": "≥", "value": "6"}]
    nodes = [
        START,
        *counting_loop(break_conditions=breaks),
        end(("n", ["lp", "n"]), ("r", ["lp", "loop_round"])),
    ]
    edges = [*chain("start", "lp", "end"), edge("lp-start", "inc")]
    outcome = await run_graph(nodes, edges, {"x": 1})
    assert outcome.state.outputs == {"n": 6, "r": 3}


async def test_loop_stops_at_its_count_and_at_loop_end() -> None:
    nodes = [START, *counting_loop(), end(("n", ["lp", "n"]))]
    edges = [*chain("start", "lp", "end"), edge("lp-start", "inc")]
    outcome = await run_graph(nodes, edges, {"x": 1})
    assert outcome.state.outputs == {"n": 20}
    with_end = [*nodes, child("lp", "stop", "loop-end")]
    outcome = await run_graph(with_end, [*edges, edge("inc", "stop")], {"x": 1})
    assert outcome.state.outputs == {"n": 2}


async def test_conversation_variables_are_assigned() -> None:
    nodes = [
        START,
        node(
            "set",
            "assigner",
            version="2",
            items=[
                {
                    "variable_selector": ["conversation", "count"],
                    "input_type": "constant",
                    "operation": "+=",
                    "value": 1,
                },
                {
                    "variable_selector": ["conversation", "seen"],
                    "input_type": "variable",
                    "operation": "append",
                    "value": ["start", "x"],
                },
            ],
        ),
        end(("c", ["conversation", "count"]), ("s", ["conversation", "seen"])),
    ]
    outcome = await run_graph(
        nodes, chain("start", "set", "end"), {"x": 7}, conversation={"count": 1, "seen": [3]}
    )
    assert outcome.state.outputs == {"c": 2, "s": [3, 7]}


async def test_a_missing_node_type_fails_clearly_at_that_node() -> None:
    nodes = [START, node("t", "human-input", title="Ask"), end()]
    outcome = await run_graph(nodes, chain("start", "t", "end"), {"x": 1})
    assert outcome.state.status == "failed"
    assert outcome.state.error == "Ask: human input nodes are not supported"


async def test_stop_halts_the_run() -> None:
    import uuid
    from typing import cast

    from tests.support.workflow import node as mk
    from tusk.workflow.context import Resources, RunContext
    from tusk.workflow.executor import Executor
    from tusk.workflow.plan import build_plan
    from tusk.workflow.variables import VariablePool

    plan = build_plan(
        {
            "nodes": [
                START,
                mk("slow", "test-slow", pieces=["a"], delay=5),
                template("after", "x"),
            ],
            "edges": chain("start", "slow", "after"),
        },
        "workflow",
    )
    run = RunContext(
        uuid.uuid4(),
        uuid.uuid4(),
        uuid.uuid4(),
        uuid.uuid4(),
        cast(Resources, None),
        inputs={"x": 1},
    )
    events: list[Any] = []
    executor = Executor(plan, run, VariablePool.for_run({}), events.append)

    async def run_then_count_cancels() -> tuple[Any, int]:
        state = await executor.run()  # the slow node, alone, runs in this task
        current = asyncio.current_task()
        assert current is not None
        return state, current.cancelling()

    task = asyncio.create_task(run_then_count_cancels())
    await asyncio.sleep(0.1)
    loop = asyncio.get_running_loop()
    began = loop.time()
    executor.stop()
    state, cancels_left = await task
    assert loop.time() - began < 0.1
    assert state.status == "stopped"
    assert cancels_left == 0  # the stop's cancellation was taken back: the task goes on
    assert [
        e.node.status for e in events if isinstance(e, NodeFinished) and e.node.node_id == "slow"
    ] == ["stopped"]
    assert not any(isinstance(e, NodeStarted) and e.node.node_id == "after" for e in events)


@pytest.mark.parametrize("beside", [False, True], ids=["alone", "beside another node"])
async def test_a_fault_of_the_engine_fails_the_run_at_its_node(beside: bool) -> None:
    """The same whether the node ran in the level's own task (alone) or in one of its own."""
    nodes = [START, node("bad", "test-broken"), node("other", "test-slow", delay=0.05)]
    edges = [edge("start", "bad"), *([edge("start", "other")] if beside else [])]
    outcome = await asyncio.wait_for(run_graph(nodes, edges, {"x": 1}), 5)
    assert outcome.state.status == "failed"
    assert (outcome.state.error or "").startswith("internal error in node bad")
