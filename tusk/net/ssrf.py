"""Outbound HTTP on behalf of users (HTTP request nodes, tools) that cannot be turned against the
machine Tusk runs on or its private network.

Every connection is checked where it is made: the transport's network backend resolves the host
once, refuses the connection unless every address it got is public (or allowed by
TUSK_SSRF_ALLOWED_HOSTS), and connects to the address it checked. So a DNS answer that changes
between the check and the connection (DNS rebinding) changes nothing, and the TLS handshake still
names and verifies the original host. Redirects are followed one hop at a time by `send`, and each
hop is a new request through the same check.

    async with guarded_client(AllowList.parse(settings.ssrf_allowed_hosts)) as client:
        response = await send(client, client.build_request("GET", url))
        body = await read_limited(response, 1024 * 1024)
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import httpcore
import httpx

from tusk.errors import TuskError
from tusk.net.tls import ssl_context

if TYPE_CHECKING:
    from tusk.config import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

ALLOW_SETTING = "TUSK_SSRF_ALLOWED_HOSTS"
SCHEMES = frozenset({"http", "https"})
DEFAULT_MAX_REDIRECTS = 5
POOL_LIMITS = httpx.Limits(max_connections=20, max_keepalive_connections=5)
# Instance metadata services hand out cloud credentials: named apart so the error says so.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(address)
    for address in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
        "169.254.170.2",  # AWS ECS task credentials
        "100.100.100.200",  # Alibaba Cloud
        "fd00:ec2::254",  # AWS over IPv6
    )
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class SsrfRefused(TuskError):
    """An outbound request was refused because of where it would go."""

    code, status = "ssrf_refused", 400


class TooManyRedirects(TuskError):
    code, status = "too_many_redirects", 400


class ResponseTooLarge(TuskError):
    code, status = "response_too_large", 400


# --- the policy (pure) -------------------------------------------------------------------------


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, Teredo, NAT64), which is where
    packets to it may end up."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal_reason(address: IPAddress) -> str | None:
    """Why a connection to `address` is refused (a few words), or None when it is public."""
    if isinstance(address, ipaddress.IPv6Address) and (inner := _embedded_ipv4(address)):
        reason = refusal_reason(inner)
        return f"{reason}, embedded in an IPv6 address" if reason else None
    checks = (
        (address in METADATA_ADDRESSES, "a cloud metadata address"),
        (address.is_unspecified, "an unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address.is_reserved, "a reserved address"),
        (address.is_private, "a private address"),
        (not address.is_global, "not a public address"),
    )
    return next((reason for refused, reason in checks if refused), None)


def _normal_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


@dataclass(frozen=True)
class AllowList:
    """Hosts (by name) and addresses or CIDR ranges that may be reached although not public."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, text: str) -> AllowList:
        """From a comma-separated list such as "localhost,10.0.0.5,192.168.1.0/24"."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in filter(None, (_normal_host(part) for part in text.split(","))):
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry)
        return cls(frozenset(hosts), tuple(networks))

    @classmethod
    def from_settings(cls, settings: Settings) -> AllowList:
        return cls.parse(settings.ssrf_allowed_hosts)

    def allows_host(self, host: str) -> bool:
        return _normal_host(host) in self.hosts

    def allows_address(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)


def check_addresses(host: str, addresses: Sequence[str], allow: AllowList) -> str:
    """The address to connect to: the first one, once every one is known to be allowed."""
    if not addresses:
        raise SsrfRefused(f"the host {host!r} has no address")
    if allow.allows_host(host):
        return addresses[0]
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone
        reason = refusal_reason(address)
        if reason is not None and not allow.allows_address(address):
            raise SsrfRefused(_refusal_message(host, address, reason))
    return addresses[0]


def _refusal_message(host: str, address: IPAddress, reason: str) -> str:
    named = "" if _normal_host(host) == str(address) else f" (the address of {host!r})"
    return (
        f"Refused to connect to {address}{named}: it is {reason}, which requests made by "
        f"workflows and tools may not reach. If this destination is trusted, add "
        f"{str(address)!r} or the host name to {ALLOW_SETTING} (comma separated hosts or CIDR "
        f"ranges) and restart Tusk."
    )


# --- the connection ----------------------------------------------------------------------------


async def system_resolver(host: str, port: int) -> list[str]:
    """The host's addresses from the system resolver (an address stays itself, without DNS)."""
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves, checks, then connects to the address it checked."""

    def __init__(self, allow: AllowList, resolver: Resolver) -> None:
        self._allow = allow
        self._resolve = resolver
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                addresses = await self._resolve(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host!r} timed out") from None
        address = check_addresses(host, addresses, self._allow)
        return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise SsrfRefused("connections to local sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (its request/response and error mapping) over a connection pool
    whose every connection goes through the guard. No proxy: a proxy would connect for us."""

    def __init__(
        self,
        allow: AllowList,
        *,
        verify: bool = True,
        resolver: Resolver = system_resolver,
        limits: httpx.Limits = POOL_LIMITS,
    ) -> None:
        # One context per process and setting: loading the certificate store takes ~10 ms
        super().__init__(verify=_ssl_context(verify), trust_env=False, limits=limits)
        if not isinstance(getattr(self, "_pool", None), httpcore.AsyncConnectionPool):
            # The pool is swapped below; if httpx ever changes how it keeps it, stop here
            # rather than run without the guard.
            raise RuntimeError("this httpx version is not supported by the SSRF guard")
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=_ssl_context(verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_GuardedBackend(allow, resolver),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme not in SCHEMES:
            raise SsrfRefused(f"only http and https URLs may be requested, not {request.url}")
        return await super().handle_async_request(request)


def _ssl_context(verify: bool) -> ssl.SSLContext:
    return ssl_context(verify)


def guarded_client(
    allow: AllowList,
    *,
    timeout: httpx.Timeout | float = 10.0,
    verify: bool = True,
    resolver: Resolver = system_resolver,
) -> httpx.AsyncClient:
    """A client for user-directed requests; send through `send` to follow redirects."""
    return httpx.AsyncClient(
        transport=GuardedTransport(allow, verify=verify, resolver=resolver),
        timeout=timeout,
        follow_redirects=False,
        trust_env=False,
    )


async def send(
    client: httpx.AsyncClient,
    request: httpx.Request,
    *,
    max_redirects: int = DEFAULT_MAX_REDIRECTS,
) -> httpx.Response:
    """Send `request`, following redirects one checked hop at a time; the final response is
    streamed (read it with `read_limited`, then close it)."""
    response = await client.send(request, stream=True, follow_redirects=False)
    hops = 0
    while (following := response.next_request) is not None:
        await response.aclose()
        if hops >= max_redirects:
            raise TooManyRedirects(
                f"{request.url} redirected more than {max_redirects} times "
                f"(the last time to {following.url})"
            )
        hops += 1
        response = await client.send(following, stream=True, follow_redirects=False)
    return response


async def read_limited(response: httpx.Response, limit: int, what: str = "response") -> bytes:
    """The whole (decoded) body, or ResponseTooLarge as soon as it is over `limit` bytes."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ResponseTooLarge(_too_large(what, limit, f"{int(declared)} bytes"))
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise ResponseTooLarge(_too_large(what, limit, f"more than {limit} bytes"))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(what: str, limit: int, actual: str) -> str:
    return f"the {what} is too large: the limit is {_readable(limit)}, it has {actual}"


def _readable(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size / 1024 / 1024:.2f} MB"
    return f"{size / 1024:.2f} KB" if size >= 1024 else f"{size} bytes"
