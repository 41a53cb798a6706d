"""Ordering the output of Answer (chatflow) and End (workflow) nodes into one stream.

A response node's pieces go out in template order. Its stream opens as soon as some route to
it has all its branch decisions taken (so an LLM's tokens reach the client while the LLM still
runs, but never for a branch that may not be taken). One response streams at a time; the next
waits, buffering, until the current one is complete."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from tusk.workflow.events import TextChunk
from tusk.workflow.plan import ResponseSpec
from tusk.workflow.template import Text
from tusk.workflow.values import to_markdown
from tusk.workflow.variables import CONVERSATION, VariablePool

Key = tuple[str, str]


@dataclass
class _Session:
    spec: ResponseSpec
    index: int = 0

    @property
    def complete(self) -> bool:
        return self.index >= len(self.spec.pieces)


class Coordinator:
    def __init__(
        self,
        specs: Sequence[ResponseSpec],
        level_nodes: Collection[str],
        pool: VariablePool,
        emit: Callable[[TextChunk], None],
    ) -> None:
        self._pool = pool
        self._emit = emit
        self._level_nodes = level_nodes
        self._pending = {s.node_id: (s, [set(path) for path in s.paths]) for s in specs}
        self._active: _Session | None = None
        self._waiting: deque[_Session] = deque()
        self._wanted = {
            (p.selector[0], p.selector[1])
            for s in specs
            for p in s.pieces
            if not isinstance(p, Text)
        }
        self._buffers: dict[Key, list[str]] = {}
        self._read: dict[Key, int] = {}
        self._closed: set[Key] = set()
        self._finished: set[str] = set()
        self._skipped: set[str] = set()
        self._started: set[str] = set()
        for node_id, (_, paths) in list(self._pending.items()):
            if any(not path for path in paths):
                self._open(node_id)

    # --- what the executor reports ---------------------------------------------------------

    def edge_taken(self, edge_id: str) -> None:
        for node_id, (_, paths) in list(self._pending.items()):
            for path in paths:
                path.discard(edge_id)
            if any(not path for path in paths):
                self._open(node_id)

    def node_started(self, node_id: str) -> None:
        self._started.add(node_id)
        if node_id in self._pending:  # a response node that runs is certainly reached
            self._open(node_id)
        else:
            self.edge_taken(f"@{node_id}")
            self._flush()

    def chunk(self, node_id: str, name: str, text: str) -> None:
        key = (node_id, name)
        if key not in self._wanted or key in self._closed:
            return
        self._buffers.setdefault(key, []).append(text)
        if self._active is not None:
            self._flush()

    def node_finished(self, node_id: str) -> None:
        self._finished.add(node_id)
        for key in self._wanted:
            if key[0] == node_id:
                self._closed.add(key)
        self._flush()

    def node_skipped(self, node_id: str) -> None:
        self._skipped.add(node_id)
        self._pending.pop(node_id, None)
        self._flush()

    # --- internals ----------------------------------------------------------------------------

    def _open(self, node_id: str) -> None:
        spec, _ = self._pending.pop(node_id)
        session = _Session(spec)
        if self._active is None:
            self._active = session
            self._flush()
        else:
            self._waiting.append(session)

    def _settled(self, node_id: str) -> bool:
        """Whether the node's values are final (run, skipped, or not of this level)."""
        return (
            node_id in self._finished
            or node_id in self._skipped
            or node_id not in self._level_nodes
        )

    def _advance(self, session: _Session) -> bool:
        """Send what the current piece has ready; True when the piece is done."""
        piece = session.spec.pieces[session.index]
        node_id = session.spec.node_id
        if isinstance(piece, Text):
            self._emit(TextChunk(piece.text, (node_id, "answer"), node_id))
            return True
        source = piece.selector[0]
        if source in self._skipped:
            return True
        key = (source, piece.selector[1])
        if key in self._buffers:
            chunks, start = self._buffers[key], self._read.get(key, 0)
            for text in chunks[start:]:
                self._emit(TextChunk(text, piece.selector, node_id))
            self._read[key] = len(chunks)
            return key in self._closed
        if not self._settled(source):
            return False
        if source == CONVERSATION and node_id not in self._started:
            return False  # assigners upstream may still change it: wait for the node's turn
        if text := to_markdown(self._pool.get(piece.selector)):
            self._emit(TextChunk(text, piece.selector, node_id))
        return True

    def _flush(self) -> None:
        while self._active is not None:
            session = self._active
            while not session.complete and self._advance(session):
                session.index += 1
            if not session.complete:
                return
            self._active = self._waiting.popleft() if self._waiting else None
