"""Dify's model provider ids, and the Tusk provider each one means.

Dify names a model provider by its plugin: `langgenius/openai/openai` (organisation, plugin,
provider); files written before plugins existed use the bare `openai`. Tusk names providers by
their entry-point name (`openai`, `anthropic`, or a custom endpoint configured in a workspace).

Imported workflows and model configs keep Dify's ids exactly as written: the mapping happens when
a node or an app runs, through `tusk_provider`. So an export writes back what was imported, and a
change of the mapping (`provider_map`, e.g. sending every `ollama` model to a workspace's custom
endpoint) applies to apps already imported, without editing them.

A DSL file's `dependencies` name Dify plugins (model providers and tools). Tusk installs no
plugins: a model provider plugin is served when its provider maps to a Tusk provider; any other
plugin is reported to the importer (`PluginDependency.provider` is None).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Any

# Dify providers that Tusk serves with another provider: both speak OpenAI's wire protocol, so
# Tusk's `openai` provider (with its `base_url` and `api_version` credentials) covers them.
DEFAULT_ALIASES: Mapping[str, str] = {
    "openai_api_compatible": "openai",
    "azure_openai": "openai",
}

_FULL_ID = re.compile(r"^[a-z0-9_-]+/[a-z0-9_-]+/[a-z0-9_-]+$")
_BARE_ID = re.compile(r"^[a-z0-9_-]+$")


def full_provider_id(provider_id: str) -> str:
    """Dify's long form of a provider id: a bare `openai` means `langgenius/openai/openai`.
    Anything that is neither form comes back unchanged."""
    value = provider_id.strip()
    if _BARE_ID.match(value):
        return f"langgenius/{value}/{value}"
    return value


def tusk_provider(dify_provider_id: str, provider_map: Mapping[str, str] | None = None) -> str:
    """The Tusk provider name for a Dify provider id.

    `provider_map` is consulted first, with the id as written, then its long form, then the
    provider part alone (so `{"ollama": "my-ollama"}` covers `ollama` and
    `langgenius/ollama/ollama`). Otherwise: the last path segment, after DEFAULT_ALIASES.
    An empty id gives an empty name (the caller reports the missing provider)."""
    value = dify_provider_id.strip()
    if not value:
        return ""
    name = value.rsplit("/", 1)[-1]
    if provider_map:
        for key in (value, full_provider_id(value), name):
            if key in provider_map:
                return provider_map[key]
    return DEFAULT_ALIASES.get(name, name)


@dataclass(frozen=True)
class ModelRef:
    """One place where a workflow or a model config names a model."""

    where: str  # e.g. "node 1718 (LLM)" or "model_config.model"
    provider: str  # Dify's provider id, as written
    model: str
    tusk_provider: str


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _pair(config: Any, provider_key: str, model_key: str) -> tuple[str, str] | None:
    if not isinstance(config, Mapping):
        return None
    provider = _text(config.get(provider_key))
    return (provider, _text(config.get(model_key))) if provider else None


def _retrieval_models(data: Mapping[str, Any]) -> Iterator[tuple[str, tuple[str, str] | None]]:
    """The models a knowledge-retrieval node or a chat app's `dataset_configs` names."""
    multiple = data.get("multiple_retrieval_config")
    for scope, config in (("", data), ("multiple_retrieval_config.", multiple)):
        if not isinstance(config, Mapping):
            continue
        yield f"{scope}reranking_model", _pair(config.get("reranking_model"), "provider", "model")
        weights = config.get("weights")
        vector = weights.get("vector_setting") if isinstance(weights, Mapping) else None
        yield (
            f"{scope}weights.vector_setting",
            _pair(vector, "embedding_provider_name", "embedding_model_name"),
        )
    single = data.get("single_retrieval_config")
    if isinstance(single, Mapping):
        yield "single_retrieval_config.model", _pair(single.get("model"), "provider", "name")
    yield "metadata_model_config", _pair(data.get("metadata_model_config"), "provider", "name")


