"""The model runtime: which model a name means in a workspace, made from that workspace's
credentials (or the deployment's, from the environment), guarded by retries, fallbacks and
usage accounting.

Resolved providers (with their HTTP clients) are cached per workspace; a change of credentials
or defaults is announced on the pub/sub topic `model-config`, so every process drops its copy.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from functools import partial

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tusk.caching import Expiring
from tusk.config import Settings
from tusk.db import pubsub
from tusk.db.kv import Db
from tusk.db.models import DefaultModel
from tusk.models import credentials
from tusk.models.base import ChatModel, EmbeddingModel, Model, Provider, RerankModel, Timeouts
from tusk.models.credentials import StoredProvider
from tusk.models.errors import MissingCredentials, ModelError, UnknownModel
from tusk.models.guarded import CallContext, GuardedChat, GuardedEmbedding, GuardedRerank
from tusk.models.prices import Price, load_prices
from tusk.models.registry import parse_model_name, provider_class
from tusk.models.resilience import RetryPolicy
from tusk.models.types import ModelType
from tusk.models.usage import UsageRecorder

log = logging.getLogger(__name__)

CONFIG_TOPIC = "model-config"
CACHE_SECONDS = 30.0
NO_CREDENTIALS_NEEDED = frozenset({"local"})


@dataclass(frozen=True)
class ModelSettings:
    defaults: dict[ModelType, str | None]
    fallbacks: tuple[str, ...]
    timeouts: Timeouts
    policy: RetryPolicy
    prices: dict[str, Price]
    deployment: dict[str, StoredProvider] = field(default_factory=dict)


def deployment_providers(settings: Settings) -> dict[str, StoredProvider]:
    """Providers configured for every workspace by OPENAI_* and ANTHROPIC_* variables."""
    found: dict[str, StoredProvider] = {}
    if settings.openai_api_key or settings.openai_api_base:
        values = {
            "api_key": settings.openai_api_key.get_secret_value()
            if settings.openai_api_key
            else "",
            "base_url": settings.openai_api_base or "",
        }
        found["openai"] = StoredProvider("openai", "openai", values)
    if settings.anthropic_api_key:
        values = {
            "api_key": settings.anthropic_api_key.get_secret_value(),
            "base_url": settings.anthropic_api_base or "",
        }
        found["anthropic"] = StoredProvider("anthropic", "anthropic", values)
    return found


def model_settings(settings: Settings) -> ModelSettings:
    return ModelSettings(
        defaults={
            "llm": settings.default_chat_model,
            "text-embedding": settings.default_embedding_model,
            "rerank": settings.default_rerank_model,
        },
        fallbacks=tuple(n.strip() for n in settings.chat_fallback_models.split(",") if n.strip()),
        timeouts=Timeouts(settings.model_connect_timeout, settings.model_read_timeout),
        policy=RetryPolicy(max_retries=settings.model_max_retries),
        prices=load_prices(settings.model_prices_file),
        deployment=deployment_providers(settings),
    )


@dataclass
class WorkspaceModels:
    """A workspace's providers (deployment's, overridden by its own) and default models."""

    providers: dict[str, Provider]
    configured: dict[str, StoredProvider]
    defaults: dict[str, str]


async def publish_change(db: Db, workspace_id: uuid.UUID) -> None:
    """Tell every process that this workspace's model configuration changed (at commit)."""
    await pubsub.publish(db, CONFIG_TOPIC, {"workspace_id": str(workspace_id)})


