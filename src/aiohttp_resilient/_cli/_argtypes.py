"""Argparse ``type=`` converters shared by the command-line tools."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from yarl import URL

from .._util._redact import redact_text, redact_url

__all__ = ["http_url", "number", "store_url", "url_problem"]

#: The ports a URL may name.
_PORTS = range(1, 65536)


def url_problem(text: str) -> str | None:
    """What is wrong with ``text`` as an http(s) URL to fetch, in words, its credentials
    redacted (user info, secret-looking query values); ``None`` if nothing."""
    problem = _problem(text)
    return None if problem is None else redact_text(problem)


def _problem(text: str) -> str | None:
    try:
        url = URL(text)
        port = url.explicit_port
    except (ValueError, TypeError) as exc:
        if "out of range" in str(exc):
            return f"{text!r}: the port is out of range (1-65535)"
        return f"{text!r} is not a valid URL ({exc})"
    if url.scheme not in ("http", "https"):
        return f"{text!r} is not an http:// or https:// URL"
    if not url.raw_host:
        return f"{text!r} has no host"
    if port is not None and port not in _PORTS:
        return f"{text!r}: the port is out of range (1-65535)"
    return None


def http_url(text: str) -> URL:
    """An argparse ``type`` for an http(s) URL, with the reason when it is not one."""
    problem = url_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return URL(text)


def number(
    kind: Callable[[str], float],
    *,
    minimum: float,
    maximum: float | None = None,
    strict: bool = False,
) -> Callable[[str], float]:
    """An argparse ``type`` for finite numbers >= ``minimum`` (> with ``strict``), and
    <= ``maximum`` when given; ``kind`` is ``int`` or ``float``."""

    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            name = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {name}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if value < minimum or (strict and value == minimum):
            relation = ">" if strict else ">="
            raise argparse.ArgumentTypeError(f"{text!r} must be {relation} {minimum:g}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{text!r} must be <= {maximum:g}")
        return value

    return convert


def store_url(text: str) -> str:
    """``--store``: a redis:// or rediss:// URL (not echoed back: it may hold a password)."""
    if not text.startswith(("redis://", "rediss://")):
        raise argparse.ArgumentTypeError(f"not a redis:// or rediss:// URL: {redact_url(text)}")
    return text
