"""The SSRF guard for MCP connections. The `mcp` SDK speaks HTTP through httpx2 (on httpcore2),
so this is `tusk.net.ssrf`'s guarded transport for that stack: the same address policy and
allow-list, checked when each connection is made, to the address that was checked."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import anyio
import httpcore
import httpcore2
import httpx2

from tusk.net.ssrf import AllowList, SsrfRefused, check_addresses, system_resolver
from tusk.net.tls import ssl_context


class _GuardedBackend(httpcore2.AsyncNetworkBackend):
    def __init__(self, allow: AllowList) -> None:
        self._allow = allow
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                addresses = await system_resolver(host, port)
        except TimeoutError:
            raise httpcore2.ConnectTimeout(f"resolving {host!r} timed out") from None
        except httpcore.ConnectError as exc:
            raise httpcore2.ConnectError(str(exc)) from None
        address = check_addresses(host, addresses, self._allow)
        return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        raise SsrfRefused("connections to local sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx2.AsyncHTTPTransport):
    def __init__(self, allow: AllowList) -> None:
        super().__init__(verify=ssl_context(), trust_env=False)
        if not isinstance(getattr(self, "_pool", None), httpcore2.AsyncConnectionPool):
            raise RuntimeError("this httpx2 version is not supported by the SSRF guard")
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=ssl_context(),
            network_backend=_GuardedBackend(allow),
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.scheme not in ("http", "https"):
            raise SsrfRefused(f"only http and https URLs may be requested, not {request.url}")
        return await super().handle_async_request(request)


def guarded_client(
    allow: AllowList,
    headers: Mapping[str, str] | None = None,
    timeout: httpx2.Timeout | None = None,
) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(
        transport=GuardedTransport(allow),
        headers=dict(headers or {}),
        timeout=timeout or httpx2.Timeout(30.0),
        follow_redirects=False,
        trust_env=False,
    )
