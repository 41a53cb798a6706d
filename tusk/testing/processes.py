"""Environments and ports for `tusk` processes started by tests and benchmarks."""

from __future__ import annotations

import os
import socket

# Settings a child must not inherit from the shell it was started from.
SETTING_PREFIXES = ("PG_", "DB_", "TUSK_", "DIFY_", "S3_", "REDIS_", "CELERY_", "STORAGE_")
SETTING_NAMES = ("DATABASE_URL", "SECRET_KEY", "LOG_LEVEL")


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any Tusk or database setting, plus `extra`."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(SETTING_PREFIXES) and name not in SETTING_NAMES
    }
    return {**env, "PYTHONUNBUFFERED": "1", **extra}
