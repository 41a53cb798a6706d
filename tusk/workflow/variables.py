"""The variable pool of a run: values keyed by `[node_id, name]`, with selectors that reach into
objects and file attributes. Containers (iteration, loop) read through to the run's pool and keep
their children's values in a scope of their own, so parallel iterations do not see each other."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tusk.workflow.values import file_attribute, is_file

SYSTEM = "sys"
ENVIRONMENT = "env"
CONVERSATION = "conversation"
RESERVED = frozenset({SYSTEM, ENVIRONMENT, CONVERSATION, "rag"})

Selector = Sequence[str]


def _drill(value: Any, attribute: str) -> Any:
    if is_file(value):
        return file_attribute(value, attribute)
    if isinstance(value, Mapping):
        return value.get(attribute)
    return None


class VariablePool:
    __slots__ = ("_local", "_parent", "_values")

    def __init__(
        self, parent: VariablePool | None = None, local: frozenset[str] = frozenset()
    ) -> None:
        self._values: dict[str, dict[str, Any]] = {}
        self._parent = parent
        self._local = local

    @classmethod
    def for_run(
        cls,
        system: Mapping[str, Any],
        environment: Mapping[str, Any] = {},
        conversation: Mapping[str, Any] = {},
    ) -> VariablePool:
        pool = cls()
        pool._values[SYSTEM] = dict(system)
        pool._values[ENVIRONMENT] = dict(environment)
        pool._values[CONVERSATION] = dict(conversation)
        return pool

    def scope(self, local: frozenset[str]) -> VariablePool:
        """A pool whose writes for the nodes in `local` stay in it; everything else is shared."""
        return VariablePool(self, local)

    def _owner(self, node_id: str) -> VariablePool:
        pool = self
        while pool._parent is not None and node_id not in pool._local:
            pool = pool._parent
        return pool

    def set(self, node_id: str, name: str, value: Any) -> None:
        self._owner(node_id)._values.setdefault(node_id, {})[name] = value

    def set_outputs(self, node_id: str, outputs: Mapping[str, Any]) -> None:
        self._owner(node_id)._values.setdefault(node_id, {}).update(outputs)

    def _node(self, node_id: str) -> dict[str, Any] | None:
        pool: VariablePool | None = self
        while pool is not None:
            if (values := pool._values.get(node_id)) is not None:
                return values
            pool = pool._parent
        return None

    def outputs(self, node_id: str) -> Mapping[str, Any]:
        return self._node(node_id) or {}

    def has(self, selector: Selector) -> bool:
        if len(selector) < 2:
            return False
        values = self._node(selector[0])
        return values is not None and selector[1] in values

    def get(self, selector: Selector, default: Any = None) -> Any:
        """The value at `selector`, or `default` when nothing is there."""
        if len(selector) < 2 or (values := self._node(selector[0])) is None:
            return default
        value = values.get(selector[1], default)
        for attribute in selector[2:]:
            if value is None:
                return default
            value = _drill(value, attribute)
        return default if value is None else value

    def conversation(self) -> dict[str, Any]:
        return dict(self._owner(CONVERSATION)._values.get(CONVERSATION, {}))
