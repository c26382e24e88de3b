"""What host health is configured with and what it tells: :class:`HealthPolicy`, the breaker's
:class:`CircuitEvent` and its hook, the retry budget's :class:`Advice`, and the error of a wait
that would pass the caller's deadline."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ._aimd import AdaptiveLimitPolicy
from ._breaker import BreakerPolicy, CircuitState
from ._budget import BudgetPolicy
from ._rate import AdaptiveRatePolicy

__all__ = ["Advice", "CircuitEvent", "CircuitHook", "HealthPolicy", "WaitExpiredError"]


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthPolicy:
    """Which host-health mechanisms run, and how; ``None`` turns one off.

    Usage::

        HealthPolicy(breaker=BreakerPolicy(patience=0), adaptive_rate=None)

    Attributes:
        budget: The retry budget (:class:`BudgetPolicy`). Off: every retry the policy allows
            goes, disconnects at once.
        breaker: The circuit breaker (:class:`BreakerPolicy`).
        adaptive_limit: The live concurrency limit under the per-host cap
            (:class:`AdaptiveLimitPolicy`); needs a per-host cap to work under.
        adaptive_rate: The send rate of hosts that throttle (:class:`AdaptiveRatePolicy`).
    """

    budget: BudgetPolicy | None = field(default_factory=BudgetPolicy)
    breaker: BreakerPolicy | None = field(default_factory=BreakerPolicy)
    adaptive_limit: AdaptiveLimitPolicy | None = field(default_factory=AdaptiveLimitPolicy)
    adaptive_rate: AdaptiveRatePolicy | None = field(default_factory=AdaptiveRatePolicy)

    def __post_init__(self) -> None:
        for name, kind in (
            ("budget", BudgetPolicy),
            ("breaker", BreakerPolicy),
            ("adaptive_limit", AdaptiveLimitPolicy),
            ("adaptive_rate", AdaptiveRatePolicy),
        ):
            value = getattr(self, name)
            if value is not None and not isinstance(value, kind):
                raise ValueError(f"{name} must be a {kind.__name__} or None, got {value!r}")


class Advice(enum.Enum):
    """How the host says the next retry should go."""

    NOW = "at once"
    BACKOFF = "backoff"
    REFUSED = "budget spent"


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitEvent:
    """A breaker changed state: what ``on_circuit_change`` hooks receive (an opening and a
    closing are logged at INFO, the probes in between at DEBUG).

    Attributes:
        host: ``scheme://host:port``.
        old: The state before.
        new: The state now.
        reason: Why it last opened (``"5 failures in a row over 0.12s"``, ``"92% of 60 calls
            failed"``, ``"the probe failed"``).
        retry_in: Seconds until the next probe when it opened, else ``None``.
    """

    host: str
    old: CircuitState
    new: CircuitState
    reason: str
    retry_in: float | None


CircuitHook = Callable[[CircuitEvent], Awaitable[None] | None]


class WaitExpiredError(Exception):
    """A claim's wait (for a slot, the rate or the probe) would pass the caller's deadline.

    Private to the request path, which turns it into a give-up naming what it waited for.
    """

    def __init__(self, waited_for: str) -> None:
        super().__init__(waited_for)
        self.waited_for = waited_for
