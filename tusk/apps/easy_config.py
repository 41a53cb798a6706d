"""The `model_config` document of chat and completion apps (Dify's), read into typed parts: the
model, the prompt, the input form, knowledge, and the features that change a generation.

Stored documents are read leniently (unknown keys ignored, `null` taken as "not set"), so that
files written by any Dify version run; the console checks a document strictly before storing it
(`checked_config`)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from tusk.errors import InvalidParam, TuskError
from tusk.workflow.nodes.base import Config
from tusk.workflow.nodes.flow import StartVariable
from tusk.workflow.nodes.models import ModelConfig
from tusk.workflow.nodes.retrieval import Weights

# The keys of Dify's AppModelConfig document; others are dropped when a document is stored.
DOCUMENT_KEYS = (
    "opening_statement",
    "suggested_questions",
    "suggested_questions_after_answer",
    "speech_to_text",
    "text_to_speech",
    "retriever_resource",
    "annotation_reply",
    "more_like_this",
    "sensitive_word_avoidance",
    "external_data_tools",
    "model",
    "user_input_form",
    "dataset_query_variable",
    "pre_prompt",
    "agent_mode",
    "prompt_type",
    "chat_prompt_config",
    "completion_prompt_config",
    "dataset_configs",
    "file_upload",
)
FORM_TYPES = frozenset(
    {"text-input", "paragraph", "select", "number", "checkbox", "file", "file-list", "json_object"}
)
VARIABLE_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,29}$")
MAX_KEYWORDS_CHARS = 10000
MAX_KEYWORD_ROWS = 100
MAX_PRESET_CHARS = 100


class AppUnavailable(TuskError):
    """The app's configuration cannot be run (Dify's `app_unavailable`)."""

    code, status = "app_unavailable", 400


class Lenient(Config):
    """A part of the document: `null` values count as absent."""

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return {key: value for key, value in data.items() if value is not None}
        return data


class Toggle(Lenient):
    enabled: bool = False


class ChatPromptItem(Lenient):
    role: Literal["system", "user", "assistant"] = "user"
    text: str = ""


class ChatPromptConfig(Lenient):
    prompt: list[ChatPromptItem] = Field(default_factory=list)


class CompletionPromptText(Lenient):
    text: str = ""


class HistoriesRole(Lenient):
    user_prefix: str = "Human"
    assistant_prefix: str = "Assistant"


class CompletionPromptConfig(Lenient):
    prompt: CompletionPromptText = CompletionPromptText()
    conversation_histories_role: HistoriesRole = HistoriesRole()


class DatasetRef(Lenient):
    id: str
    enabled: bool = True


class DatasetEntry(Lenient):
    dataset: DatasetRef


class DatasetList(Lenient):
    strategy: str = "router"
    datasets: list[DatasetEntry] = Field(default_factory=list)


class RerankingRef(Lenient):
    reranking_provider_name: str = ""
    reranking_model_name: str = ""


class DatasetConfigs(Lenient):
    retrieval_model: Literal["single", "multiple"] = "single"
    datasets: DatasetList = DatasetList()
    top_k: int = 4
    score_threshold_enabled: bool = False
    score_threshold: float | None = None
    reranking_enabled: bool = True
    reranking_mode: str = "reranking_model"
    reranking_model: RerankingRef | None = None
    weights: Weights | None = None

    def dataset_ids(self) -> list[str]:
        return [e.dataset.id for e in self.datasets.datasets if e.dataset.enabled]


class IoModeration(Lenient):
    enabled: bool = False
    preset_response: str = ""


class KeywordsConfig(Lenient):
    keywords: str = ""
    inputs_config: IoModeration = IoModeration()
    outputs_config: IoModeration = IoModeration()


class SensitiveWords(Lenient):
    enabled: bool = False
    type: str = "keywords"
    config: dict[str, Any] = Field(default_factory=dict)


class EasyConfig(Lenient):
    model: ModelConfig = ModelConfig()
    prompt_type: Literal["simple", "advanced"] = "simple"
    pre_prompt: str = ""
    chat_prompt_config: ChatPromptConfig = ChatPromptConfig()
    completion_prompt_config: CompletionPromptConfig = CompletionPromptConfig()
    user_input_form: list[dict[str, Any]] = Field(default_factory=list)
    dataset_query_variable: str = ""
    dataset_configs: DatasetConfigs = DatasetConfigs()
    retriever_resource: Toggle = Toggle()
    suggested_questions_after_answer: Toggle = Toggle()
    sensitive_word_avoidance: SensitiveWords = SensitiveWords()


def _where(error: ValidationError) -> tuple[str, str]:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "model_config"
    return where, str(first["msg"])


def read_config(document: Mapping[str, Any] | None) -> EasyConfig:
    """A stored document; one that cannot be read makes the app unavailable, saying why."""
    try:
        return EasyConfig.model_validate(dict(document or {}))
    except ValidationError as exc:
        where, problem = _where(exc)
        raise AppUnavailable(f"The app's configuration is broken: {where}: {problem}.") from None


# --- the input form ------------------------------------------------------------------------


def form_entry(entry: Any) -> tuple[str, dict[str, Any]] | None:
    """One item of Dify's old form structure `{"text-input": {...}}` as (type, fields)."""
    if not isinstance(entry, Mapping) or len(entry) != 1:
        return None
    kind, fields = next(iter(entry.items()))
    return (str(kind), dict(fields)) if isinstance(fields, Mapping) else None


