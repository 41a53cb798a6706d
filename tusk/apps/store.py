"""Creating, listing, reading and deleting apps, always within one workspace."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from tusk.db.models import App
from tusk.db.models.apps import APP_MODES
from tusk.db.paging import Page, paginate
from tusk.errors import InvalidParam, NotFound


@dataclass(frozen=True)
class NewApp:
    name: str
    mode: str
    description: str = ""
    icon_type: str | None = None
    icon: str | None = None
    icon_background: str | None = None


def _check(new: NewApp) -> None:
    if new.mode not in APP_MODES:
        raise InvalidParam(f"mode must be one of {', '.join(APP_MODES)}.", params="mode")
    if not 1 <= len(new.name.strip()) <= 255:
        raise InvalidParam("name must be between 1 and 255 characters.", params="name")


async def create_app(
    db: AsyncSession, workspace_id: uuid.UUID, new: NewApp, created_by: uuid.UUID
) -> App:
    _check(new)
    app = App(
        workspace_id=workspace_id,
        name=new.name.strip(),
        mode=new.mode,
        description=new.description,
        icon_type=new.icon_type,
        icon=new.icon,
        icon_background=new.icon_background,
        created_by=created_by,
        updated_by=created_by,
    )
    db.add(app)
    await db.flush()
    await db.refresh(app)
    return app


async def get_app(db: AsyncSession, workspace_id: uuid.UUID, app_id: uuid.UUID) -> App:
    query = select(App).where(App.id == app_id, App.workspace_id == workspace_id)
    app = (await db.execute(query)).scalar_one_or_none()
    if app is None:
        raise NotFound("App not found.")
    return app


async def list_apps(
    db: AsyncSession, workspace_id: uuid.UUID, *, page: int, limit: int, name: str | None = None
) -> Page[App]:
    query = select(App).where(App.workspace_id == workspace_id)
    if name:
        query = query.where(App.name.icontains(name, autoescape=True))
    return await paginate(db, query.order_by(App.created_at.desc(), App.id), page, limit)


async def delete_app(db: AsyncSession, workspace_id: uuid.UUID, app_id: uuid.UUID) -> None:
    query = delete(App).where(App.id == app_id, App.workspace_id == workspace_id)
    if not (await db.execute(query.returning(App.id))).first():
        raise NotFound("App not found.")


@dataclass(frozen=True)
class AppChanges:
    """What the console may change of an app; None leaves a field as it is."""

    name: str | None = None
    description: str | None = None
    icon_type: str | None = None
    icon: str | None = None
    icon_background: str | None = None
    use_icon_as_answer_icon: bool | None = None
    max_active_requests: int | None = None
    finish_in_background: bool | None = None


async def update_app(
    db: AsyncSession, workspace_id: uuid.UUID, app_id: uuid.UUID, changes: AppChanges,
    updated_by: uuid.UUID,
) -> App:  # fmt: skip
    app = await get_app(db, workspace_id, app_id)
    if changes.name is not None:
        _check(NewApp(name=changes.name, mode=app.mode))
        app.name = changes.name.strip()
    if changes.max_active_requests is not None and changes.max_active_requests < 0:
        raise InvalidParam("max_active_requests must be 0 or more.", params="max_active_requests")
    for field in ("description", "icon_type", "icon", "icon_background",
                  "use_icon_as_answer_icon", "max_active_requests",
                  "finish_in_background"):  # fmt: skip
        value = getattr(changes, field)
        if value is not None:
            setattr(app, field, value)
    app.updated_by = updated_by
    await db.flush()
    await db.refresh(app)
    return app