NODE_MODEL_TYPES = frozenset({"llm", "question-classifier", "parameter-extractor"})


def _node_models(data: Mapping[str, Any]) -> Iterator[tuple[str, tuple[str, str] | None]]:
    node_type = data.get("type")
    if node_type in NODE_MODEL_TYPES:
        yield "model", _pair(data.get("model"), "provider", "name")
    elif node_type == "knowledge-retrieval":
        yield from _retrieval_models(data)


def graph_model_refs(
    graph: Mapping[str, Any], provider_map: Mapping[str, str] | None = None
) -> list[ModelRef]:
    """Every model named by the LLM, question-classifier, parameter-extractor and
    knowledge-retrieval (rerank, embedding weights, single-mode and metadata models) nodes."""
    refs: list[ModelRef] = []
    nodes = graph.get("nodes")
    for node in nodes if isinstance(nodes, list) else []:
        data = node.get("data") if isinstance(node, Mapping) else None
        if not isinstance(data, Mapping):
            continue
        where = f"node {node.get('id')} ({data.get('title') or data.get('type')})"
        for path, pair in _node_models(data):
            if pair is not None:
                label = where if path == "model" else f"{where} {path}"
                refs.append(ModelRef(label, pair[0], pair[1], tusk_provider(pair[0], provider_map)))
    return refs


def model_config_refs(
    model_config: Mapping[str, Any], provider_map: Mapping[str, str] | None = None
) -> list[ModelRef]:
    """Every model named by a chat, agent-chat or completion app's `model_config`."""
    found: list[tuple[str, tuple[str, str] | None]] = [
        ("model", _pair(model_config.get("model"), "provider", "name"))
    ]
    datasets = model_config.get("dataset_configs")
    if isinstance(datasets, Mapping):
        rerank = _pair(datasets, "reranking_provider_name", "reranking_model_name")
        nested = datasets.get("reranking_model")
        if isinstance(nested, Mapping):  # {reranking_provider_name, reranking_model_name}
            rerank = _pair(nested, "reranking_provider_name", "reranking_model_name") or rerank
        found.append(("dataset_configs.reranking_model", rerank))
        found.extend(
            (f"dataset_configs.{path}", pair)
            for path, pair in _retrieval_models(datasets)
            if path != "reranking_model"
        )
    return [
        ModelRef(f"model_config.{path}", pair[0], pair[1], tusk_provider(pair[0], provider_map))
        for path, pair in found
        if pair is not None
    ]


# --- plugins -----------------------------------------------------------------------------------

PROVIDER_GROUP = "tusk.providers"
PLUGIN_SOURCES = frozenset({"marketplace", "github", "package"})
_IDENTIFIER_KEYS = (
    "marketplace_plugin_unique_identifier",
    "github_plugin_unique_identifier",
    "plugin_unique_identifier",
)


@cache
def installed_providers() -> frozenset[str]:
    """The names of the Tusk providers installed (entry points, not loaded)."""
    return frozenset(entry.name for entry in entry_points(group=PROVIDER_GROUP))


@dataclass(frozen=True)
class PluginDependency:
    """One entry of a DSL file's `dependencies`."""

    source: str  # marketplace, github or package
    identifier: str  # as written: `langgenius/openai:0.2.8@<checksum>`
    plugin_id: str  # `langgenius/openai`
    version: str  # `0.2.8`, or "" when the identifier has none
    provider: str | None  # the Tusk provider that serves it, or None

    @property
    def label(self) -> str:
        return f"{self.plugin_id} {self.version}".strip()


def split_identifier(identifier: str) -> tuple[str, str]:
    """`langgenius/openai:0.2.8@abc` -> ("langgenius/openai", "0.2.8")."""
    plugin, _, rest = identifier.strip().partition(":")
    return plugin, rest.split("@", 1)[0]