class ModelRuntime:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        secret_key: str,
        config: ModelSettings,
        recorder: UsageRecorder | None = None,
    ) -> None:
        self.sessions = sessions
        self.secret_key = secret_key
        self.config = config
        self.recorder = recorder
        self._cache: Expiring[uuid.UUID, WorkspaceModels] = Expiring(CACHE_SECONDS)
        # The providers last built per workspace, with what they were built from: a reload that
        # finds the same configuration keeps them, with their connections and clients.
        self._built: dict[uuid.UUID, dict[str, tuple[StoredProvider, Provider]]] = {}

    def invalidate(self, workspace_id: uuid.UUID | None = None) -> None:
        if workspace_id is None:
            self._cache.clear()
        else:
            self._cache.drop(workspace_id)

    async def follow_changes(self, broker: pubsub.Broker) -> None:
        """Drop cached configurations when any process announces a change (runs until cancelled)."""
        async with broker.subscribe(CONFIG_TOPIC) as changes:
            async for message in changes:
                with contextlib.suppress(KeyError, ValueError):
                    self.invalidate(uuid.UUID(message["workspace_id"]))

    def build_provider(self, stored: StoredProvider) -> Provider:
        return provider_class(stored.base_provider)(
            stored.credentials,
            instance_name=stored.provider,
            models=stored.models,
            timeouts=self.config.timeouts,
        )

    async def workspace(self, workspace_id: uuid.UUID) -> WorkspaceModels:
        return await self._cache.get_or_load(workspace_id, partial(self._load, workspace_id))

    async def _load(self, workspace_id: uuid.UUID) -> WorkspaceModels:
        async with self.sessions() as db:
            configured = await credentials.load_all(db, self.secret_key, workspace_id)
            rows = await db.execute(
                select(DefaultModel).where(DefaultModel.workspace_id == workspace_id)
            )
            defaults = {row.model_type: row.model for row in rows.scalars()}
        merged = {**self.config.deployment, **configured}
        providers = self._providers(workspace_id, merged)
        return WorkspaceModels(providers, configured, defaults)

    def _providers(
        self, workspace_id: uuid.UUID, merged: dict[str, StoredProvider]
    ) -> dict[str, Provider]:
        before = self._built.get(workspace_id, {})
        built: dict[str, tuple[StoredProvider, Provider]] = {}
        for name, stored in merged.items():
            kept = before.get(name)
            built[name] = (
                kept if kept and kept[0] == stored else (stored, self.build_provider(stored))
            )
        self._built[workspace_id] = built
        return {name: provider for name, (_, provider) in built.items()}

    def default_name(self, models: WorkspaceModels, model_type: ModelType) -> str:
        name = models.defaults.get(model_type) or self.config.defaults.get(model_type)
        if not name:
            raise MissingCredentials(
                model_type,
                f"no default {model_type} model: choose one in the console or set "
                "TUSK_DEFAULT_CHAT_MODEL / TUSK_DEFAULT_RERANK_MODEL",
            )
        return name

    async def provider(self, workspace_id: uuid.UUID, name: str) -> Provider:
        models = await self.workspace(workspace_id)
        if name in models.providers:
            return models.providers[name]
        cls = provider_class(name)
        if name in NO_CREDENTIALS_NEEDED:
            return cls({}, timeouts=self.config.timeouts)
        raise MissingCredentials(
            name,
            f"no credentials for {name}: set them in the console (model providers) "
            "or in the environment (e.g. OPENAI_API_KEY)",
        )

    async def model(
        self, workspace_id: uuid.UUID, model_type: ModelType, name: str | None = None
    ) -> Model:
        """The provider's own model, unguarded; `name` defaults to the workspace's default."""
        full_name = name or self.default_name(await self.workspace(workspace_id), model_type)
        provider_name, model_name = parse_model_name(full_name)
        provider = await self.provider(workspace_id, provider_name)
        declared = [m for m in provider.declared_models if m.type == model_type]
        if declared and model_name not in {m.name for m in declared}:
            names = ", ".join(m.name for m in declared)
            raise UnknownModel(
                full_name, f"{provider_name} declares no such {model_type} model ({names})"
            )
        return provider.create(model_type, model_name)

    def _context(self, workspace_id: uuid.UUID, app_id: uuid.UUID | None) -> CallContext:
        return CallContext(
            workspace_id, app_id, self.recorder, self.config.prices, self.config.policy
        )

    async def chat(
        self,
        workspace_id: uuid.UUID,
        name: str | None = None,
        *,
        app_id: uuid.UUID | None = None,
        fallbacks: tuple[str, ...] | None = None,
    ) -> ChatModel:
        primary = await self.model(workspace_id, "llm", name)
        assert isinstance(primary, ChatModel)
        candidates = [primary]
        for fallback in self.config.fallbacks if fallbacks is None else fallbacks:
            try:
                model = await self.model(workspace_id, "llm", fallback)
            except ModelError as error:
                log.warning("fallback model %s is not usable: %s", fallback, error)
                continue
            if isinstance(model, ChatModel) and model.full_name != primary.full_name:
                candidates.append(model)
        return GuardedChat(candidates, self._context(workspace_id, app_id))

    async def embedding(
        self, workspace_id: uuid.UUID, name: str | None = None, *, app_id: uuid.UUID | None = None
    ) -> EmbeddingModel:
        model = await self.model(workspace_id, "text-embedding", name)
        assert isinstance(model, EmbeddingModel)
        return GuardedEmbedding(model, self._context(workspace_id, app_id))

    async def rerank(
        self, workspace_id: uuid.UUID, name: str | None = None, *, app_id: uuid.UUID | None = None
    ) -> RerankModel:
        model = await self.model(workspace_id, "rerank", name)
        assert isinstance(model, RerankModel)
        return GuardedRerank(model, self._context(workspace_id, app_id))
