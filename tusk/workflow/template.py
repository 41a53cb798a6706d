"""Dify's `{{#node.variable#}}` references in text: parsed once into pieces, rendered from the
variable pool."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from tusk.workflow.values import to_markdown, to_text

if TYPE_CHECKING:
    from tusk.workflow.variables import VariablePool

REFERENCE = re.compile(r"\{\{#([a-zA-Z0-9_]{1,50}(?:\.[a-zA-Z_][a-zA-Z0-9_]{0,29}){1,10})#\}\}")


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class Var:
    selector: tuple[str, ...]


Piece = Text | Var


@lru_cache(maxsize=4096)
def parse(template: str) -> tuple[Piece, ...]:
    pieces: list[Piece] = []
    position = 0
    for match in REFERENCE.finditer(template):
        if match.start() > position:
            pieces.append(Text(template[position : match.start()]))
        pieces.append(Var(tuple(match.group(1).split("."))))
        position = match.end()
    if position < len(template):
        pieces.append(Text(template[position:]))
    return tuple(pieces)


def references(template: str) -> list[tuple[str, ...]]:
    return [piece.selector for piece in parse(template) if isinstance(piece, Var)]


def render(template: str, pool: VariablePool, *, markdown: bool = False) -> str:
    """The template with every reference replaced by its value's text ("" when missing)."""
    convert = to_markdown if markdown else to_text
    out: list[str] = []
    for piece in parse(template):
        if isinstance(piece, Text):
            out.append(piece.text)
        else:
            out.append(convert(pool.get(piece.selector)))
    return "".join(out)
