"""The `user` of Service API calls: one row per (app, user string), made on first use."""

from __future__ import annotations

from sqlalchemy import Table, select, union_all
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
    """The end user, made on first use, in one statement (a second only when another
    transaction made it at the same moment and this statement's snapshot cannot see it)."""
    values = {
        "workspace_id": app.workspace_id,
        "app_id": app.id,
        "session_id": session_id,
        "external_user_id": session_id,
        "is_anonymous": session_id == ANONYMOUS,
    }
    table = EndUser.__table__
    assert isinstance(table, Table)
    made = insert(table).values(**values).on_conflict_do_nothing().returning(*table.c).cte()
    stored = select(table).where(EndUser.app_id == app.id, EndUser.session_id == session_id)
    either = union_all(select(made), stored).limit(1)
    found = (await db.execute(select(EndUser).from_statement(either))).scalar_one_or_none()
    if found is None:
        found = (await db.execute(select(EndUser).from_statement(stored))).scalar_one()
    assert isinstance(found, EndUser)
    return found
