"""Dify's app DSL: the YAML file an app is exported to and imported from.

`read_dsl` turns a file into an `ImportedApp` (no database: the caller stores it, and encrypts
secret environment variables); `write_dsl` (tusk.workflow.dsl_export) writes one in the layout
Dify exports. Both follow Dify's DSL service: a missing `kind` is `app`, a missing version is
0.1.0, and the status of an import comes from the file's version against CURRENT_DSL_VERSION:

- newer than current, or of an older major version: `pending` (the user confirms, then the
  caller stores the app as read);
- of an older minor version: `completed-with-warnings`;
- otherwise `completed`.

A file that cannot be imported at all (not YAML, not a mapping, too large, another `kind`, no
`app`, a version that is not a string, the mode's section missing, malformed variables, an
unreadable graph) raises DslError: Dify's status `failed`, with a message naming the line or
the field.

What Tusk cannot run is reported, not refused (`ImportedApp.warnings`): nodes of unsupported
types (tool, agent, ...) or with unusable configurations, with their ids, titles and the reason;
Dify plugins Tusk does not serve; models of providers no Tusk provider stands for.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any, Literal

import yaml

from tusk.errors import InvalidParam
from tusk.workflow.graph import GraphError
from tusk.workflow.plan import build_plan
from tusk.workflow.providers import (
    ModelRef,
    PluginDependency,
    graph_model_refs,
    model_config_refs,
    provider_notes,
    read_plugins,
    unserved_models,
)
from tusk.workflow.values import conforms

CURRENT_DSL_VERSION = "0.6.0"  # the version Tusk reads and writes, as Dify's current one
DEFAULT_DSL_VERSION = "0.1.0"  # what a file without a version is taken to be
MAX_DSL_BYTES = 10 * 1024 * 1024
MAX_VALUES = 2_000_000  # values in the parsed document, counting every use of a YAML alias
MAX_DEPTH = 200

WORKFLOW_MODES = frozenset({"workflow", "advanced-chat"})
CONFIG_MODES = frozenset({"chat", "agent-chat", "completion"})
ICON_TYPES = frozenset({"emoji", "image", "link"})
ENV_TYPES = frozenset({"string", "number", "secret"})
CONVERSATION_TYPES = frozenset(
    ["string", "number", "integer", "float", "boolean", "object"]
    + [f"array[{item}]" for item in ("string", "number", "object", "boolean", "any")]
)

FILE_INPUT_TYPES = frozenset({"file", "file-list"})
UPLOAD_ID_KEYS = frozenset({"upload_file_id", "uploadedId"})

Status = Literal["completed", "completed-with-warnings", "pending"]


class DslError(InvalidParam):
    """The file cannot be imported (or an app cannot be exported); the message says why."""


@dataclass(frozen=True)
class AppFields:
    name: str
    mode: str
    icon: str = "🤖"
    icon_type: str = "emoji"
    icon_background: str = "#FFEAD5"
    description: str = ""
    use_icon_as_answer_icon: bool = False
    finish_in_background: bool = False  # Tusk's; written only when set


@dataclass(frozen=True)
class WorkflowFields:
    graph: dict[str, Any]
    features: dict[str, Any] = field(default_factory=dict)
    environment_variables: list[dict[str, Any]] = field(default_factory=list)
    conversation_variables: list[dict[str, Any]] = field(default_factory=list)
    rag_pipeline_variables: list[dict[str, Any]] = field(default_factory=list)  # kept as given


@dataclass(frozen=True)
class NodeIssue:
    """A node Tusk cannot run: an unsupported type or an unusable configuration."""

    node_id: str
    title: str
    type: str
    reason: str

    def __str__(self) -> str:
        return f"node {self.node_id} ({self.title}, {self.type}) cannot run: {self.reason}"

    def as_json(self) -> dict[str, str]:
        return {
            "node_id": self.node_id,
            "title": self.title,
            "type": self.type,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class ImportedApp:
    app: AppFields
    status: Status
    imported_version: str
    workflow: WorkflowFields | None = None  # workflow and advanced-chat apps
    model_config: dict[str, Any] | None = None  # chat, agent-chat and completion apps
    dependencies: list[dict[str, Any]] = field(default_factory=list)  # as written
    plugins: tuple[PluginDependency, ...] = ()  # `dependencies`, read
    version_warning: str | None = None
    unsupported: tuple[NodeIssue, ...] = ()
    models: tuple[ModelRef, ...] = ()
    notes: tuple[str, ...] = ()  # everything else the importer is told

    @property
    def current_version(self) -> str:
        return CURRENT_DSL_VERSION

    @property
    def mode(self) -> str:
        return self.app.mode

    @property
    def warnings(self) -> list[str]:
        """Everything the importer should be told, one line each."""
        found = [self.version_warning] if self.version_warning else []
        return found + [str(issue) for issue in self.unsupported] + list(self.notes)


# --- versions -------------------------------------------------------------------------------

_VERSION = re.compile(
    r"^v?(?P<release>\d+(?:\.\d+)*)"
    r"(?P<pre>[-_.]?(?:a|b|c|rc|alpha|beta|pre|preview)[-_.]?\d*)?"
    r"(?P<post>[-_.]?(?:post|rev|r)[-_.]?\d*)?"
    r"(?P<dev>[-_.]?dev[-_.]?\d*)?"
    r"(?P<local>\+[a-z0-9.]+)?$",
    re.IGNORECASE,
)
Version = tuple[tuple[int, ...], int]


def parse_version(text: str) -> Version:
    """The release numbers (trailing zeros dropped, so 0.6 == 0.6.0) and how a suffix orders it
    against the plain release: -1 for a pre-release or development version, +1 for a post or
    local version, else 0. The part of PEP 440 ordering that matters against a plain release."""
    found = _VERSION.match(text.strip())
    if found is None:
        raise DslError(f"version {text!r} is not a version such as {CURRENT_DSL_VERSION}")
    release = [int(p) for p in found["release"].split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    if found["post"] or found["local"]:
        suffix = 1
    elif found["pre"] or found["dev"]:
        suffix = -1
    else:
        suffix = 0
    return tuple(release), suffix


def _part(version: Version, index: int) -> int:
    return version[0][index] if index < len(version[0]) else 0


def version_status(imported: str, current: str = CURRENT_DSL_VERSION) -> Status:
    """Dify's rule: newer than current, or an older major version -> pending; an older minor
    version -> completed-with-warnings; otherwise completed (a patch difference is fine)."""
    got, now = parse_version(imported), parse_version(current)
    if got > now or _part(got, 0) < _part(now, 0):
        return "pending"
    if _part(got, 1) < _part(now, 1):
        return "completed-with-warnings"
    return "completed"


def _version_warning(imported: str, status: Status) -> str | None:
    if status == "completed":
        return None
    if status == "completed-with-warnings":
        return (
            f"the file is in DSL version {imported}, older than {CURRENT_DSL_VERSION}: "
            "check the app after importing it"
        )
    if parse_version(imported) > parse_version(CURRENT_DSL_VERSION):
        return (
            f"the file is in DSL version {imported}, newer than {CURRENT_DSL_VERSION}, the "
            "newest Tusk reads: confirm the import, then check the app"
        )
    return (
        f"the file is in DSL version {imported}, of an older major version than "
        f"{CURRENT_DSL_VERSION}: confirm the import, then check the app"
    )


# --- loading YAML ----------------------------------------------------------------------------

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # same constructors, in C


def _plain(value: Any, budget: list[int], depth: int = 0) -> Any:
    """A copy made of JSON types only (graphs are stored as JSON): YAML dates become ISO
    strings, keys become strings, NaN and infinities become null. The walk is bounded, so a
    small file that expands into a huge structure through aliases is refused."""
    budget[0] -= 1
    if budget[0] < 0 or depth > MAX_DEPTH:
        raise DslError("the file expands into too large or too deeply nested a structure")
    if isinstance(value, dict):
        return {_key(k): _plain(v, budget, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_plain(v, budget, depth + 1) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        raise DslError("binary (!!binary) values are not allowed in a DSL file")
    return value


def _key(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    return key.isoformat() if isinstance(key, datetime | date | time) else str(key)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """`line 3, column 7: mapping values are not allowed here` (1-based, as editors count)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is None:
        return str(problem)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def load_yaml(text: str) -> dict[str, Any]:
    """The document as a mapping of JSON types; DslError for anything else."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_DSL_BYTES:
        raise DslError(f"the file is larger than the limit of {MAX_DSL_BYTES // 2**20} MiB")
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        raise DslError(f"the file is not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise DslError("the file is too deeply nested") from None
    if not isinstance(data, dict):
        found = "empty" if data is None else f"a {type(data).__name__}"
        raise DslError(
            f"the file must be a YAML mapping (version, kind, app, ...), but it is {found}"
        )
    plain: dict[str, Any] = _plain(data, [MAX_VALUES])
    return plain


# --- reading the parts -----------------------------------------------------------------------


def _str(value: Any, default: str = "") -> str:
    return default if value is None else str(value)


def read_app(data: Mapping[str, Any]) -> AppFields:
    raw = data.get("app")
    if not raw:
        raise DslError("the file has no app section (app: {name, mode, ...})")
    if not isinstance(raw, Mapping):
        raise DslError("app must be a mapping (name, mode, icon, ...)")
    mode = raw.get("mode")
    if not mode:
        raise DslError("app.mode is missing")
    if mode not in WORKFLOW_MODES | CONFIG_MODES:
        modes = ", ".join(sorted(WORKFLOW_MODES | CONFIG_MODES))
        raise DslError(f"app.mode {mode!r} is not an app mode (one of {modes})")
    icon_type = raw.get("icon_type")
    return AppFields(
        name=_str(raw.get("name")),
        mode=str(mode),
        icon=_str(raw.get("icon")),
        icon_type=icon_type if icon_type in ICON_TYPES else "emoji",
        icon_background=_str(raw.get("icon_background"), "#FFFFFF"),
        description=_str(raw.get("description")),
        use_icon_as_answer_icon=raw.get("use_icon_as_answer_icon") is True,
        finish_in_background=raw.get("finish_in_background") is True,
    )


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return int(number) if number.is_integer() and "." not in value else number
    return None


def _variable_head(raw: Any, kind: str, index: int, types: frozenset[str]) -> tuple[str, str]:
    if not isinstance(raw, Mapping):
        raise DslError(f"{kind} variable {index} must be a mapping (name, value_type, value)")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise DslError(f"{kind} variable {index} has no name")
    value_type = raw.get("value_type")
    if value_type not in types:
        allowed = ", ".join(sorted(types))
        raise DslError(f"{kind} variable {name!r}: value_type must be one of {allowed}")
    return name, str(value_type)


def read_environment_variable(raw: Any, index: int) -> dict[str, Any]:
    """{id, name, value_type, value, description, selector}; a secret stays as given (the
    caller encrypts it)."""
    name, value_type = _variable_head(raw, "environment", index, ENV_TYPES)
    value = raw.get("value")
    if value_type == "number":
        value = _number(value)
        if value is None:
            raise DslError(f"environment variable {name!r}: the value must be a number")
    elif value is None:
        value = ""
    elif not isinstance(value, str):
        raise DslError(f"environment variable {name!r}: the value must be a string")
    return _variable(raw, name, value_type, value, "env")


def read_conversation_variable(raw: Any, index: int) -> dict[str, Any]:
    name, value_type = _variable_head(raw, "conversation", index, CONVERSATION_TYPES)
    value = raw.get("value")
    if value is None:
        value = [] if value_type.startswith("array") else None
    elif not conforms(value, value_type):
        raise DslError(f"conversation variable {name!r}: the value is not a {value_type}")
    return _variable(raw, name, value_type, value, "conversation")


def _variable(
    raw: Mapping[str, Any], name: str, value_type: str, value: Any, scope: str
) -> dict[str, Any]:
    return {
        "id": _str(raw.get("id")) or str(uuid.uuid4()),
        "name": name,
        "value_type": value_type,
        "value": value,
        "description": _str(raw.get("description")),
        "selector": [scope, name],
    }


def _variables(raw: Any, kind: str, read: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise DslError(f"workflow.{kind}_variables must be a list")
    found: list[dict[str, Any]] = [read(item, i) for i, item in enumerate(raw)]
    names = [v["name"] for v in found]
    for name in names:
        if names.count(name) > 1:
            raise DslError(f"two {kind} variables are named {name!r}")
    return found


def _uuid(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        return None


def fix_dataset_ids(graph: dict[str, Any], notes: list[str]) -> None:
    """Knowledge-retrieval `dataset_ids`: plain UUIDs are kept (in canonical form). Dify may
    export them encrypted with a key derived from the exporting workspace's id, which Tusk cannot
    know, so any other value is dropped with a note; the user picks the knowledge bases again."""
    for node in graph.get("nodes") or []:
        data = node.get("data") if isinstance(node, dict) else None
        if not isinstance(data, dict) or data.get("type") != "knowledge-retrieval":
            continue
        if "dataset_ids" not in data:
            continue
        raw = data["dataset_ids"]
        values = raw if isinstance(raw, list) else [] if raw is None else [raw]
        kept = [u for u in map(_uuid, values) if u is not None]
        if len(kept) < len(values):
            notes.append(
                f"node {node.get('id')} ({data.get('title') or 'knowledge retrieval'}): "
                f"{len(values) - len(kept)} knowledge base id(s) dropped (encrypted by the "
                "exporting Dify workspace, or not ids); choose the knowledge bases again"
            )
        data["dataset_ids"] = kept


def fix_config_datasets(model_config: dict[str, Any], notes: list[str]) -> None:
    """The same rule for a chat app's `dataset_configs.datasets.datasets[].dataset.id`."""
    configs = model_config.get("dataset_configs")
    outer = configs.get("datasets") if isinstance(configs, dict) else None
    entries = outer.get("datasets") if isinstance(outer, dict) else None
    if not isinstance(entries, list) or outer is None:
        return
    kept = []
    for entry in entries:
        dataset = entry.get("dataset") if isinstance(entry, dict) else None
        dataset_id = _uuid(dataset.get("id")) if isinstance(dataset, dict) else None
        if dataset_id is not None and isinstance(dataset, dict):
            dataset["id"] = dataset_id
            kept.append(entry)
    if len(kept) < len(entries):
        notes.append(
            f"model_config.dataset_configs: {len(entries) - len(kept)} knowledge base(s) "
            "without a valid id dropped; choose the knowledge bases again"
        )
    outer["datasets"] = kept


