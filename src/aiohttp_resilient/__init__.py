"""aiohttp-resilient: make aiohttp clients survive the network.

Usage::

    from aiohttp_resilient import resilient_session

    async with resilient_session() as session:
        async with session.get("https://example.org/") as resp:
            body = await resp.read()
"""

import importlib as _importlib
import typing as _typing

from ._exceptions import (
    BodyNotReplayableError,
    CircuitOpenError,
    DownloadError,
    ResilientError,
    RetriesExhaustedError,
    RetryBudgetExhaustedError,
)
from ._health._aimd import AdaptiveLimitPolicy
from ._health._breaker import BreakerPolicy, CircuitState
from ._health._budget import BudgetPolicy
from ._health._claim import HostClaim
from ._health._hosts import HostHealth
from ._health._limiter import HostLimiter
from ._health._policy import CircuitEvent, CircuitHook, HealthPolicy
from ._health._rate import AdaptiveRatePolicy
from ._hedge._policy import HedgePolicy
from ._observe._histogram import LATENCY_BOUNDS, Latency
from ._observe._snapshot import HostStats, PoolUse, Stats, StoreStats, stats
from ._observe._stats import StatsRecorder
from ._retry._classify import VERDICTS, Signal, Verdict, classify
from ._retry._decorator import retry_on_disconnect
from ._retry._events import Attempt, RetryEvent, RetryHook
from ._retry._middleware import RetryMiddleware, session_policy, use_policy
from ._retry._policy import (
    DEFAULT_ATTEMPTS,
    DEFAULT_BACKOFF_BASE,
    DEFAULT_BACKOFF_MAX,
    DEFAULT_BACKOFF_MULTIPLIER,
    DEFAULT_IDEMPOTENCY_HEADER,
    DEFAULT_MAX_BUFFER_SIZE,
    DEFAULT_RETRY_AFTER_JITTER,
    DEFAULT_RETRY_AFTER_MAX,
    DEFAULT_RETRY_METHODS,
    DEFAULT_RETRY_STATUSES,
    RetryPolicy,
    compute_delay,
    parse_retry_after,
)
from ._session import (
    PRESETS,
    SessionPreset,
    default_user_agent,
    resilient_session,
    session_health,
)
from ._store._base import HealthStore
from ._store._fleet import FleetLimiter
from ._store._memory import MemoryStore
from ._store._redis import RedisStore
from ._transfers._download import DownloadResult, ProgressHook, download
from ._transfers._upload import FailedBatch, UploadReport, upload_batches
from ._transport._connector import TrackingConnector
from ._transport._keepalive import KeepAliveEstimate
from ._transport._response import ResilientResponse
from ._util._redact import redact_headers, redact_text, redact_url

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
    "LATENCY_BOUNDS",
    "PRESETS",
    "VERDICTS",
    "AdaptiveLimitPolicy",
    "AdaptiveRatePolicy",
    "Attempt",
    "BodyNotReplayableError",
    "BreakerPolicy",
    "BudgetPolicy",
    "CircuitEvent",
    "CircuitHook",
    "CircuitOpenError",
    "CircuitState",
    "DownloadError",
    "DownloadResult",
    "FailedBatch",
    "FleetLimiter",
    "HealthPolicy",
    "HealthStore",
    "HedgePolicy",
    "HostClaim",
    "HostHealth",
    "HostLimiter",
    "HostStats",
    "KeepAliveEstimate",
    "Latency",
    "MemoryStore",
    "PoolUse",
    "ProgressHook",
    "PrometheusCollector",
    "RedisStore",
    "ResilientError",
    "ResilientResponse",
    "RetriesExhaustedError",
    "RetryBudgetExhaustedError",
    "RetryEvent",
    "RetryHook",
    "RetryMiddleware",
    "RetryPolicy",
    "SessionPreset",
    "Signal",
    "Stats",
    "StatsRecorder",
    "StoreStats",
    "TrackingConnector",
    "UploadReport",
    "Verdict",
    "classify",
    "compute_delay",
    "default_user_agent",
    "download",
    "instrument_session",
    "parse_retry_after",
    "redact_headers",
    "redact_text",
    "redact_url",
    "resilient_session",
    "retry_on_disconnect",
    "session_health",
    "session_policy",
    "stats",
    "upload_batches",
    "use_policy",
]

if _typing.TYPE_CHECKING:
    from ._observe._otel import instrument_session
    from ._observe._prometheus import PrometheusCollector

# The integrations whose libraries come with optional extras: imported on first use, so that the
# library imports and works without them. Without its extra, a name is a placeholder that raises
# the ImportError naming the extra when called: `from aiohttp_resilient import *`, `hasattr()`
# and importing the name still work, and the mistake is told where the integration is used.
_OPTIONAL = {
    "PrometheusCollector": ("._observe._prometheus", "prometheus"),
    "instrument_session": ("._observe._otel", "otel"),
}


def _needs_extra(
    name: str, extra: str, cause: ImportError
) -> _typing.Callable[..., _typing.NoReturn]:
    message = (
        f"aiohttp_resilient.{name} needs the [{extra}] extra: "
        f"pip install 'aiohttp-resilient[{extra}]' ({cause})"
    )

    def missing(*args: object, **kwargs: object) -> _typing.NoReturn:
        raise ImportError(message) from cause

    missing.__name__ = missing.__qualname__ = name
    missing.__doc__ = message
    return missing


def __getattr__(name: str) -> object:
    try:
        module_name, extra = _OPTIONAL[name]
    except KeyError:
        raise AttributeError(f"module 'aiohttp_resilient' has no attribute {name!r}") from None
    try:
        value: object = getattr(_importlib.import_module(module_name, __name__), name)
    except ImportError as exc:
        value = _needs_extra(name, extra, exc)
    globals()[name] = value
    return value
