"""What every node type is: a parsed configuration and one `run` that reads the variable pool
and returns outputs. The executor handles everything around it (events, retries, error
strategies, branching, streaming)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tusk.workflow.graph import DEFAULT_HANDLE, NodeSpec
from tusk.workflow.variables import Selector

if TYPE_CHECKING:
    from tusk.workflow.context import RunContext
    from tusk.workflow.events import Event, NodeRun
    from tusk.workflow.variables import VariablePool

FAIL_BRANCH = "fail-branch"
SUCCESS_BRANCH = "success-branch"


class NodeError(Exception):
    """A node could not do its work; the message is for the person who built the workflow."""

    @property
    def error_type(self) -> str:
        return type(self).__name__


class NodeConfigError(NodeError):
    """The node's configuration in the graph cannot be used."""


class NotSupported(NodeError):
    pass


class Config(BaseModel):
    """Base of node configurations: unknown keys (editor state, newer Dify fields) are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class RetryConfig(Config):
    retry_enabled: bool = False
    max_retries: int = Field(0, ge=0, le=10)
    retry_interval: int = Field(0, ge=0, le=60_000)  # milliseconds


class DefaultValue(Config):
    key: str
    type: str = "string"
    value: Any = None


class Common(Config):
    """The fields every node's `data` may carry."""

    title: str = ""
    error_strategy: Literal["fail-branch", "default-value"] | None = None
    default_value: list[DefaultValue] = []
    retry_config: RetryConfig = RetryConfig()


C = TypeVar("C", bound=BaseModel)


def describe(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "config"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def parse_config(model: type[C], spec: NodeSpec) -> C:
    try:
        return model.model_validate(dict(spec.data))
    except ValidationError as exc:
        raise NodeConfigError(
            f"{spec.type} node configuration is invalid: {describe(exc)}"
        ) from None


@dataclass(slots=True)
class NodeResult:
    outputs: dict[str, Any]
    inputs: dict[str, Any] | None = None
    process_data: dict[str, Any] | None = None
    handle: str = DEFAULT_HANDLE  # the outgoing edges taken: a case id, a class id, ...
    metadata: dict[str, Any] = field(default_factory=dict)  # total_tokens, total_price, ...


@dataclass(frozen=True, slots=True)
class InnerRun:
    """How one pass through a container's inside ended."""

    status: str  # "succeeded", "failed", "stopped"
    error: str | None
    steps: int
    tokens: int
    exceptions: int
    break_requested: bool = False


class NodeContext:
    """What a running node sees: the run, the pool, its own execution record, and ways to
    stream output and (for containers) run its inside."""

    __slots__ = ("emit", "execution", "pool", "run", "run_inner", "stream")

    def __init__(
        self,
        run: RunContext,
        pool: VariablePool,
        execution: NodeRun,
        stream: Callable[[str, str], None],
        emit: Callable[[Event], None],
        run_inner: Callable[..., Any],
    ) -> None:
        self.run = run
        self.pool = pool
        self.execution = execution
        self.stream = stream  # stream(output_name, text): a piece of a streamed output
        self.emit = emit
        self.run_inner = run_inner  # see Executor.run_inner


class Node(ABC):
    type: ClassVar[str]
    streams: ClassVar[frozenset[str]] = frozenset()  # outputs sent in pieces while running
    branches: ClassVar[bool] = False  # takes the edges of one handle among several
    children: frozenset[str] = frozenset()  # containers: the nodes inside

    def __init__(self, spec: NodeSpec) -> None:
        self.spec = spec
        self.id = spec.id
        self.common = parse_config(Common, spec)

    @property
    def title(self) -> str:
        return self.spec.title

    @abstractmethod
    async def run(self, ctx: NodeContext) -> NodeResult: ...

    def reads(self) -> Iterable[Selector]:
        """The selectors this node reads, checked at import and publish."""
        return ()

    def output_names(self) -> frozenset[str] | None:
        """The outputs this node writes; None when they depend on the run."""
        return None

    def handles(self) -> frozenset[str]:
        """The edge handles this node may take."""
        return frozenset({DEFAULT_HANDLE})


def selector_value(pool: VariablePool, selector: Selector) -> Any:
    return pool.get(selector) if selector else None


def inputs_of(pool: VariablePool, named: Mapping[str, Selector]) -> dict[str, Any]:
    return {name: pool.get(selector) for name, selector in named.items()}