def node_issues(graph: Mapping[str, Any], mode: str) -> list[NodeIssue]:
    try:
        plan = build_plan(graph, "chat" if mode == "advanced-chat" else "workflow")
    except GraphError as exc:
        raise DslError(f"workflow.graph cannot be read: {exc}") from None
    nodes = plan.workflow.nodes
    return [NodeIssue(p.node_id, p.title, nodes[p.node_id].type, p.message) for p in plan.problems]


def _list_of_mappings(raw: Any, where: str) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise DslError(f"{where} must be a list of mappings")
    return raw


def read_workflow(data: Mapping[str, Any], notes: list[str]) -> WorkflowFields:
    raw = data.get("workflow")
    if not raw or not isinstance(raw, dict):
        raise DslError("a workflow or advanced-chat app needs a workflow section (graph, ...)")
    graph = raw.get("graph")
    if graph is None:
        graph = {"nodes": [], "edges": []}
    if not isinstance(graph, dict):
        raise DslError("workflow.graph must be a mapping (nodes, edges, viewport)")
    features = raw.get("features")
    if features is not None and not isinstance(features, dict):
        raise DslError("workflow.features must be a mapping")
    fix_dataset_ids(graph, notes)
    return WorkflowFields(
        graph=graph,
        features=features or {},
        environment_variables=_variables(
            raw.get("environment_variables"), "environment", read_environment_variable
        ),
        conversation_variables=_variables(
            raw.get("conversation_variables"), "conversation", read_conversation_variable
        ),
        rag_pipeline_variables=_list_of_mappings(
            raw.get("rag_pipeline_variables"), "workflow.rag_pipeline_variables"
        ),
    )


