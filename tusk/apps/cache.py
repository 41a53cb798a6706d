"""Per-process copies of what every Service API request reads and almost never changes: the app
an `app-` key stands for, the end user of a (app, user) pair, an app's model config document
and its annotation reply setting. Each request would otherwise spend a transaction on each.

Entries expire after a few seconds. Sooner than that, a change is announced by the database
itself: triggers on `apps`, `api_keys` and `app_annotation_settings` (migration 0013) send an
`app-changed` notification through the pub/sub channel when their rows change, whoever changes
them, and every process drops what it holds of that app as the notification arrives
(milliseconds after the commit). The process that commits such a change forgets at once, before
its notification comes back (`watch_writes`), so that a client revoking a key or changing an
app sees the change in its next request. The expiry bounds how long a lost notification (the
listening connection was down) can leave a stale entry.

Model config rows and end users are never changed once written (a new config is a new row), so
they are kept by id until pushed out by newer ones."""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from tusk.accounts import api_keys
from tusk.accounts.tokens import sha256
from tusk.apps.annotations import ReplyMatch, reply_match_of, setting_of
from tusk.apps.easy_config import EasyConfig, read_config
from tusk.apps.end_users import end_user
from tusk.caching import Expiring
from tusk.db.models import App, AppModelConfig
from tusk.db.pubsub import Broker

# The writes that change what is cached by app (the triggers of migration 0013 watch the same).
WATCHED_WRITES = re.compile(
    r"\s*(UPDATE apps\b|DELETE FROM (apps|api_keys)\b"
    r"|(INSERT INTO|UPDATE|DELETE FROM) app_annotation_settings\b)",
    re.IGNORECASE,
)
_CHANGED = "tusk.app_changed"
TOPIC = "app-changed"  # the triggers of migration 0013 send it; data: {"app_id": "..."}
TTL_SECONDS = 5.0

Sessions = async_sessionmaker[AsyncSession]


@dataclass(frozen=True)
class _NoReply:
    pass


NO_REPLY: Any = _NoReply()  # cached "the reply is off", told apart from "not cached"


def _app_of_its_key(found: tuple[App | None, uuid.UUID]) -> bool:
    """Keep a key's app only if it exists and is in the key's workspace."""
    app, workspace_id = found
    return app is not None and app.workspace_id == workspace_id


class AppCache:
    """One process's cache; `follow_changes` keeps it in step with the other processes."""

    def __init__(self, ttl: float = TTL_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.apps_by_key: Expiring[str, tuple[App | None, uuid.UUID]] = Expiring(ttl, clock=clock)
        self.replies: Expiring[uuid.UUID, ReplyMatch | _NoReply] = Expiring(ttl, clock=clock)
        self.end_users: Expiring[tuple[uuid.UUID, str], uuid.UUID] = Expiring(None)
        self.configs: Expiring[uuid.UUID, AppModelConfig] = Expiring(None, size=1000)
        self.easy_configs: Expiring[uuid.UUID, EasyConfig] = Expiring(None, size=1000)

    # --- reading through -------------------------------------------------------------------

    async def app_for_key(self, sessions: Sessions, token: str) -> tuple[App | None, uuid.UUID]:
        """The app of an `app-` key (None when it no longer exists) and the key's workspace;
        an unknown key raises Unauthorized, and is not remembered."""

        async def load() -> tuple[App | None, uuid.UUID]:
            async with sessions.begin() as db:
                key = await api_keys.resolve_key(db, token, "app")
                app = await db.get(App, key.app_id) if key.app_id else None
                if app is not None:
                    db.expunge(app)
            return app, key.workspace_id

        return await self.apps_by_key.get_or_load(sha256(token), load, keep=_app_of_its_key)

    async def end_user_id(self, sessions: Sessions, app: App, session_id: str) -> uuid.UUID:
        async def load() -> uuid.UUID:
            async with sessions.begin() as db:
                return (await end_user(db, app, session_id)).id

        return await self.end_users.get_or_load((app.id, session_id), load)

    async def model_config(self, db: AsyncSession, config_id: uuid.UUID) -> AppModelConfig | None:
        """A stored model config (rows are never changed: a new config is a new row)."""
        found = self.configs.get(config_id)
        if found is None:
            found = await db.get(AppModelConfig, config_id)
            if found is not None:
                db.expunge(found)  # kept as loaded, whatever becomes of this transaction
                self.configs.put(config_id, found)
        return found

    def easy_config(self, config_id: uuid.UUID, document: dict[str, Any]) -> EasyConfig:
        """A stored model config document, read (it is never changed: a new config is a new
        row). Reading it took a fifth of a chat request's handling."""
        found = self.easy_configs.get(config_id)
        if found is None:
            found = self.easy_configs.put(config_id, read_config(document))
        return found

    async def reply_match(self, sessions: Sessions, app: App) -> ReplyMatch | None:
        async def load() -> ReplyMatch | _NoReply:
            async with sessions() as db:
                return reply_match_of(await setting_of(db, app)) or NO_REPLY

        found = await self.replies.get_or_load(app.id, load)
        return found if isinstance(found, ReplyMatch) else None

    # --- keeping in step -------------------------------------------------------------------

    def forget_app(self, app_id: uuid.UUID) -> None:
        self.apps_by_key.drop_where(lambda _, found: found[0] is not None and found[0].id == app_id)
        self.replies.drop(app_id)
        self.end_users.drop_where(lambda key, _: key[0] == app_id)

    def clear(self) -> None:
        for part in (self.apps_by_key, self.replies, self.end_users, self.configs):
            part.clear()
        self.easy_configs.clear()

    def watch_writes(self, engine: AsyncEngine) -> None:
        """Forget every app as soon as this process commits a change to one: the notification
        of that change reaches this process a little later, and the next request may come first.
        (Such changes are rare: forgetting them all is cheaper than telling them apart.)"""
        sync = engine.sync_engine

        def noted(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
            if WATCHED_WRITES.match(statement):
                conn.info[_CHANGED] = True

        def committed(conn: Any) -> None:
            if conn.info.pop(_CHANGED, False):
                self.apps_by_key.clear()
                self.replies.clear()

        event.listen(sync, "after_cursor_execute", noted)
        event.listen(sync, "commit", committed)
        event.listen(sync, "rollback", lambda conn: conn.info.pop(_CHANGED, None))

    async def follow_changes(self, broker: Broker) -> None:
        """Forget an app when any process's database change announces it (until cancelled)."""
        async with broker.subscribe(TOPIC) as changes:
            self.clear()  # whatever changed before we listened
            async for message in changes:
                with contextlib.suppress(KeyError, ValueError, TypeError):
                    self.forget_app(uuid.UUID(message["app_id"]))
