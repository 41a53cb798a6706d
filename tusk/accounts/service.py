"""First-run setup, login and the identity behind a console request."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from tusk import __version__
from tusk.accounts import tokens
from tusk.accounts.passwords import check_password_rule, hash_password, verify_password
from tusk.db import kv
from tusk.db.models import Account, Membership, Setup, Workspace
from tusk.errors import (
    AlreadySetup,
    AuthenticationFailed,
    Forbidden,
    InvalidParam,
    LoginLocked,
    NotSetup,
    Unauthorized,
)

EDITING_ROLES = frozenset({"owner", "admin", "editor"})
ADMIN_ROLES = frozenset({"owner", "admin"})
MAX_FAILED_LOGINS = 5
FAILED_LOGIN_WINDOW_SECONDS = 3600


@dataclass(frozen=True)
class TokenSettings:
    secret_key: str
    access_ttl: int
    refresh_ttl: int


@dataclass(frozen=True)
class ConsoleUser:
    """An account acting in its current workspace, with its role there."""

    account: Account
    workspace_id: uuid.UUID
    role: str

    def require_editor(self) -> None:
        if self.role not in EDITING_ROLES:
            raise Forbidden("Your role in this workspace does not allow this action.")

    def require_admin(self) -> None:
        if self.role not in ADMIN_ROLES:
            raise Forbidden("Only the workspace's owner and admins may do this.")


def normalize_email(email: str) -> str:
    try:
        return validate_email(email.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        raise InvalidParam(f"{email!r} is not a valid email address.", params="email") from None


def check_name(name: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= 30:
        raise InvalidParam("Name must be between 1 and 30 characters.", params="name")
    return name


async def is_setup(db: AsyncSession) -> Setup | None:
    return await db.get(Setup, 1)


async def create_account_with_workspace(
    db: AsyncSession, *, email: str, name: str, password: str, workspace_name: str | None = None
) -> ConsoleUser:
    """An account that owns a new workspace of its own."""
    check_password_rule(password)
    password_hash = await asyncio.to_thread(hash_password, password)
    account = Account(
        email=normalize_email(email), name=check_name(name), password_hash=password_hash
    )
    workspace = Workspace(name=workspace_name or f"{account.name}'s Workspace")
    db.add_all([account, workspace])
    try:
        await db.flush()
    except IntegrityError:
        raise InvalidParam("An account with this email already exists.", params="email") from None
    db.add(Membership(workspace_id=workspace.id, account_id=account.id, role="owner", current=True))
    await db.flush()
    return ConsoleUser(account, workspace.id, "owner")


async def setup(db: AsyncSession, *, email: str, name: str, password: str) -> ConsoleUser:
    """Create the first admin and workspace; refused once done, even by concurrent calls."""
    await db.execute(text("LOCK TABLE setup IN EXCLUSIVE MODE"))
    if await is_setup(db) is not None:
        raise AlreadySetup("Tusk has already been set up. Log in instead.")
    user = await create_account_with_workspace(db, email=email, name=name, password=password)
    db.add(Setup(id=1, version=__version__))
    await db.flush()
    return user


def _login_failures_key(email: str) -> str:
    return f"login_error_rate_limit:{email}"


async def login(
    sessions: async_sessionmaker[AsyncSession],
    *,
    email: str,
    password: str,
    ip: str | None,
    settings: TokenSettings,
) -> tokens.TokenPair:
    """Tokens for a right password. A wrong one is counted (in its own committed transaction),
    and after MAX_FAILED_LOGINS the email is locked out for FAILED_LOGIN_WINDOW_SECONDS."""
    email = normalize_email(email)
    async with sessions.begin() as db:
        if await is_setup(db) is None:
            raise NotSetup("Tusk is not set up yet: run `tusk setup` or POST /console/api/setup.")
        if (await kv.get(db, _login_failures_key(email)) or 0) >= MAX_FAILED_LOGINS:
            raise LoginLocked("Too many incorrect password attempts. Please try again later.")
        query = select(Account).where(Account.email == email)
        account = (await db.execute(query)).scalar_one_or_none()
        stored_hash = account.password_hash if account else None
        if account is None or not await asyncio.to_thread(verify_password, password, stored_hash):
            await kv.incr(db, _login_failures_key(email), ttl=FAILED_LOGIN_WINDOW_SECONDS)
            pair = None
        else:
            pair = await _accept_login(db, account, ip, settings)
    if pair is None:
        raise AuthenticationFailed("Invalid email or password.")
    return pair


async def _accept_login(
    db: AsyncSession, account: Account, ip: str | None, settings: TokenSettings
) -> tokens.TokenPair:
    if account.status != "active":
        raise Forbidden("This account is not active.")
    await kv.delete(db, _login_failures_key(account.email))
    account.last_login_ip = ip
    account.last_login_at = datetime.now(UTC)
    return await _issue(db, account.id, settings)


async def _issue(
    db: AsyncSession, account_id: uuid.UUID, settings: TokenSettings
) -> tokens.TokenPair:
    return await tokens.issue_pair(
        db,
        account_id,
        settings.secret_key,
        access_ttl=settings.access_ttl,
        refresh_ttl=settings.refresh_ttl,
    )


async def refresh(
    db: AsyncSession, refresh_token: str, settings: TokenSettings
) -> tokens.TokenPair:
    account_id = await tokens.consume_refresh_token(db, refresh_token)
    account = await db.get(Account, account_id)
    if account is None or account.status != "active":
        raise Unauthorized("Invalid or expired refresh token.")
    return await _issue(db, account.id, settings)


async def console_user(db: AsyncSession, access_token: str, secret_key: str) -> ConsoleUser:
    """The account behind a console access token, in its current workspace."""
    account_id = tokens.read_access_token(access_token, secret_key)
    row = (
        await db.execute(
            select(Account, Membership)
            .join(Membership, Membership.account_id == Account.id)
            .where(Account.id == account_id)
            .order_by(Membership.current.desc(), Membership.created_at)
            .limit(1)
        )
    ).first()
    if row is None:
        raise Unauthorized("Invalid access token.")
    account, membership = row
    if account.status != "active":
        raise Unauthorized("This account is not active.")
    return ConsoleUser(account, membership.workspace_id, membership.role)