def read_model_config(data: Mapping[str, Any], notes: list[str]) -> dict[str, Any]:
    raw = data.get("model_config")
    if not raw or not isinstance(raw, dict):
        raise DslError("a chat, agent-chat or completion app needs a model_config section")
    fix_config_datasets(raw, notes)
    return raw


def _version(data: Mapping[str, Any]) -> str:
    version = data.get("version") or DEFAULT_DSL_VERSION
    if not isinstance(version, str):
        raise DslError(
            f"version must be a string such as '{CURRENT_DSL_VERSION}' (in quotes), "
            f"not the {type(version).__name__} {version!r}"
        )
    return version


def _check_kind(data: Mapping[str, Any]) -> None:
    kind = data.get("kind") or "app"
    if kind != "app":
        raise DslError(f"kind is {kind!r}: only app DSL files (kind: app) can be imported")


def read_dsl(
    text: str,
    *,
    provider_map: Mapping[str, str] | None = None,
    known_providers: Collection[str] | None = None,
) -> ImportedApp:
    """Parse a DSL file. Raises DslError when it cannot be imported at all; everything Tusk can
    store but not run is in the result's `warnings`. `provider_map` sends Dify provider names to
    Tusk providers (see providers.tusk_provider); `known_providers` are the Tusk providers the
    importing workspace has (default: the installed ones)."""
    data = load_yaml(text)
    _check_kind(data)
    version = _version(data)
    status = version_status(version)
    app = read_app(data)
    notes: list[str] = []
    dependencies, plugins = read_plugins(
        data.get("dependencies"), notes, provider_map, known_providers
    )
    workflow, model_config, issues = None, None, []
    if app.mode in WORKFLOW_MODES:
        workflow = read_workflow(data, notes)
        issues = node_issues(workflow.graph, app.mode)
        models = graph_model_refs(workflow.graph, provider_map)
    else:
        model_config = read_model_config(data, notes)
        models = model_config_refs(model_config, provider_map)
    notes += provider_notes(plugins, unserved_models(models, known_providers))
    return ImportedApp(
        app=app,
        status=status,
        imported_version=version,
        workflow=workflow,
        model_config=model_config,
        dependencies=dependencies,
        plugins=tuple(plugins),
        version_warning=_version_warning(version, status),
        unsupported=tuple(issues),
        models=tuple(models),
        notes=tuple(notes),
    )
