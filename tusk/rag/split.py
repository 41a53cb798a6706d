"""Chunking, as pure functions of the text, the rules and a token counter.

- `automatic`: cut the text into sentences (at paragraphs, lines and sentence ends; a sentence
  over the budget at words, then characters, for text with no spaces), and pack them back into
  chunks of at most `max_tokens`, each starting with the last sentences of the previous chunk
  that fit in `overlap` tokens.
- `custom`: every `separator` ends a chunk; a piece over `max_tokens` is split as above.
- `hierarchical`: parents are the pieces between `parent_separator`s (mode `paragraph`) or the
  whole document (mode `full-doc`, in parents of at most FULL_DOC_MAX_TOKENS); each parent is
  cut into small children at `child_separator`. Retrieval matches children, returns parents.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Literal

from tusk.errors import InvalidParam

Counter = Callable[[Sequence[str]], list[int]]
Mode = Literal["automatic", "custom", "hierarchical"]

SENTENCE = "<sentence>"  # stands for a sentence boundary among the separators
SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|(?<=[。！？；])")
STRUCTURAL_SEPARATORS = ("\n\n", "\n", SENTENCE)
FALLBACK_SEPARATORS = (" ", "")
MIN_MAX_TOKENS, MAX_MAX_TOKENS = 50, 4000
FULL_DOC_MAX_TOKENS = 10_000


@dataclass(frozen=True)
class Chunk:
    text: str
    tokens: int
    position: int
    children: tuple[Chunk, ...] = ()


@dataclass(frozen=True)
class SplitRules:
    mode: Mode = "automatic"
    separator: str = "\n\n"
    max_tokens: int = 500
    overlap: int = 50
    parent_mode: Literal["paragraph", "full-doc"] = "paragraph"
    child_separator: str = "\n"
    child_max_tokens: int = 200
    child_overlap: int = 0

    def __post_init__(self) -> None:
        for name, limit, overlap in (
            ("max_tokens", self.max_tokens, self.overlap),
            ("subchunk max_tokens", self.child_max_tokens, self.child_overlap),
        ):
            if not MIN_MAX_TOKENS <= limit <= MAX_MAX_TOKENS:
                raise InvalidParam(
                    f"{name} must be between {MIN_MAX_TOKENS} and {MAX_MAX_TOKENS}",
                    params="process_rule",
                )
            if not 0 <= overlap < limit:
                raise InvalidParam(
                    f"the overlap must be at least 0 and less than {name}", params="process_rule"
                )

    @classmethod
    def from_dify(cls, process_rule: Mapping[str, Any] | None) -> SplitRules:
        """From Dify's `process_rule`: {mode, rules: {segmentation, parent_mode,
        subchunk_segmentation}}."""
        rule = process_rule or {}
        mode: Mode = rule.get("mode") or "automatic"
        if mode not in ("automatic", "custom", "hierarchical"):
            raise InvalidParam(f"unknown process_rule mode {mode!r}", params="process_rule")
        if mode == "automatic":
            return cls()
        rules = rule.get("rules") or {}
        segmentation = rules.get("segmentation") or {}
        child = rules.get("subchunk_segmentation") or {}
        return cls(
            mode=mode,
            separator=_unescape(segmentation.get("separator", "\n\n")),
            max_tokens=int(segmentation.get("max_tokens", 500 if mode == "custom" else 1024)),
            overlap=int(segmentation.get("chunk_overlap", 50 if mode == "custom" else 0)),
            parent_mode=rules.get("parent_mode") or "paragraph",
            child_separator=_unescape(child.get("separator", "\n")),
            child_max_tokens=int(child.get("max_tokens", 200)),
            child_overlap=int(child.get("chunk_overlap", 0)),
        )


def _unescape(separator: str) -> str:
    """Separators often arrive escaped from forms and JSON ("\\n")."""
    return separator.replace("\\n", "\n").replace("\\t", "\t") or "\n\n"


def _pieces(text: str, separator: str) -> list[str]:
    """Split, keeping each separator at the end of the piece it ends (joining restores the text)."""
    if separator == "":
        return list(text)
    if separator == SENTENCE:
        cuts = [m.end() for m in SENTENCE_END.finditer(text)]
        bounds = [0, *cuts, len(text)]
        return [text[a:b] for a, b in pairwise(bounds) if a < b]
    parts = text.split(separator)
    return [p + separator for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _sentences(text: str) -> list[str]:
    """Paragraphs, then lines, then sentences: the boundaries a chunk may end at."""
    pieces = [text]
    for separator in STRUCTURAL_SEPARATORS:
        pieces = [part for piece in pieces for part in _pieces(piece, separator)]
    return pieces


def _cut(
    piece: str, separators: Sequence[str], limit: int, counter: Counter
) -> list[tuple[str, int]]:
    """A sentence over the limit, cut at words, then a word (or text with no spaces, as in
    Chinese) at characters."""
    parts = _pieces(piece, separators[0])
    out: list[tuple[str, int]] = []
    for part, tokens in zip(parts, counter(parts), strict=True):
        if tokens <= limit or len(separators) == 1:
            out.append((part, tokens))
        else:
            out += _cut(part, separators[1:], limit, counter)
    return out


def _atoms(text: str, limit: int, counter: Counter) -> list[tuple[str, int]]:
    """The sentences of the text with their token counts, those over `limit` cut smaller."""
    sentences = _sentences(text)
    atoms: list[tuple[str, int]] = []
    for sentence, tokens in zip(sentences, counter(sentences), strict=True):
        if tokens <= limit:
            atoms.append((sentence, tokens))
        else:
            atoms += _cut(sentence, FALLBACK_SEPARATORS, limit, counter)
    return atoms


def _overlap_tail(current: list[tuple[str, int]], overlap: int, room: int) -> list[tuple[str, int]]:
    """The end of a finished chunk that the next one starts with."""
    tail: list[tuple[str, int]] = []
    tokens = 0
    for text, count in reversed(current):
        if tokens + count > min(overlap, room):
            break
        tail.insert(0, (text, count))
        tokens += count
    return tail


def merge(atoms: Sequence[tuple[str, int]], limit: int, overlap: int) -> list[str]:
    """Greedily pack pieces into chunks of at most `limit` tokens, with overlap."""
    chunks: list[str] = []
    current: list[tuple[str, int]] = []
    total = 0
    for text, count in atoms:
        if current and total + count > limit:
            chunks.append("".join(t for t, _ in current))
            current = _overlap_tail(current, overlap, limit - count)
            total = sum(c for _, c in current)
        current.append((text, count))
        total += count
    if current:
        chunks.append("".join(t for t, _ in current))
    return [chunk.strip() for chunk in chunks if chunk.strip()]


def _recursive(text: str, limit: int, overlap: int, counter: Counter) -> list[str]:
    return merge(_atoms(text, limit, counter), limit, overlap)


def _at_separator(
    text: str, separator: str, limit: int, overlap: int, counter: Counter
) -> list[str]:
    """Each separator ends a chunk; pieces over the limit are split recursively."""
    pieces = [p.strip() for p in text.split(separator)]
    pieces = [p for p in pieces if p]
    out: list[str] = []
    for piece, tokens in zip(pieces, counter(pieces), strict=True):
        out += [piece] if tokens <= limit else _recursive(piece, limit, overlap, counter)
    return out


def _chunks(texts: list[str], counter: Counter) -> list[Chunk]:
    return [
        Chunk(text, tokens, position)
        for position, (text, tokens) in enumerate(zip(texts, counter(texts), strict=True))
    ]


def _parents(text: str, rules: SplitRules, counter: Counter) -> list[str]:
    if rules.parent_mode == "full-doc":
        return _recursive(text, FULL_DOC_MAX_TOKENS, 0, counter)
    return _at_separator(text, rules.separator, rules.max_tokens, rules.overlap, counter)


def split(text: str, rules: SplitRules, counter: Counter) -> list[Chunk]:
    if rules.mode == "automatic":
        return _chunks(_recursive(text, rules.max_tokens, rules.overlap, counter), counter)
    if rules.mode == "custom":
        texts = _at_separator(text, rules.separator, rules.max_tokens, rules.overlap, counter)
        return _chunks(texts, counter)
    parents = _chunks(_parents(text, rules, counter), counter)
    return [
        Chunk(
            parent.text,
            parent.tokens,
            parent.position,
            tuple(
                _chunks(
                    _at_separator(
                        parent.text,
                        rules.child_separator,
                        rules.child_max_tokens,
                        rules.child_overlap,
                        counter,
                    ),
                    counter,
                )
            ),
        )
        for parent in parents
    ]
