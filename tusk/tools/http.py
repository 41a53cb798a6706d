"""Outbound HTTP of tools, always through the SSRF guard: read a response up to a size, and keep
what was read when it is over (a tool result says it was cut; it does not fail)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from tusk.errors import TuskError
from tusk.net.ssrf import AllowList, guarded_client, send
from tusk.tools.base import ToolError

CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Fetched:
    status_code: int
    headers: dict[str, str]
    content: bytes
    truncated: bool
    url: str

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_some(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of the body, and whether there was more."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks)[:limit], True
    return b"".join(chunks), False


def truncation_note(limit: int) -> str:
    return f"\n\n[The response was longer than {limit} bytes and was cut there.]"


@dataclass(frozen=True)
class Outgoing:
    method: str
    url: str
    params: dict[str, str] | None = None
    headers: dict[str, str] | None = None
    json: object = None
    has_json: bool = False


async def fetch(allow: AllowList, out: Outgoing, *, limit: int, timeout: float) -> Fetched:
    """Send one request (redirects followed hop by hop, each checked) and read up to `limit`."""
    timeouts = httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT, timeout))
    try:
        async with guarded_client(allow, timeout=timeouts) as client:
            request = client.build_request(
                out.method.upper(),
                out.url,
                params=out.params or None,
                headers=out.headers or None,
                json=out.json if out.has_json else None,
            )
            response = await send(client, request)
            try:
                content, truncated = await read_some(response, limit)
            finally:
                await response.aclose()
    except httpx.TimeoutException:
        raise ToolError(f"the request to {out.url} timed out") from None
    except httpx.HTTPError as exc:
        raise ToolError(f"the request to {out.url} failed: {exc}") from None
    except TuskError as exc:
        raise ToolError(exc.message) from None
    headers = {k.lower(): v for k, v in response.headers.items()}
    return Fetched(response.status_code, headers, content, truncated, str(response.url))
