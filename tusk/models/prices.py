"""What calls cost: prices per million tokens, from a built-in table or TUSK_MODEL_PRICES.

The built-in figures are list prices in USD as published by the providers (2025); a JSON file
`{"provider:model": {"input": 0.15, "output": 0.6, "currency": "USD"}, ...}` replaces or adds
entries. Models with no price cost 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from tusk.config import ConfigError

MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class Price:
    input: Decimal  # per million prompt tokens
    output: Decimal  # per million completion tokens
    currency: str = "USD"

    def cost(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        return (self.input * prompt_tokens + self.output * completion_tokens) / MILLION


BUILT_IN: dict[str, Price] = {
    "openai:gpt-4o-mini": Price(Decimal("0.15"), Decimal("0.60")),
    "openai:gpt-4o": Price(Decimal("2.50"), Decimal("10.00")),
    "openai:gpt-4.1-mini": Price(Decimal("0.40"), Decimal("1.60")),
    "openai:gpt-4.1": Price(Decimal("2.00"), Decimal("8.00")),
    "openai:text-embedding-3-small": Price(Decimal("0.02"), Decimal("0")),
    "openai:text-embedding-3-large": Price(Decimal("0.13"), Decimal("0")),
    "anthropic:claude-3-5-haiku-latest": Price(Decimal("0.80"), Decimal("4.00")),
    "anthropic:claude-3-5-sonnet-latest": Price(Decimal("3.00"), Decimal("15.00")),
}
FREE = Price(Decimal(0), Decimal(0))


def load_prices(path: Path | None) -> dict[str, Price]:
    prices = dict(BUILT_IN)
    if path is None:
        return prices
    try:
        raw = json.loads(path.read_text())
        for name, entry in raw.items():
            prices[name] = Price(
                Decimal(str(entry.get("input", 0))),
                Decimal(str(entry.get("output", 0))),
                str(entry.get("currency", "USD")),
            )
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        expected = 'a JSON object {"provider:model": {"input": ..., "output": ...}}'
        raise ConfigError("TUSK_MODEL_PRICES", f"cannot be read ({exc})", expected) from None
    return prices


def price_of(prices: dict[str, Price], full_name: str) -> Price:
    return prices.get(full_name, FREE)
