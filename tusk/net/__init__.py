"""Outbound network access on behalf of users: see `tusk.net.ssrf`."""

from tusk.net.ssrf import (
    AllowList,
    ResponseTooLarge,
    SsrfRefused,
    TooManyRedirects,
    guarded_client,
    read_limited,
    send,
)

__all__ = [
    "AllowList",
    "ResponseTooLarge",
    "SsrfRefused",
    "TooManyRedirects",
    "guarded_client",
    "read_limited",
    "send",
]
