"""The SSRF guard: which addresses it refuses, and real requests to a server on loopback
(allowed only through the allow-list), redirects checked hop by hop, and connections pinned to
the checked address."""

from __future__ import annotations

import ipaddress
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tusk.net.ssrf import (
    AllowList,
    ResponseTooLarge,
    SsrfRefused,
    TooManyRedirects,
    check_addresses,
    guarded_client,
    read_limited,
    refusal_reason,
    send,
)

LOOPBACK = AllowList.parse("127.0.0.1")
NOTHING_ALLOWED = AllowList()


class Handler(BaseHTTPRequestHandler):
    """/hello answers with the Host header it got; /to?url=X redirects to X; /loop redirects
    to itself; /big sends 64 KB."""

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path == "/to":
            self._redirect(query.removeprefix("url="))
        elif path == "/loop":
            self._redirect("/loop")
        elif path == "/big":
            self._reply(b"x" * 65536)
        else:
            self._reply(f"hello {self.headers['Host']}".encode())

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _reply(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


async def get(url: str, allow: AllowList = NOTHING_ALLOWED, **options: object) -> httpx.Response:
    async with guarded_client(allow, **options) as client:  # type: ignore[arg-type]
        response = await send(client, client.build_request("GET", url))
        await response.aread()
        await response.aclose()
        return response


# --- the policy --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12::1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("100.100.100.200", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),  # noqa: S104
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "not a public address"),
        ("::ffff:127.0.0.1", "loopback address, embedded in an IPv6"),
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("2002:a00:1::1", "private address, embedded"),  # 6to4 of 10.0.0.1
        ("64:ff9b::7f00:1", "loopback address, embedded"),  # NAT64 of 127.0.0.1
    ],
)
def test_refused_addresses(address: str, reason: str) -> None:
    found = refusal_reason(ipaddress.ip_address(address))
    assert found is not None
    assert reason in found


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses_pass(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is None


def test_allow_list_takes_hosts_addresses_and_ranges() -> None:
    allow = AllowList.parse(" LocalHost., 10.0.0.5 ,192.168.0.0/16,[::1],")
    assert allow.allows_host("localhost")
    assert allow.allows_host("LOCALHOST")
    assert not allow.allows_host("example.com")
    for address in ("10.0.0.5", "192.168.200.1", "::1"):
        assert allow.allows_address(ipaddress.ip_address(address))
    assert not allow.allows_address(ipaddress.ip_address("10.0.0.6"))


def test_every_resolved_address_must_pass() -> None:
    assert check_addresses("example.com", ["93.184.216.34"], AllowList()) == "93.184.216.34"
    with pytest.raises(SsrfRefused, match=r"10\.0\.0\.1 \(the address of 'example.com'\)"):
        check_addresses("example.com", ["93.184.216.34", "10.0.0.1"], AllowList())
    assert check_addresses("intranet", ["10.0.0.1"], AllowList.parse("intranet")) == "10.0.0.1"
    with pytest.raises(SsrfRefused, match="has no address"):
        check_addresses("nowhere", [], AllowList())


# --- real requests -----------------------------------------------------------------------------


async def test_loopback_is_refused_with_how_to_allow_it(port: int) -> None:
    with pytest.raises(SsrfRefused) as refused:
        await get(f"http://127.0.0.1:{port}/hello")
    message = str(refused.value)
    assert "127.0.0.1" in message
    assert "loopback" in message
    assert "TUSK_SSRF_ALLOWED_HOSTS" in message


async def test_allow_listed_address_and_host_name_are_reached(port: int) -> None:
    by_address = await get(f"http://127.0.0.1:{port}/hello", LOOPBACK)
    assert by_address.text == f"hello 127.0.0.1:{port}"
    by_name = await get(f"http://localhost:{port}/hello", AllowList.parse("localhost"))
    assert by_name.text == f"hello localhost:{port}"


async def test_localhost_by_name_is_refused(port: int) -> None:
    with pytest.raises(SsrfRefused, match="the address of 'localhost'"):
        await get(f"http://localhost:{port}/hello")


async def test_metadata_address_is_refused_before_connecting() -> None:
    with pytest.raises(SsrfRefused, match=r"169\.254\.169\.254.*cloud metadata"):
        await get("http://169.254.169.254/latest/meta-data/", timeout=0.5)


async def test_ipv4_mapped_loopback_is_refused(port: int) -> None:
    with pytest.raises(SsrfRefused, match="embedded in an IPv6"):
        await get(f"http://[::ffff:127.0.0.1]:{port}/hello")


async def test_each_redirect_hop_is_checked(port: int) -> None:
    followed = await get(f"http://127.0.0.1:{port}/to?url=/hello", LOOPBACK)
    assert followed.status_code == 200
    assert followed.text.startswith("hello")
    for target in ("http://169.254.169.254/latest/", "http://10.0.0.1/admin"):
        with pytest.raises(SsrfRefused, match=re.escape(target.split("/")[2])):
            await get(f"http://127.0.0.1:{port}/to?url={target}", LOOPBACK)


async def test_redirects_are_limited(port: int) -> None:
    with pytest.raises(TooManyRedirects, match="more than 5 times"):
        await get(f"http://127.0.0.1:{port}/loop", LOOPBACK)


async def test_only_http_and_https() -> None:
    async with guarded_client(AllowList()) as client:
        with pytest.raises((SsrfRefused, httpx.UnsupportedProtocol)):
            await send(client, client.build_request("GET", "ftp://example.com/file"))


async def test_connection_goes_to_the_checked_address_with_the_host_kept(port: int) -> None:
    """A name resolved once: the connection uses that answer, the request keeps the name."""
    answers: list[str] = []

    async def resolver(host: str, _port: int) -> list[str]:
        answers.append(host)
        return ["127.0.0.1"]

    response = await get(f"http://tusk-test.invalid:{port}/hello", LOOPBACK, resolver=resolver)
    assert response.text == f"hello tusk-test.invalid:{port}"
    assert answers == ["tusk-test.invalid"]


async def test_a_name_with_any_private_answer_is_refused(port: int) -> None:
    async def resolver(host: str, _port: int) -> list[str]:
        return ["93.184.216.34", "127.0.0.1"]

    with pytest.raises(SsrfRefused, match=r"127\.0\.0\.1"):
        await get(f"http://tusk-test.invalid:{port}/hello", resolver=resolver)


async def test_body_size_limit(port: int) -> None:
    async with guarded_client(LOOPBACK) as client:
        response = await send(client, client.build_request("GET", f"http://127.0.0.1:{port}/big"))
        with pytest.raises(ResponseTooLarge, match=r"limit is 1\.00 KB"):
            await read_limited(response, 1024)
        await response.aclose()
        response = await send(client, client.build_request("GET", f"http://127.0.0.1:{port}/big"))
        assert len(await read_limited(response, 65536)) == 65536
        await response.aclose()
