"""Helpers for tests of the model runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator

from tusk.models.types import ChatEvent, TextDelta


async def texts_into(received: list[str], events: AsyncIterator[ChatEvent]) -> None:
    """Drain a stream, keeping its text deltas (also when it fails part-way)."""
    async for event in events:
        if isinstance(event, TextDelta):
            received.append(event.text)
