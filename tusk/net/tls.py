"""One TLS context per process for each verification setting: building one loads the certificate
store, which takes 10-20 ms, and every HTTP client would otherwise build its own."""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def ssl_context(verify: bool = True) -> ssl.SSLContext:
    return httpx.create_ssl_context(verify=verify, trust_env=False)
