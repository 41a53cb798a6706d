"""Retrieval settings in Dify's `retrieval_model` shape, checked and completed with defaults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tusk.errors import InvalidParam

SearchMethod = Literal["semantic_search", "full_text_search", "hybrid_search"]
SEARCH_METHODS: tuple[SearchMethod, ...] = ("semantic_search", "full_text_search", "hybrid_search")
# Dify's economy datasets search "keywords"; Tusk answers those with full-text search.
ALIASES = {"keyword_search": "full_text_search"}
MAX_TOP_K = 100


@dataclass(frozen=True)
class RetrievalSettings:
    search_method: SearchMethod = "semantic_search"
    top_k: int = 4
    score_threshold: float | None = None
    reranking_model: str | None = None  # provider:model, when reranking is on
    fusion: Literal["weighted_score", "rrf"] = "weighted_score"
    vector_weight: float = 0.7
    keyword_weight: float = 0.3
    filters: Mapping[str, Any] = field(default_factory=dict)

    def as_dify(self) -> dict[str, Any]:
        provider, _, model = (self.reranking_model or "").partition(":")
        return {
            "search_method": self.search_method,
            "reranking_enable": self.reranking_model is not None,
            "reranking_mode": "reranking_model" if self.reranking_model else self.fusion,
            "reranking_model": {"reranking_provider_name": provider, "reranking_model_name": model},
            "top_k": self.top_k,
            "score_threshold_enabled": self.score_threshold is not None,
            "score_threshold": self.score_threshold,
            "weights": {
                "vector_setting": {"vector_weight": self.vector_weight},
                "keyword_setting": {"keyword_weight": self.keyword_weight},
            },
        }


def _number(value: Any, name: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidParam(f"{name} must be a number", params="retrieval_model") from None
    if not low <= number <= high:
        raise InvalidParam(f"{name} must be between {low:g} and {high:g}", params="retrieval_model")
    return number


def _reranking(raw: Mapping[str, Any]) -> str | None:
    if not raw.get("reranking_enable") or raw.get("reranking_mode") == "weighted_score":
        return None
    model = raw.get("reranking_model") or {}
    provider, name = model.get("reranking_provider_name"), model.get("reranking_model_name")
    if not provider or not name:
        raise InvalidParam(
            "reranking needs reranking_model's provider and name", params="retrieval_model"
        )
    return f"{str(provider).rsplit('/', 1)[-1]}:{name}"


def _weights(raw: Mapping[str, Any]) -> tuple[float, float]:
    weights = raw.get("weights") or {}
    vector = (weights.get("vector_setting") or {}).get("vector_weight", 0.7)
    keyword = (weights.get("keyword_setting") or {}).get("keyword_weight", 0.3)
    return _number(vector, "vector_weight", 0, 1), _number(keyword, "keyword_weight", 0, 1)


def parse_retrieval(
    raw: Mapping[str, Any] | None, *, default_method: SearchMethod = "semantic_search"
) -> RetrievalSettings:
    """Dify's `retrieval_model` (any field may be missing) as checked settings."""
    if not raw:
        return RetrievalSettings(search_method=default_method)
    method = ALIASES.get(str(raw.get("search_method")), raw.get("search_method") or default_method)
    if method not in SEARCH_METHODS:
        raise InvalidParam(f"unknown search_method {method!r}", params="retrieval_model")
    threshold = None
    if raw.get("score_threshold_enabled") and raw.get("score_threshold") is not None:
        threshold = _number(raw["score_threshold"], "score_threshold", 0, 1)
    vector_weight, keyword_weight = _weights(raw)
    return RetrievalSettings(
        search_method=method,
        top_k=int(_number(raw.get("top_k", 4), "top_k", 1, MAX_TOP_K)),
        score_threshold=threshold,
        reranking_model=_reranking(raw),
        fusion="rrf" if raw.get("reranking_mode") == "rrf" else "weighted_score",
        vector_weight=vector_weight,
        keyword_weight=keyword_weight,
        filters=raw.get("metadata_filtering_conditions") or {},
    )
