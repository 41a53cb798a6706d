"""Console tokens: short-lived signed access tokens and rotating refresh tokens.

Access tokens are JWTs signed with SECRET_KEY (HS256), like Dify's console passport. Refresh
tokens are random; only their hash is kept, in the key-value table, for REFRESH_TOKEN_EXPIRE_DAYS.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass

import jwt

from tusk.db import kv
from tusk.db.kv import Db
from tusk.errors import Unauthorized

ISSUER = "tusk"
SUBJECT = "Console API Passport"


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def issue_access_token(account_id: uuid.UUID, secret_key: str, ttl_seconds: int) -> str:
    now = int(time.time())
    claims = {"user_id": str(account_id), "iss": ISSUER, "sub": SUBJECT, "iat": now}
    return jwt.encode({**claims, "exp": now + ttl_seconds}, secret_key, algorithm="HS256")


def read_access_token(token: str, secret_key: str) -> uuid.UUID:
    try:
        claims = jwt.decode(
            token, secret_key, algorithms=["HS256"], issuer=ISSUER, options={"require": ["exp"]}
        )
        if claims.get("sub") != SUBJECT:
            raise jwt.InvalidTokenError("wrong subject")
        return uuid.UUID(str(claims["user_id"]))
    except jwt.ExpiredSignatureError:
        raise Unauthorized("The access token has expired.") from None
    except (jwt.InvalidTokenError, KeyError, ValueError):
        raise Unauthorized("Invalid access token.") from None


def _refresh_key(token: str) -> str:
    return f"refresh_token:{sha256(token)}"


async def issue_pair(
    db: Db, account_id: uuid.UUID, secret_key: str, *, access_ttl: int, refresh_ttl: int
) -> TokenPair:
    refresh = secrets.token_hex(64)
    await kv.put(db, _refresh_key(refresh), str(account_id), ttl=refresh_ttl)
    return TokenPair(issue_access_token(account_id, secret_key, access_ttl), refresh)


async def consume_refresh_token(db: Db, token: str) -> uuid.UUID:
    """The account a refresh token belongs to; the token is spent (refresh tokens rotate)."""
    account_id = await kv.pop(db, _refresh_key(token))
    if account_id is None:
        raise Unauthorized("Invalid or expired refresh token.")
    return uuid.UUID(str(account_id))
