"""RetryPolicy: what to retry, how often and how long to wait; shared, immutable, validated."""

from __future__ import annotations

import dataclasses
import email.utils
import itertools
import math
import random
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass

import backoff

__all__ = [
    "DEFAULT_ATTEMPTS",
    "DEFAULT_BACKOFF_BASE",
    "DEFAULT_BACKOFF_MAX",
    "DEFAULT_BACKOFF_MULTIPLIER",
    "DEFAULT_IDEMPOTENCY_HEADER",
    "DEFAULT_MAX_BUFFER_SIZE",
    "DEFAULT_RETRY_AFTER_JITTER",
    "DEFAULT_RETRY_AFTER_MAX",
    "DEFAULT_RETRY_METHODS",
    "DEFAULT_RETRY_STATUSES",
    "RetryPolicy",
    "compute_delay",
    "parse_retry_after",
]

#: Attempts in all, the first included. urllib3 and the AWS SDK make 3, gRPC caps at 5; 5 absorbs
#: a 5% disconnect rate with a failure odds of 3e-7 per request while bounding the load a sick
#: server gets to 5x.
DEFAULT_ATTEMPTS = 5
#: The first backoff wait's upper bound, in seconds. Short: most disconnects are one-off.
DEFAULT_BACKOFF_BASE = 0.1
#: Each backoff wait's bound grows by this factor (classic exponential backoff).
DEFAULT_BACKOFF_MULTIPLIER = 2.0
#: No single backoff wait is longer than this, in seconds.
DEFAULT_BACKOFF_MAX = 10.0
#: The statuses that mean "try again later": rate limited, and the transient 5xx family.
DEFAULT_RETRY_STATUSES: frozenset[int] = frozenset({429, 500, 502, 503, 504})
#: RFC 9110's idempotent methods: sending one twice has the effect of sending it once.
DEFAULT_RETRY_METHODS: frozenset[str] = frozenset(
    {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"}
)
#: A request carrying this header is treated as idempotent whatever its method (the IETF
#: httpapi Idempotency-Key draft, as used by Stripe and others).
DEFAULT_IDEMPOTENCY_HEADER = "Idempotency-Key"
#: A server's Retry-After above this many seconds ends the retries instead of being slept on.
DEFAULT_RETRY_AFTER_MAX = 60.0
#: A Retry-After wait is lengthened by up to this share of it, so that clients told "1 s" do
#: not all come back in the same instant (never shorter than asked).
DEFAULT_RETRY_AFTER_JITTER = 0.2
#: Retryable response bodies up to this size are read inside the retry loop, so that a
#: disconnect mid-body is retried; larger ones are handed over unbuffered.
DEFAULT_MAX_BUFFER_SIZE = 8 * 1024 * 1024

#: Longer Retry-After values are read as this many seconds (about 31 years): finite, and past
#: every cap.
RETRY_AFTER_CEILING = 1e9

Jitter = Callable[[float], float]


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """What to retry and how, shared by every request that uses it.

    A policy is an immutable value: change one with :func:`dataclasses.replace` (or
    :meth:`replace`). Invalid values raise :class:`ValueError` naming the field.

    Usage::

        policy = RetryPolicy(attempts=3, backoff_max=2.0, deadline=30.0)

    Attributes:
        attempts: Attempts in all, the first included (1 means never retry): a hard cap on
            what one call sends. Every attempt counts, a refused connection, a refusal requeued
            under a host's cut limit and a breaker's probe included; the one wait that is not an
            attempt is waiting for an open breaker's probe, during which nothing is sent.
        backoff_base: Upper bound of the first backoff wait, in seconds.
        backoff_multiplier: Factor by which the bound grows per backoff.
        backoff_max: Upper bound of any single backoff wait, in seconds.
        jitter: Maps a bound to the actual wait; ``backoff.full_jitter`` (uniform in [0, bound])
            by default, ``None`` waits exactly the bound.
        statuses: Response statuses that are retried: 429 for any method (the server refused
            the request without processing it), the others for idempotent requests only.
        methods: Methods retried after the request may have reached the server.
        idempotency_header: A request carrying this header counts as idempotent; ``None`` turns
            that off.
        respect_retry_after: Whether a ``Retry-After`` header on a retryable status sets the wait.
        retry_after_max: A ``Retry-After`` above this many seconds ends the retries at once.
        retry_after_jitter: A ``Retry-After`` wait is spread over ``[s, s * (1 + this)]``.
        deadline: Seconds for the whole call, attempts, backoff waits and waits for a per-host
            slot included (per redirect hop); ``None`` for no bound beyond aiohttp's own
            ``ClientTimeout``. No wait starts that would end past it.
        retry_stale_immediately: Retry a disconnect on a reused keep-alive connection at once,
            without a backoff wait and without charging the host's retry budget, when it came
            before the server could have been working on the request (the server closed an
            idle connection as it was reused).
        buffer_body: Read retryable response bodies inside the retry loop so that a disconnect
            mid-body is retried; turn off for streaming.
        max_buffer_size: Bodies larger than this many bytes are not buffered.
        raise_on_status: After the last attempt got a retryable status, raise
            :class:`RetriesExhaustedError` (``True``) or return that response (``False``).
        watch_idle: Let the middleware's idle watchdog (``idle_timeout``) abandon a response
            that goes silent. Turn off for long polls and watches, whose server is silent on
            purpose: ``with use_policy(policy.replace(watch_idle=False)): ...``.
    """

    attempts: int = DEFAULT_ATTEMPTS
    backoff_base: float = DEFAULT_BACKOFF_BASE
    backoff_multiplier: float = DEFAULT_BACKOFF_MULTIPLIER
    backoff_max: float = DEFAULT_BACKOFF_MAX
    jitter: Jitter | None = backoff.full_jitter
    statuses: Collection[int] = DEFAULT_RETRY_STATUSES
    methods: Collection[str] = DEFAULT_RETRY_METHODS
    idempotency_header: str | None = DEFAULT_IDEMPOTENCY_HEADER
    respect_retry_after: bool = True
    retry_after_max: float = DEFAULT_RETRY_AFTER_MAX
    retry_after_jitter: float = DEFAULT_RETRY_AFTER_JITTER
    deadline: float | None = None
    retry_stale_immediately: bool = True
    buffer_body: bool = True
    max_buffer_size: int = DEFAULT_MAX_BUFFER_SIZE
    raise_on_status: bool = True
    watch_idle: bool = True
    #: Derived: no deadline, and idempotency judged by the default methods and header, so that
    #: the middleware may send the first attempt on its fast path (not a field to set).
    _plain: bool = dataclasses.field(init=False, repr=False, compare=False, default=False)

    def __post_init__(self) -> None:
        _check_int("attempts", self.attempts, minimum=1)
        _check_number("backoff_base", self.backoff_base, minimum=0.0)
        _check_number("backoff_multiplier", self.backoff_multiplier, minimum=1.0)
        _check_number("backoff_max", self.backoff_max, minimum=self.backoff_base)
        if self.jitter is not None and not callable(self.jitter):
            raise ValueError(f"jitter must be a callable or None, got {self.jitter!r}")
        if isinstance(self.statuses, (str, bytes)) or not isinstance(self.statuses, Collection):
            raise ValueError(f"statuses must be a collection of ints, got {self.statuses!r}")
        for status in self.statuses:
            if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
                raise ValueError(f"statuses must hold HTTP status codes 100-599, got {status!r}")
            if 200 <= status < 400:
                raise ValueError(f"statuses must not hold a success or redirect status: {status}")
        object.__setattr__(self, "statuses", frozenset(self.statuses))
        if isinstance(self.methods, (str, bytes)) or not isinstance(self.methods, Collection):
            raise ValueError(f"methods must be a collection of method names, got {self.methods!r}")
        for method in self.methods:
            if not isinstance(method, str) or not method.isalpha():
                raise ValueError(f"methods must hold HTTP method names, got {method!r}")
        object.__setattr__(self, "methods", frozenset(m.upper() for m in self.methods))
        if self.idempotency_header is not None and (
            not isinstance(self.idempotency_header, str) or not self.idempotency_header.strip()
        ):
            raise ValueError(
                f"idempotency_header must be a header name or None, got {self.idempotency_header!r}"
            )
        _check_number("retry_after_max", self.retry_after_max, minimum=0.0)
        _check_number("retry_after_jitter", self.retry_after_jitter, minimum=0.0)
        for name in (
            "respect_retry_after",
            "retry_stale_immediately",
            "buffer_body",
            "raise_on_status",
            "watch_idle",
        ):
            _check_bool(name, getattr(self, name))
        if self.deadline is not None:
            _check_number("deadline", self.deadline, minimum=0.0, inclusive=False)
        _check_int("max_buffer_size", self.max_buffer_size, minimum=0)
        plain = (
            self.deadline is None
            and self.methods == DEFAULT_RETRY_METHODS
            and self.idempotency_header == DEFAULT_IDEMPOTENCY_HEADER
        )
        object.__setattr__(self, "_plain", plain)

    def replace(self, **changes: object) -> RetryPolicy:
        """A copy with ``changes`` applied and validated, as :func:`dataclasses.replace` does."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def schedule(self) -> Iterator[float]:
        """The backoff bounds, one per backoff wait, before jitter: see :func:`compute_delay`."""
        waits = backoff.expo(
            base=self.backoff_multiplier, factor=self.backoff_base, max_value=self.backoff_max
        )
        next(waits)  # backoff's generators are primed for .send(); the first value is None
        return waits


def compute_delay(policy: RetryPolicy, backoff_number: int) -> float:
    """How long to wait before the ``backoff_number``-th backoff (1-based), jitter included.

    The formula, with ``n = backoff_number``::

        bound = min(backoff_max, backoff_base * backoff_multiplier ** (n - 1))
        delay = jitter(bound)          # full jitter: uniform(0, bound)

    Full jitter ("Exponential Backoff And Jitter", AWS Architecture Blog, 2015) spreads the clients
    that failed together so they do not come back together. A retry of a stale keep-alive
    connection does not back off, and does not advance ``n``. A ``Retry-After`` header, when
    honoured, replaces this delay.

    Raises:
        ValueError: ``backoff_number`` is below 1.
    """
    _check_int("backoff_number", backoff_number, minimum=1)
    bound = next(itertools.islice(policy.schedule(), backoff_number - 1, None))
    return apply_jitter(policy, bound)


def apply_jitter(policy: RetryPolicy, bound: float) -> float:
    """The actual wait for a backoff ``bound``, with the policy's jitter (none if ``None``)."""
    return bound if policy.jitter is None else policy.jitter(bound)


def jitter_retry_after(policy: RetryPolicy, seconds: float) -> float:
    """The wait for a ``Retry-After`` of ``seconds``: never shorter, up to
    ``retry_after_jitter`` longer (uniform)."""
    if seconds <= 0 or policy.retry_after_jitter == 0:
        return seconds
    return seconds * (1.0 + policy.retry_after_jitter * random.random())


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait according to a ``Retry-After`` header value, or ``None`` if unusable.

    Both forms of RFC 9110 §10.2.3 are read: delay-seconds (``"120"``) and an HTTP-date
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``, relative to ``now``, the wall clock by default). A date
    in the past means 0. Anything else (negative, garbage) is ignored, as browsers do.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit() alone admits "²" and "١٢"
        return min(float(value), RETRY_AFTER_CEILING)  # "9" * 400 would be inf
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive result means no zone was given
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def _check_number(
    name: str,
    value: object,
    *,
    minimum: float,
    inclusive: bool = True,
    maximum: float | None = None,
    max_inclusive: bool = True,
) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if math.isinf(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if value < minimum or (not inclusive and value == minimum):
        relation = ">=" if inclusive else ">"
        raise ValueError(f"{name} must be {relation} {minimum}, got {value!r}")
    if maximum is not None and (value > maximum or (not max_inclusive and value == maximum)):
        relation = "<=" if max_inclusive else "<"
        raise ValueError(f"{name} must be {relation} {maximum:g}, got {value!r}")
