"""Retries with jittered exponential backoff that honour Retry-After; never once a stream has
started, since the caller may already have shown its first tokens."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

from tusk.models.errors import ModelError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 2
    base_delay: float = 0.5
    max_delay: float = 30.0


def retry_delay(policy: RetryPolicy, attempt: int, retry_after: float | None, rand: float) -> float:
    """Seconds to wait before retry number `attempt` (1-based); `rand` is uniform in [0, 1)."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), policy.max_delay)
    ceiling = min(policy.max_delay, policy.base_delay * 2.0 ** (attempt - 1))
    return float(ceiling * (0.5 + rand / 2))


async def pause_before_retry(policy: RetryPolicy, attempt: int, error: ModelError) -> None:
    """Wait before retry `attempt`, or re-raise `error` when it is final."""
    if not error.retryable or attempt > policy.max_retries:
        raise error
    delay = retry_delay(policy, attempt, error.retry_after, random.random())  # noqa: S311
    log.info("%s; retry %d in %.2f s", error, attempt, delay)
    await asyncio.sleep(delay)


async def with_retries(call: Callable[[], Awaitable[T]], policy: RetryPolicy) -> T:
    attempt = 0
    while True:
        try:
            return await call()
        except ModelError as error:
            attempt += 1
            await pause_before_retry(policy, attempt, error)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds, or an HTTP date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = lowered.get(name)
        if value is None:
            continue
        try:
            return max(float(value) / divisor, 0.0)
        except ValueError:
            pass
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            continue
        return max((when - datetime.now(UTC)).total_seconds(), 0.0)
    return None
