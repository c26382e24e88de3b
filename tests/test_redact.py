"""Secrets never reach logs: user info, credential-like query values and headers."""

from __future__ import annotations

import pytest

from aiohttp_resilient import redact_headers, redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://u:pw@h.example/p?q=1", "https://REDACTED@h.example/p?q=1"),
        ("https://token@h.example/", "https://REDACTED@h.example/"),
        ("http://h/p?access_token=abc&page=2", "http://h/p?access_token=REDACTED&page=2"),
        (
            "http://h/p?api_key=k&X-Amz-Signature=s",
            "http://h/p?api_key=REDACTED&X-Amz-Signature=REDACTED",
        ),
        ("http://h/p?password=p", "http://h/p?password=REDACTED"),
        ("http://h/plain", "http://h/plain"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    """User info and secret-looking query values are replaced; the rest is kept."""
    assert redact_url(url) == expected


def test_redact_text_in_error_messages() -> None:
    """URLs inside free text lose their secrets too."""
    text = "Cannot connect to http://bob:hunter2@host/x?session_id=abc&a=1 [refused]"
    redacted = redact_text(text)
    assert "hunter2" not in redacted
    assert "abc" not in redacted
    assert "a=1" in redacted


def test_redact_headers() -> None:
    """Credential headers are redacted, others kept, order preserved."""
    headers = [
        ("Authorization", "Bearer x"),
        ("Cookie", "sid=1"),
        ("X-Api-Key", "k"),
        ("Accept", "*/*"),
        ("Proxy-Authorization", "Basic y"),
    ]
    assert redact_headers(headers) == [
        ("Authorization", "REDACTED"),
        ("Cookie", "REDACTED"),
        ("X-Api-Key", "REDACTED"),
        ("Accept", "*/*"),
        ("Proxy-Authorization", "REDACTED"),
    ]
    assert redact_headers({"Accept": "a"}) == [("Accept", "a")]
