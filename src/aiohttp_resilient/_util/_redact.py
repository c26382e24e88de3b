"""Keep secrets out of logs, events and error messages."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from yarl import URL

__all__ = ["REDACTED", "redact_headers", "redact_text", "redact_url"]

#: What a secret is replaced with.
REDACTED = "REDACTED"

# Query keys and header names that commonly carry credentials (OAuth, AWS and GCP signed URLs,
# API keys, sessions). Matched as a substring, case-insensitive: better one redaction too many.
_SECRET_WORDS = (
    "token",
    "key",
    "secret",
    "password",
    "passwd",
    "pwd",
    "auth",
    "sig",
    "credential",
    "session",
    "cookie",
    "code",
)
_SECRET_NAME = re.compile("|".join(_SECRET_WORDS), re.IGNORECASE)

# user:password@ (or user@) right after a scheme, anywhere in free text.
_USERINFO_IN_TEXT = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
# key=value pairs in free text whose key looks secret.
_QUERY_PAIR_IN_TEXT = re.compile(r"(?P<key>[^?&=\s#]+)=(?P<value>[^&\s#'\"]*)")


def is_secret_name(name: str) -> bool:
    """Whether a query key or header name looks like it carries a credential."""
    return _SECRET_NAME.search(name) is not None


def redact_url(url: URL | str) -> str:
    """The URL as text with its user info and credential-like query values replaced.

    Usage::

        redact_url("https://u:pw@h/p?token=abc&q=1")  # 'https://REDACTED@h/p?token=REDACTED&q=1'
    """
    if isinstance(url, str):
        text = url
        try:
            url = URL(text)
        except (ValueError, TypeError):
            return redact_text(text)
    if url.raw_user is not None or url.raw_password is not None:
        url = url.with_password(None).with_user(REDACTED)
    if url.raw_query_string and any(is_secret_name(key) for key in url.query):
        url = url.with_query(
            [(k, REDACTED if is_secret_name(k) else v) for k, v in url.query.items()]
        )
    return str(url)


def redact_text(text: str) -> str:
    """``text`` (an error message, say) with URL user info and secret-looking ``k=v`` redacted."""
    text = _USERINFO_IN_TEXT.sub(rf"\g<scheme>{REDACTED}@", text)
    return _QUERY_PAIR_IN_TEXT.sub(_redact_pair, text)


def _redact_pair(match: re.Match[str]) -> str:
    key = match["key"]
    return f"{key}={REDACTED}" if is_secret_name(key) else match[0]


def redact_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
) -> list[tuple[str, str]]:
    """Header pairs with the values of credential-like headers replaced.

    ``Authorization``, ``Proxy-Authorization``, ``Cookie``, ``Set-Cookie``, ``X-Api-Key`` and any
    header whose name looks secret are redacted; the rest are kept as they are.
    """
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return [(name, REDACTED if is_secret_name(name) else value) for name, value in pairs]
