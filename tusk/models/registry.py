"""Providers by name, from the entry-point group `tusk.providers` (built-ins register there too),
and parsing of model names: `provider:model`."""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from tusk.models.base import Provider
from tusk.models.errors import UnknownModel

ENTRY_POINT_GROUP = "tusk.providers"


@cache
def provider_classes() -> dict[str, type[Provider]]:
    found: dict[str, type[Provider]] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        cls = entry.load()
        if isinstance(cls, type) and issubclass(cls, Provider):
            found[entry.name] = cls
    return found


def provider_class(name: str) -> type[Provider]:
    try:
        return provider_classes()[name]
    except KeyError:
        known = ", ".join(sorted(provider_classes()))
        raise UnknownModel(name, f"no provider named {name!r} (known: {known})") from None


def parse_model_name(full_name: str) -> tuple[str, str]:
    """`openai:gpt-4o-mini` -> ("openai", "gpt-4o-mini"). Dify's provider ids such as
    `langgenius/openai/openai` are accepted for the provider part."""
    provider, sep, model = full_name.strip().partition(":")
    provider = provider.rsplit("/", 1)[-1]
    if not sep or not provider or not model:
        raise UnknownModel(full_name, "a model name is provider:model, e.g. openai:gpt-4o-mini")
    return provider, model
