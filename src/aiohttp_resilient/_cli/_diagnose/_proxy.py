"""Whose answer is it: the origin's, relayed by a proxy, or one the proxy made itself.

A proxy relays the origin's responses with a ``Via`` header added; the ones it makes itself
(it could not reach the origin, its rules refuse the request) say so: squid's
``X-Squid-Error`` (``ERR_CONNECT_FAIL 111``: the connect failed with errno 111), RFC 9209's
``Proxy-Status: name; error=...``, or a 502/503/504 whose ``Server`` names the proxy of ``Via``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping

__all__ = ["PROXY_HEADERS", "proxy_answer"]

#: Response headers that tell a proxy's own answer from a relayed one.
PROXY_HEADERS = ("Via", "X-Squid-Error", "Proxy-Status")

#: Squid's error pages (``errors/templates``) in words.
_SQUID_ERRORS = {
    "ERR_CONNECT_FAIL": "the proxy could not connect to the origin",
    "ERR_DNS_FAIL": "the proxy could not resolve the origin's name",
    "ERR_READ_TIMEOUT": "the origin did not answer the proxy in time",
    "ERR_LIFETIME_EXP": "the proxy's connection to the origin timed out",
    "ERR_ZERO_SIZE_OBJECT": "the origin closed the connection without a response",
    "ERR_READ_ERROR": "the proxy's connection to the origin failed while reading",
    "ERR_WRITE_ERROR": "the proxy's connection to the origin failed while writing",
    "ERR_ACCESS_DENIED": "the proxy's rules refuse this request",
    "ERR_CACHE_ACCESS_DENIED": "the proxy wants credentials",
    "ERR_CANNOT_FORWARD": "the proxy cannot forward the request",
    "ERR_INVALID_URL": "the proxy could not parse the URL",
}
#: Proxy-Status error types (RFC 9209, section 2.3) in words.
_PROXY_STATUS_ERRORS = {
    "connection_refused": "the proxy could not connect to the origin: connection refused",
    "connection_timeout": "the proxy could not connect to the origin: timed out",
    "destination_not_found": "the proxy could not resolve the origin's name",
    "dns_timeout": "the proxy could not resolve the origin's name: timed out",
    "destination_unavailable": "the proxy considers the origin unavailable",
    "connection_terminated": "the origin closed the connection before a response",
    "http_response_timeout": "the origin did not answer the proxy in time",
}


def proxy_answer(status: int, headers: Mapping[str, str]) -> str | None:
    """The proxy's own reason if it made this response itself, else ``None``.

    >>> proxy_answer(503, {"X-Squid-Error": "ERR_CONNECT_FAIL 111", "Server": "squid/5.7"})
    'ERR_CONNECT_FAIL 111: the proxy could not connect to the origin: connection refused'
    """
    squid = headers.get("X-Squid-Error")
    if squid:
        code, _, detail = squid.partition(" ")
        reason = _SQUID_ERRORS.get(code, "an error of the proxy's own")
        if detail.isdigit() and int(detail) in errno.errorcode:
            reason += f": {os.strerror(int(detail)).lower()}"
        return f"{squid}: {reason}"
    status_header = headers.get("Proxy-Status", "")
    if "error=" in status_header:
        kind = status_header.split("error=", 1)[1].split(";", 1)[0].strip().strip('"')
        return f"Proxy-Status error={kind}: " + _PROXY_STATUS_ERRORS.get(
            kind, "an error of the proxy's own"
        )
    server = headers.get("Server", "")
    product = server.split("/", 1)[0].strip().lower()
    if status in (502, 503, 504) and product and product in headers.get("Via", "").lower():
        return f"HTTP {status} with Server: {server}, the proxy named in Via"
    return None