def _start_variable(kind: str, fields: dict[str, Any]) -> StartVariable:
    if fields.get("max_length") in ("", 0):
        fields["max_length"] = None
    return StartVariable.model_validate({**fields, "type": kind})


def form_variables(config: EasyConfig) -> list[StartVariable]:
    """The form as Start-node variables, for `check_inputs` (external data tools are skipped:
    Tusk does not call them)."""
    variables = []
    for entry in config.user_input_form:
        parsed = form_entry(entry)
        if parsed is None or parsed[0] not in FORM_TYPES:
            continue
        try:
            variables.append(_start_variable(*parsed))
        except ValidationError as exc:
            where, problem = _where(exc)
            raise AppUnavailable(f"user_input_form: {where}: {problem}.") from None
    return variables


# --- checking a document before it is stored ----------------------------------------------


def _bad(field: str, problem: str) -> InvalidParam:
    return InvalidParam(f"{field} {problem}", params=field)


def _check_model(config: EasyConfig) -> None:
    if not config.model.name.strip():
        raise _bad("model.name", "is required")
    if not config.model.provider.strip():
        raise _bad("model.provider", "is required")


def _check_form(raw: Any) -> None:
    if raw is None:
        return
    if not isinstance(raw, list):
        raise _bad("user_input_form", "must be a list")
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        where = f"user_input_form[{index}]"
        parsed = form_entry(entry)
        if parsed is None:
            raise _bad(where, 'must be one mapping such as {"text-input": {...}}')
        kind, fields = parsed
        if kind == "external_data_tool":
            continue
        if kind not in FORM_TYPES:
            raise _bad(where, f"has an unknown type {kind!r}")
        name = str(fields.get("variable") or "")
        if not VARIABLE_NAME.match(name):
            raise _bad(f"{where}.variable", "must be a name of letters, digits and _")
        if name in seen:
            raise _bad(f"{where}.variable", f"{name!r} is used twice")
        seen.add(name)
        if kind == "select" and not isinstance(fields.get("options", []), list):
            raise _bad(f"{where}.options", "must be a list")
        try:
            _start_variable(kind, dict(fields))
        except ValidationError as exc:
            inner, problem = _where(exc)
            raise _bad(f"{where}.{inner}", f"is invalid: {problem}") from None


def _check_prompt(config: EasyConfig, raw: Mapping[str, Any]) -> None:
    if config.prompt_type != "advanced":
        return
    if config.model.mode == "chat" and not raw.get("chat_prompt_config"):
        raise _bad("chat_prompt_config", "is required when prompt_type is advanced")
    if config.model.mode == "completion" and not config.completion_prompt_config.prompt.text:
        raise _bad("completion_prompt_config.prompt.text", "is required for a completion model")


def _check_datasets(config: EasyConfig) -> None:
    for index, dataset_id in enumerate(config.dataset_configs.dataset_ids()):
        try:
            uuid.UUID(dataset_id)
        except ValueError:
            field = f"dataset_configs.datasets.datasets[{index}].dataset.id"
            raise _bad(field, "must be a dataset id") from None
    if not 1 <= config.dataset_configs.top_k <= 100:
        raise _bad("dataset_configs.top_k", "must be between 1 and 100")


def _check_io(config: KeywordsConfig) -> None:
    sides = {"inputs_config": config.inputs_config, "outputs_config": config.outputs_config}
    if not any(side.enabled for side in sides.values()):
        raise _bad(
            "sensitive_word_avoidance.config",
            "must enable inputs_config or outputs_config (or both)",
        )
    for name, side in sides.items():
        field = f"sensitive_word_avoidance.config.{name}.preset_response"
        if side.enabled and not side.preset_response:
            raise _bad(field, "is required")
        if len(side.preset_response) > MAX_PRESET_CHARS:
            raise _bad(field, f"must be at most {MAX_PRESET_CHARS} characters")


def _check_moderation(config: EasyConfig) -> None:
    moderation = config.sensitive_word_avoidance
    if not moderation.enabled:
        return
    if moderation.type != "keywords":
        raise _bad(
            "sensitive_word_avoidance.type",
            f"{moderation.type!r} is not supported: Tusk moderates with keywords only",
        )
    try:
        keywords = KeywordsConfig.model_validate(moderation.config)
    except ValidationError as exc:
        where, problem = _where(exc)
        raise _bad(f"sensitive_word_avoidance.config.{where}", f"is invalid: {problem}") from None
    field = "sensitive_word_avoidance.config.keywords"
    if not keywords.keywords.strip():
        raise _bad(field, "is required")
    if len(keywords.keywords) > MAX_KEYWORDS_CHARS:
        raise _bad(field, f"must be at most {MAX_KEYWORDS_CHARS} characters")
    if len(keywords.keywords.split("\n")) > MAX_KEYWORD_ROWS:
        raise _bad(field, f"must have at most {MAX_KEYWORD_ROWS} lines")
    _check_io(keywords)


def checked_config(raw: Any) -> dict[str, Any]:
    """A document from the console, checked field by field (400 `invalid_param` naming the
    field), with the keys Dify does not know dropped."""
    if not isinstance(raw, Mapping):
        raise InvalidParam("the model config must be a JSON object", params="model_config")
    try:
        config = EasyConfig.model_validate(dict(raw))
    except ValidationError as exc:
        where, problem = _where(exc)
        raise _bad(where, f"is invalid: {problem}") from None
    _check_model(config)
    _check_form(raw.get("user_input_form"))
    _check_prompt(config, raw)
    _check_datasets(config)
    _check_moderation(config)
    return {key: raw[key] for key in DOCUMENT_KEYS if key in raw}