def serving_provider(
    plugin_id: str,
    provider_map: Mapping[str, str] | None = None,
    known: Collection[str] | None = None,
) -> str | None:
    """The Tusk provider standing for a model provider plugin (`langgenius/openai` -> openai),
    or None when the plugin is not one Tusk serves."""
    name = plugin_id.rsplit("/", 1)[-1]
    if not name:
        return None
    mapped = tusk_provider(name, provider_map)
    return mapped if mapped in (installed_providers() if known is None else known) else None


def read_dependency(
    raw: Any,
    provider_map: Mapping[str, str] | None = None,
    known: Collection[str] | None = None,
) -> PluginDependency | None:
    """None when the entry names no plugin (the caller reports it)."""
    value = raw.get("value") if isinstance(raw, Mapping) else None
    if not isinstance(value, Mapping):
        return None
    identifier = next((_text(value.get(k)) for k in _IDENTIFIER_KEYS if _text(value.get(k))), "")
    plugin_id, version = split_identifier(identifier)
    if not plugin_id:
        plugin_id = _text(value.get("repo"))
        version = _text(value.get("version"))
    if not plugin_id:
        return None
    source = _text(raw.get("type"))
    return PluginDependency(
        source=source if source in PLUGIN_SOURCES else "unknown",
        identifier=identifier or plugin_id,
        plugin_id=plugin_id,
        version=version,
        provider=serving_provider(plugin_id, provider_map, known),
    )


def unserved_models(
    refs: Sequence[ModelRef], known: Collection[str] | None = None
) -> dict[str, list[ModelRef]]:
    """The models whose Tusk provider is not among `known` (default: the installed ones), by
    that provider."""
    available = installed_providers() if known is None else known
    found: dict[str, list[ModelRef]] = {}
    for ref in refs:
        if ref.tusk_provider not in available:
            found.setdefault(ref.tusk_provider, []).append(ref)
    return found


def read_plugins(
    raw: Any,
    notes: list[str],
    provider_map: Mapping[str, str] | None,
    known_providers: Collection[str] | None,
) -> tuple[list[dict[str, Any]], list[PluginDependency]]:
    """`dependencies` as written (exported back unchanged), and read."""
    if raw is None:
        return [], []
    if not isinstance(raw, list):
        notes.append("dependencies is not a list; ignored")
        return [], []
    plugins = []
    for index, entry in enumerate(raw):
        plugin = read_dependency(entry, provider_map, known_providers)
        if plugin is None:
            notes.append(f"dependencies[{index}] names no plugin; ignored")
        else:
            plugins.append(plugin)
    return [e for e in raw if isinstance(e, dict)], plugins


MAX_PLACES = 4  # places named in one note; the rest are counted


def _places(refs: Sequence[ModelRef]) -> str:
    places = sorted({ref.where for ref in refs})
    more = len(places) - MAX_PLACES
    return "; ".join(places[:MAX_PLACES]) + (f"; and {more} more" if more > 0 else "")


def _plugin_of(provider_id: str) -> str:
    """`langgenius/gemini/google` -> `langgenius/gemini`."""
    return full_provider_id(provider_id).rsplit("/", 1)[0]


def provider_notes(
    plugins: Sequence[PluginDependency], unserved: Mapping[str, list[ModelRef]]
) -> list[str]:
    """One line per model provider no Tusk provider stands for (naming where its models are
    used), and one per other plugin Tusk does not serve."""
    found = [
        f"models of provider {refs[0].provider} ({_places(refs)}) need a model provider named "
        f"{provider!r} in the workspace (Tusk has no built-in one), or another model"
        for provider, refs in sorted(unserved.items())
    ]
    covered = {_plugin_of(ref.provider) for refs in unserved.values() for ref in refs}
    found += [
        f"depends on the Dify plugin {plugin.label}, which Tusk does not have: what uses it "
        "(tools, agent strategies, models) will not run"
        for plugin in plugins
        if plugin.provider is None and plugin.plugin_id not in covered
    ]
    return found
