"""The response side of HTTP/1.1: response heads, and whole canned responses of faults.

Responses of ``ok`` and ``status`` faults only change with the ``Date`` header, so they are
rendered once per second and then cost one dict lookup: a benchmark measures the client, not the
server.
"""

from __future__ import annotations

import email.utils
import http
import math
import time
from collections.abc import Iterable

from ._faults import Fault

__all__ = ["ResponseWriter"]


class ResponseWriter:
    """Renders response bytes; one per server.

    Args:
        keep_alive_header: The value of a ``Keep-Alive`` header sent with every response that
            keeps the connection open, or ``None`` for none.
    """

    __slots__ = ("_cache", "_cache_second", "_date", "keep_alive_header")

    def __init__(self, keep_alive_header: str | None = None) -> None:
        self.keep_alive_header = keep_alive_header
        # Rendered responses for faults whose bytes only change with the Date header; the whole
        # cache is dropped when the second changes, so the hot path is one dict lookup.
        self._cache: dict[tuple[Fault, bool, bool], bytes] = {}
        self._cache_second = -1
        self._date = b""

    def _date_header(self) -> bytes:
        now = int(time.time())
        if now != self._cache_second:
            self._cache_second = now
            self._cache.clear()
            self._date = b"Date: " + email.utils.formatdate(now, usegmt=True).encode() + b"\r\n"
        return self._date

    def render(
        self,
        status: int,
        headers: Iterable[tuple[str, str]],
        content_length: int,
        *,
        close: bool,
        retry_after: bytes | None = None,
    ) -> bytes:
        """A response head with ``Content-Length``, and ``Connection: close`` when ``close``."""
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        parts = [
            f"HTTP/1.1 {status} {reason}\r\n".encode(),
            self._date_header(),
            b"Content-Length: %d\r\n" % content_length,
        ]
        if retry_after is not None:
            parts.append(b"Retry-After: " + retry_after + b"\r\n")
        if close:
            parts.append(b"Connection: close\r\n")
        elif self.keep_alive_header is not None:
            parts.append(b"Keep-Alive: " + self.keep_alive_header.encode("latin-1") + b"\r\n")
        parts.extend(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers)
        parts.append(b"\r\n")
        return b"".join(parts)

    def response(self, fault: Fault, *, close: bool, head_only: bool) -> bytes:
        """The complete response for ``ok``/``status`` faults, cached while the Date holds."""
        self._date_header()
        key = (fault, close, head_only)
        data = self._cache.get(key)
        if data is not None:
            return data
        data = self.render(
            fault.code,
            fault.headers,
            len(fault.body),
            close=close,
            retry_after=_retry_after_value(fault),
        )
        if not head_only:
            data += fault.body
        if not fault.retry_after_date:
            self._cache[key] = data
        return data


def _retry_after_value(fault: Fault) -> bytes | None:
    """The ``Retry-After`` value of ``fault``: delay seconds, or an HTTP date."""
    if fault.retry_after is None:
        return None
    if fault.retry_after_date:
        # Rounded up so the date is never earlier than the promised delay.
        when = math.ceil(time.time() + fault.retry_after)
        return email.utils.formatdate(when, usegmt=True).encode()
    if fault.retry_after == int(fault.retry_after):
        return b"%d" % int(fault.retry_after)
    return repr(float(fault.retry_after)).encode()
