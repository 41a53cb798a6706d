"""Content moderation by keywords (Dify's `sensitive_word_avoidance` of type `keywords`): a query
or input holding a keyword is answered with the preset response, without calling the model; an
answer holding one is replaced by the output's preset response.

Keywords are one per line and match case-insensitively anywhere in a value. Other moderation
types (OpenAI moderation, API extensions) are refused when a config is saved; in a document
stored some other way they are not applied, and a warning is logged."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from tusk.apps.easy_config import KeywordsConfig, SensitiveWords

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeywordRules:
    keywords: tuple[str, ...]
    inputs_response: str | None  # None: inputs are not checked
    outputs_response: str | None  # None: answers are not checked


def keyword_rules(config: SensitiveWords) -> KeywordRules | None:
    if not config.enabled:
        return None
    if config.type != "keywords":
        log.warning("moderation type %r is not supported; not applied", config.type)
        return None
    try:
        parsed = KeywordsConfig.model_validate(config.config)
    except ValidationError:
        log.warning("keywords moderation config cannot be read; not applied")
        return None
    keywords = tuple(k.lower() for k in parsed.keywords.split("\n") if k.strip())
    inputs, outputs = parsed.inputs_config, parsed.outputs_config
    return KeywordRules(
        keywords=keywords,
        inputs_response=inputs.preset_response if inputs.enabled else None,
        outputs_response=outputs.preset_response if outputs.enabled else None,
    )


def holds_keyword(keywords: Iterable[str], values: Iterable[Any]) -> bool:
    texts = [str(value).lower() for value in values]
    return any(keyword in text for keyword in keywords for text in texts)


def input_verdict(rules: KeywordRules | None, inputs: Mapping[str, Any], query: str) -> str | None:
    """The preset response when the inputs or the query hold a keyword, else None."""
    if rules is None or rules.inputs_response is None:
        return None
    if holds_keyword(rules.keywords, [*inputs.values(), query]):
        return rules.inputs_response
    return None


def output_verdict(rules: KeywordRules | None, answer: str) -> str | None:
    """The answer's replacement when it holds a keyword, else None."""
    if rules is None or rules.outputs_response is None:
        return None
    return rules.outputs_response if holds_keyword(rules.keywords, [answer]) else None
