"""What workspace admins do with models: providers and their credentials (validated by a real
call before they are kept), custom OpenAI-compatible endpoints, and default models."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from tusk.db.models import DefaultModel
from tusk.errors import InvalidParam, NotFound
from tusk.models import credentials
from tusk.models.base import Provider
from tusk.models.credentials import StoredProvider
from tusk.models.errors import ModelError
from tusk.models.registry import provider_class, provider_classes
from tusk.models.runtime import NO_CREDENTIALS_NEEDED, ModelRuntime, publish_change
from tusk.models.types import MODEL_TYPES, ModelInfo, ModelType

CUSTOM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class ProviderView:
    name: str
    base_provider: str
    label: str
    model_types: tuple[ModelType, ...]
    fields: list[dict[str, Any]]
    source: str | None  # "workspace", "deployment", or None (not configured)
    credentials: dict[str, str]  # masked
    models: list[ModelInfo]

    def as_json(self) -> dict[str, Any]:
        return {
            "provider": self.name,
            "base_provider": self.base_provider,
            "label": self.label,
            "supported_model_types": list(self.model_types),
            "credential_fields": self.fields,
            "configured": self.source is not None,
            "source": self.source,
            "credentials": self.credentials,
            "models": [model_json(m) for m in self.models],
        }


def model_json(model: ModelInfo) -> dict[str, Any]:
    return {
        "model": model.name,
        "model_type": model.type,
        "context_window": model.context_window,
        "dimensions": model.dimensions,
    }


def _view(provider: Provider, source: str | None) -> ProviderView:
    cls = type(provider)
    return ProviderView(
        name=provider.instance_name,
        base_provider=cls.name,
        label=cls.label if provider.instance_name == cls.name else provider.instance_name,
        model_types=cls.model_types,
        fields=[asdict(f) for f in cls.credential_fields],
        source=source,
        credentials=credentials.masked(provider.credentials, cls.credential_fields),
        models=provider.models(),
    )


async def list_providers(runtime: ModelRuntime, workspace_id: uuid.UUID) -> list[ProviderView]:
    """Every built-in provider, configured or not, then the workspace's custom endpoints."""
    models = await runtime.workspace(workspace_id)
    views: list[ProviderView] = []
    for name, cls in sorted(provider_classes().items()):
        if name in models.providers:
            origin = "workspace" if name in models.configured else "deployment"
            views.append(_view(models.providers[name], origin))
        else:
            built_in = "built-in" if name in NO_CREDENTIALS_NEEDED else None
            views.append(_view(cls({}, timeouts=runtime.config.timeouts), built_in))
    for name, provider in sorted(models.providers.items()):
        if name not in provider_classes():
            views.append(_view(provider, "workspace"))
    return views


def clean_credentials(cls: type[Provider], values: Mapping[str, Any]) -> dict[str, str]:
    known = {f.name: f for f in cls.credential_fields}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise InvalidParam(f"unknown credential fields: {', '.join(unknown)}", params="credentials")
    cleaned = {k: str(v).strip() for k, v in values.items() if v is not None and str(v).strip()}
    missing = [f.name for f in cls.credential_fields if f.required and f.name not in cleaned]
    if missing:
        raise InvalidParam(f"missing credential fields: {', '.join(missing)}", params="credentials")
    return cleaned


async def check(runtime: ModelRuntime, stored: StoredProvider) -> None:
    """A real, minimal call with these credentials; raises with the provider's own words."""
    try:
        await runtime.build_provider(stored).validate()
    except ModelError as error:
        raise InvalidParam(
            f"the credentials do not work: {error.detail}", params="credentials"
        ) from None


async def set_credentials(
    db: AsyncSession,
    runtime: ModelRuntime,
    workspace_id: uuid.UUID,
    provider: str,
    values: Mapping[str, Any],
) -> None:
    cls = provider_class(provider)
    stored = StoredProvider(provider, provider, clean_credentials(cls, values))
    await check(runtime, stored)
    await credentials.save(db, runtime.secret_key, workspace_id, stored)
    await _changed(db, runtime, workspace_id)


async def validate_credentials(
    runtime: ModelRuntime, provider: str, values: Mapping[str, Any]
) -> str | None:
    """None if the credentials work, else why not."""
    cls = provider_class(provider)
    try:
        await check(runtime, StoredProvider(provider, provider, clean_credentials(cls, values)))
    except InvalidParam as error:
        return error.message
    return None


async def remove_credentials(
    db: AsyncSession, runtime: ModelRuntime, workspace_id: uuid.UUID, provider: str
) -> None:
    if not await credentials.remove(db, workspace_id, provider):
        raise NotFound(f"no credentials for {provider} in this workspace")
    await _changed(db, runtime, workspace_id)


@dataclass(frozen=True)
class CustomEndpoint:
    name: str
    base_url: str
    api_key: str = ""
    models: Sequence[Mapping[str, str]] = ()


def _custom_models(raw: Sequence[Mapping[str, str]]) -> list[ModelInfo]:
    if not raw:
        raise InvalidParam("declare at least one model", params="models")
    infos: list[ModelInfo] = []
    for entry in raw:
        model_type = entry.get("model_type", "llm")
        if model_type not in MODEL_TYPES or not entry.get("model"):
            raise InvalidParam(
                f"each model needs a name and a type among {', '.join(MODEL_TYPES)}",
                params="models",
            )
        infos.append(ModelInfo(entry["model"], model_type))
    return infos


async def add_custom_endpoint(
    db: AsyncSession, runtime: ModelRuntime, workspace_id: uuid.UUID, endpoint: CustomEndpoint
) -> None:
    """An OpenAI-compatible server under a name of its own, with the models it serves."""
    if not CUSTOM_NAME.match(endpoint.name) or endpoint.name in provider_classes():
        raise InvalidParam(
            "the name must be lower-case letters, digits, - or _, and not a built-in provider's",
            params="name",
        )
    values = clean_credentials(
        provider_class("openai"), {"base_url": endpoint.base_url, "api_key": endpoint.api_key}
    )
    if "base_url" not in values:
        raise InvalidParam("base_url is required", params="base_url")
    stored = StoredProvider(endpoint.name, "openai", values, _custom_models(endpoint.models))
    await check(runtime, stored)
    await credentials.save(db, runtime.secret_key, workspace_id, stored)
    await _changed(db, runtime, workspace_id)


async def set_default_model(
    db: AsyncSession,
    runtime: ModelRuntime,
    workspace_id: uuid.UUID,
    model_type: ModelType,
    full_name: str,
) -> None:
    await runtime.model(workspace_id, model_type, full_name)  # it must resolve now
    statement = insert(DefaultModel).values(
        workspace_id=workspace_id, model_type=model_type, model=full_name
    )
    await db.execute(
        statement.on_conflict_do_update(
            index_elements=["workspace_id", "model_type"], set_={"model": full_name}
        )
    )
    await _changed(db, runtime, workspace_id)


async def default_model(
    runtime: ModelRuntime, workspace_id: uuid.UUID, model_type: ModelType
) -> str | None:
    models = await runtime.workspace(workspace_id)
    return models.defaults.get(model_type) or runtime.config.defaults.get(model_type)


async def _changed(db: AsyncSession, runtime: ModelRuntime, workspace_id: uuid.UUID) -> None:
    await publish_change(db, workspace_id)
    runtime.invalidate(workspace_id)
