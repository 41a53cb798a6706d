"""Chunking: token budgets, overlap, separators, parents and children, with the real tokenizer."""

from __future__ import annotations

import re
import time
from itertools import pairwise

import pytest

from tusk.errors import InvalidParam
from tusk.rag.split import SplitRules, split
from tusk.rag.tokens import count, count_tokens

PARAGRAPH = (
    "Tusk keeps every piece of state in PostgreSQL. Documents are split into chunks, "
    "embedded, and indexed for search. Each chunk remembers its document and position."
)


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def test_small_paragraphs_stay_together_in_one_chunk() -> None:
    text = f"{PARAGRAPH}\n\nA second, short paragraph."
    chunks = split(text, SplitRules(), count_tokens)
    assert [c.text for c in chunks] == [text]
    assert chunks[0].tokens == count(text)


def numbered(count: int) -> str:
    """Paragraphs of five sentences, each sentence different from every other."""
    sentences = [f"Sentence number {i} says something of its own." for i in range(count)]
    return "\n\n".join(" ".join(sentences[i : i + 5]) for i in range(0, count, 5))


def first_sentence(text: str) -> str:
    return text.split(". ")[0].rstrip(".")


def test_automatic_chunks_respect_the_budget_keep_order_and_overlap() -> None:
    chunks = split(numbered(300), SplitRules(max_tokens=120, overlap=30), count_tokens)
    assert len(chunks) > 10
    assert all(c.tokens <= 120 for c in chunks)
    assert [c.position for c in chunks] == list(range(len(chunks)))
    for before, after in pairwise(chunks):
        assert first_sentence(after.text) in before.text  # it starts with the end of the last
    seen = sorted({int(n) for c in chunks for n in re.findall(r"number (\d+) ", c.text)})
    assert seen == list(range(300))


def test_without_overlap_chunks_do_not_repeat_text() -> None:
    chunks = split(numbered(300), SplitRules(max_tokens=120, overlap=0), count_tokens)
    for before, after in pairwise(chunks):
        assert first_sentence(after.text) not in before.text


def test_text_without_separators_is_cut_by_characters() -> None:
    text = "数据库" * 2000  # CJK with no spaces and no punctuation
    chunks = split(text, SplitRules(max_tokens=100, overlap=0), count_tokens)
    assert all(c.tokens <= 100 for c in chunks)
    assert "".join(c.text for c in chunks) == text


def test_sentences_are_a_boundary_before_words() -> None:
    sentence = "This sentence has exactly some words in it."
    text = " ".join([sentence] * 40)  # one line, one paragraph
    chunks = split(text, SplitRules(max_tokens=60, overlap=0), count_tokens)
    assert all(c.text.endswith(".") for c in chunks)


def test_custom_separators_end_chunks_and_long_pieces_are_split() -> None:
    faq = (
        "Q: what is Tusk?\nA: a platform.***Q: where is state?\nA: PostgreSQL.***"
        + (PARAGRAPH + " ") * 20
    )
    rules = SplitRules(mode="custom", separator="***", max_tokens=100, overlap=10)
    chunks = split(faq, rules, count_tokens)
    assert chunks[0].text == "Q: what is Tusk?\nA: a platform."
    assert chunks[1].text == "Q: where is state?\nA: PostgreSQL."
    assert len(chunks) > 3
    assert all(c.tokens <= 100 for c in chunks)


def test_hierarchical_parents_hold_their_children() -> None:
    text = "\n\n".join(f"Section {i}\n" + "\n".join([PARAGRAPH] * 3) for i in range(4))
    rules = SplitRules.from_dify(
        {
            "mode": "hierarchical",
            "rules": {
                "parent_mode": "paragraph",
                "segmentation": {"separator": "\\n\\n", "max_tokens": 500},
                "subchunk_segmentation": {"separator": "\\n", "max_tokens": 50},
            },
        }
    )
    parents = split(text, rules, count_tokens)
    assert len(parents) == 4
    assert parents[2].text.startswith("Section 2")
    assert parents[0].children[0].text == "Section 0"
    assert all(child.tokens <= 50 for parent in parents for child in parent.children)
    assert all(child.text in parent.text for parent in parents for child in parent.children)


def test_a_full_document_parent_covers_the_whole_text() -> None:
    rules = SplitRules(mode="hierarchical", parent_mode="full-doc", child_max_tokens=60)
    text = "\n".join([PARAGRAPH] * 5)
    parents = split(text, rules, count_tokens)
    assert [p.text for p in parents] == [text]
    assert len(parents[0].children) == 5


def test_rules_from_dify_and_their_limits() -> None:
    assert SplitRules.from_dify({"mode": "automatic"}) == SplitRules()
    custom = SplitRules.from_dify(
        {
            "mode": "custom",
            "rules": {"segmentation": {"separator": "\\n", "max_tokens": 800, "chunk_overlap": 20}},
        }
    )
    assert (custom.separator, custom.max_tokens, custom.overlap) == ("\n", 800, 20)
    for bad in (
        {"mode": "custom", "rules": {"segmentation": {"max_tokens": 5000}}},
        {"mode": "custom", "rules": {"segmentation": {"max_tokens": 100, "chunk_overlap": 100}}},
        {"mode": "sideways"},
    ):
        with pytest.raises(InvalidParam):
            SplitRules.from_dify(bad)


def test_a_megabyte_of_text_splits_in_seconds() -> None:
    text = "\n\n".join(f"{i}. {PARAGRAPH}" for i in range(5000))  # about 1 MB
    started = time.perf_counter()
    chunks = split(text, SplitRules(), count_tokens)
    assert time.perf_counter() - started < 10
    assert all(c.tokens <= 500 for c in chunks)
    assert len(chunks) > 400
