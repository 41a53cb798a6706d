"""The `user` of Service API calls: one row per (app, user string), made on first use."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from tusk.db.models import App, EndUser
from tusk.errors import InvalidParam

ANONYMOUS = "DEFAULT-USER"


def user_param(user: object, *, required: bool = True) -> str:
    """Dify's rule: `user` is a non-empty string, or the anonymous user where it may be absent."""
    if isinstance(user, str) and user.strip():
        return user.strip()[:255]
    if required:
        raise InvalidParam("Arg user must be provided.", params="user")
    return ANONYMOUS


async def end_user(db: AsyncSession, app: App, session_id: str) -> EndUser:
    values = {
        "workspace_id": app.workspace_id,
        "app_id": app.id,
        "session_id": session_id,
        "external_user_id": session_id,
        "is_anonymous": session_id == ANONYMOUS,
    }
    await db.execute(insert(EndUser).values(**values).on_conflict_do_nothing())
    query = select(EndUser).where(EndUser.app_id == app.id, EndUser.session_id == session_id)
    return (await db.execute(query)).scalar_one()
