"""RetryPolicy validation, the backoff formula and Retry-After parsing (pure logic, no network)."""

from __future__ import annotations

import dataclasses
import email.utils
import random

import pytest

from aiohttp_resilient import RetryPolicy, compute_delay, parse_retry_after


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("attempts", 0),
        ("attempts", 2.5),
        ("attempts", True),
        ("backoff_base", -0.1),
        ("backoff_base", float("nan")),
        ("backoff_multiplier", 0.5),
        ("backoff_max", float("inf")),
        ("jitter", "full"),
        ("statuses", "503"),
        ("statuses", [200]),
        ("statuses", [302]),
        ("statuses", [999]),
        ("methods", "GET"),
        ("methods", ["GE T"]),
        ("idempotency_header", " "),
        ("retry_after_max", -1),
        ("deadline", 0),
        ("deadline", -5.0),
        ("max_buffer_size", -1),
    ],
)
def test_invalid_values_name_the_field(field: str, value: object) -> None:
    """Each bad value raises ValueError with the field's name in the message."""
    with pytest.raises(ValueError, match=field):
        RetryPolicy(**{field: value})  # type: ignore[arg-type]


def test_backoff_max_below_base_is_refused() -> None:
    """backoff_max must be at least backoff_base."""
    with pytest.raises(ValueError, match="backoff_max"):
        RetryPolicy(backoff_base=2.0, backoff_max=1.0)


def test_policy_is_frozen_and_normalised() -> None:
    """Collections become frozensets, methods are upper-cased, and the policy cannot change."""
    policy = RetryPolicy(statuses=[503, 503, 429], methods=["get", "Put"])
    assert policy.statuses == frozenset({429, 503})
    assert policy.methods == frozenset({"GET", "PUT"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.attempts = 9  # type: ignore[misc]
    assert policy.replace(attempts=9).attempts == 9
    with pytest.raises(ValueError, match="attempts"):
        policy.replace(attempts=0)


def test_defaults() -> None:
    """The documented defaults."""
    policy = RetryPolicy()
    assert policy.attempts == 5
    assert policy.statuses == frozenset({429, 500, 502, 503, 504})
    assert policy.methods == frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
    assert policy.idempotency_header == "Idempotency-Key"
    assert policy.deadline is None


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (50, 1.0)],
)
def test_compute_delay_without_jitter_follows_the_formula(n: int, expected: float) -> None:
    """bound = min(backoff_max, backoff_base * backoff_multiplier ** (n - 1))."""
    policy = RetryPolicy(backoff_base=0.1, backoff_max=1.0, jitter=None)
    assert compute_delay(policy, n) == pytest.approx(expected)


def test_full_jitter_stays_within_the_bound() -> None:
    """With full jitter each delay is uniform in [0, bound]: within it, and not constant."""
    random.seed(1234)
    policy = RetryPolicy(backoff_base=1.0, backoff_max=8.0)
    delays = [compute_delay(policy, 3) for _ in range(200)]
    assert all(0.0 <= d <= 4.0 for d in delays)
    assert max(delays) - min(delays) > 2.0


def test_compute_delay_rejects_a_bad_number() -> None:
    """Backoff numbers start at 1."""
    with pytest.raises(ValueError, match="backoff_number"):
        compute_delay(RetryPolicy(), 0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        ("0", 0.0),
        ("-1", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("1.5", None),
        ("\u00b2", None),  # str.isdigit() is true for superscript two
        ("\u0661\u0662", None),  # Arabic-Indic digits: RFC 9110 allows ASCII digits only
    ],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    """delay-seconds is a non-negative integer; anything else is ignored."""
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    """An HTTP-date is the seconds from now until then; a past date is 0."""
    now = 1_700_000_000.0
    future = email.utils.formatdate(now + 90, usegmt=True)
    past = email.utils.formatdate(now - 90, usegmt=True)
    assert parse_retry_after(future, now=now) == pytest.approx(90.0)
    assert parse_retry_after(past, now=now) == 0.0


def test_an_absurd_retry_after_is_finite() -> None:
    """A Retry-After of 400 digits is a finite number past every cap, not inf."""
    from aiohttp_resilient import parse_retry_after

    value = parse_retry_after("9" * 400)
    assert value is not None
    assert value == 1e9
