"""Password hashing (argon2) and the password rule of Dify's console."""

from __future__ import annotations

import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from tusk.errors import InvalidParam

_hasher = PasswordHasher()
_RULE = re.compile(r"^(?=.*[a-zA-Z])(?=.*\d).{8,}$")
# Verifying against this keeps the time of a login for an unknown email like that of a known one.
_DUMMY_HASH = _hasher.hash("not-a-real-password-1")


def check_password_rule(password: str) -> None:
    if not _RULE.match(password):
        raise InvalidParam(
            "Password must contain letters and numbers, and be at least 8 characters long.",
            params="password",
        )


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str | None) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False
