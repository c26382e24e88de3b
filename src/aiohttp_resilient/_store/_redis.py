"""RedisStore: the per-host state in Redis, shared by every process that names the same Redis
and prefix. Each operation is one registered Lua script (EVALSHA, loaded again on NOSCRIPT)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from .._health._budget import SLOTS
from .._util._redact import redact_url
from ._base import DEFAULT_LEASE_TTL, DEFAULT_STORE_TIMEOUT, Grant, HealthStore
from ._breaker import BreakerNews, Report, Verdict
from ._scripts import (
    ACQUIRE,
    BREAKER_PROBE,
    BREAKER_REPORT,
    BUDGET_SYNC,
    HELD,
    PAUSE,
    RELEASE,
    RENEW,
    THROTTLE,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .._health._breaker import BreakerPolicy
    from .._health._rate import AdaptiveRatePolicy

__all__ = ["DEFAULT_PREFIX", "RedisStore"]

#: Every key the store writes starts with this.
DEFAULT_PREFIX: Final = "aiohttp-resilient:"


def _redis_module() -> Any:
    try:
        import redis.asyncio
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise ImportError(
            'RedisStore needs redis-py: pip install "aiohttp-resilient[redis]"'
        ) from None
    return redis.asyncio


def _rate_args(rate: AdaptiveRatePolicy | None) -> list[float]:
    # The rate policy's numbers, as the scripts take them (beta 0: no rate).
    if rate is None:
        return [0, 1, 1, 1, 1, 0, 0]
    return [
        rate.beta,
        rate.scale,
        rate.min_rate,
        rate.smoothing,
        rate.bucket,
        rate.cooldown,
        rate.burst,
    ]


def _news(verdict: Verdict, wait: object, down: object, why: object) -> BreakerNews:
    # A breaker answer of the scripts (milliseconds, the reason as bytes).
    reason = why.decode() if isinstance(why, bytes) else str(why or "")
    return BreakerNews(verdict, int(wait) / 1000, int(down) / 1000, reason)  # type: ignore[call-overload]


class RedisStore(HealthStore):
    """Per-host leases in Redis, for a fleet of processes on one machine or many.

    Usage::

        store = RedisStore("redis://127.0.0.1:6379/0")          # or rediss:// for TLS
        store = RedisStore(client=my_redis, prefix="crawl-7:")  # a client you already have
        async with resilient_session(limit_per_host=8, store=store) as session: ...
        await store.close()

    A store made from a URL makes its client with short timeouts and no retries of its own
    (a call that fails is not repeated: the process goes on with its local state, see
    :class:`HostHealth`); a ``client`` you pass is used as it is, and not closed by
    :meth:`close`.

    Args:
        url: ``redis://[user:password@]host:port/db`` or ``rediss://...``; not with ``client``.
        client: A ``redis.asyncio.Redis`` you made; not with ``url``.
        prefix: Starts every key (several fleets can share one Redis).
        timeout: Seconds a call may take (socket and connect) before it fails.
        lease_ttl: See :class:`HealthStore`.

    Raises:
        ValueError: Neither or both of ``url`` and ``client``, a URL that is not redis:// or
            rediss://, an empty prefix, or a bad timeout (the field is named).
        ImportError: redis-py is not installed (the ``[redis]`` extra).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: Redis | None = None,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = DEFAULT_STORE_TIMEOUT,
        lease_ttl: float = DEFAULT_LEASE_TTL,
    ) -> None:
        super().__init__(lease_ttl=lease_ttl)
        if (url is None) == (client is None):
            raise ValueError("pass url or client, one of them")
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"prefix must be a non-empty str, got {prefix!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.prefix = prefix
        self.timeout = float(timeout)
        if url is not None:
            if not isinstance(url, str) or not url.startswith(("redis://", "rediss://")):
                shown = redact_url(url) if isinstance(url, str) else repr(url)
                raise ValueError(f"url must be a redis:// or rediss:// URL, got {shown}")
            self._name = redact_url(url)
            client = _redis_module().Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=None,
                health_check_interval=0,
            )
            self._owned = True
        else:
            self._name = f"{type(client).__name__} client"
            self._owned = False
        self._client: Redis = client  # type: ignore[assignment]
        self._acquire = self._client.register_script(ACQUIRE)
        self._release = self._client.register_script(RELEASE)
        self._renew = self._client.register_script(RENEW)
        self._held = self._client.register_script(HELD)
        self._pause = self._client.register_script(PAUSE)
        self._throttle = self._client.register_script(THROTTLE)
        self._breaker_probe = self._client.register_script(BREAKER_PROBE)
        self._breaker_report = self._client.register_script(BREAKER_REPORT)
        self._budget_sync = self._client.register_script(BUDGET_SYNC)

    def __repr__(self) -> str:
        return f"<RedisStore {self._name} prefix={self.prefix!r}>"

    def describe(self) -> str:
        return self._name

    def _key(self, host: str, what: str = "slots") -> str:
        # The host in a hash tag: a Redis Cluster keeps one host's keys together.
        return f"{self.prefix}{{{host}}}:{what}"

    @property
    def _ttl_ms(self) -> int:
        return max(1, round(self.lease_ttl * 1000))

    def _keys(self, host: str) -> list[str]:
        return [self._key(host, what) for what in ("slots", "pause", "waiting", "rate")]

    async def acquire(
        self,
        host: str,
        holder: str,
        members: Sequence[str],
        limit: int,
        rate: AdaptiveRatePolicy | None = None,
        breaker: bool = False,
    ) -> Grant:
        keys = self._keys(host)
        if breaker:
            keys.append(self._key(host, "breaker"))
        granted, wait, paused, waiting, *delays = await self._acquire(
            keys=keys, args=[*_rate_args(rate), limit, self._ttl_ms, holder, *members]
        )
        wait_s = None if int(wait) < 0 else int(wait) / 1000
        if delays and not int(granted):  # the fleet's breaker holds the host open
            down, why = delays
            return Grant(0, wait_s, False, 0, broken=_news(Verdict.OPEN, wait, down, why))
        return Grant(
            int(granted), wait_s, bool(paused), int(waiting), tuple(int(d) / 1e6 for d in delays)
        )

    async def breaker_probe(self, host: str, member: str, limit: int, poll: float) -> BreakerNews:
        verdict, wait, down, why = await self._breaker_probe(
            keys=[self._key(host), self._key(host, "breaker")],
            args=[limit, self._ttl_ms, member, max(1, round(poll * 1000))],
        )
        return _news(Verdict(int(verdict)), wait, down, why)

    async def breaker_report(self, host: str, report: Report, policy: BreakerPolicy) -> None:
        member, outcome, rnd, retry_after, reason, closed_ago = report
        await self._breaker_report(
            keys=[self._key(host, "breaker")],
            args=[
                member,
                int(outcome),
                policy.break_duration,
                policy.break_multiplier,
                policy.max_break,
                policy.break_jitter,
                -1 if policy.patience is None else policy.patience,
                rnd,
                -1 if retry_after is None else retry_after,
                reason,
                closed_ago,
            ],
        )

    async def budget_sync(
        self, host: str, width: float, requests: int, spent: int, refunds: Sequence[int]
    ) -> tuple[int, int]:
        total_requests, total_spent = await self._budget_sync(
            keys=[self._key(host, "budget")],
            args=[max(1, round(width * 1000)), SLOTS, requests, spent, *refunds],
        )
        return int(total_requests), int(total_spent)

    async def throttle(self, host: str, rate: AdaptiveRatePolicy) -> float | None:
        result = int(await self._throttle(keys=self._keys(host), args=_rate_args(rate)))
        return None if result < 0 else result / 1000

    async def pause(self, host: str, seconds: float) -> None:
        await self._pause(keys=[self._key(host, "pause")], args=[max(1, round(seconds * 1000))])

    async def release(self, host: str, members: Sequence[str]) -> None:
        if members:
            await self._release(keys=[self._key(host)], args=list(members))

    async def renew(self, host: str, members: Sequence[str]) -> None:
        if members:
            keys = [self._key(host), self._key(host, "breaker")]
            await self._renew(keys=keys, args=[self._ttl_ms, *members])

    async def held(self, host: str) -> int:
        return int(await self._held(keys=[self._key(host)]))

    async def _disconnect(self) -> None:
        if self._owned:
            await self._client.aclose()
