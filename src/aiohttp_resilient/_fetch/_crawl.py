"""The crawl: URLs fetched through one ``resilient_session(preset="crawler")``, at most
``concurrency`` at a time and ``per_host`` per host, paced to ``rate`` per host, each outcome
handed to ``on_record`` as it ends. A stop (Ctrl-C) starts no further URL and lets those in
flight end, so that each URL started is recorded; a resumed run fetches the rest."""

from __future__ import annotations

import asyncio
import collections
import contextvars
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import aiohttp
from yarl import URL

from .._events import RetryEvent, cause_name
from .._exceptions import ResilientError
from .._session import PRESETS, resilient_session
from ._store import RECORDED_HEADERS, Record, Store, host_of

__all__ = ["DEFAULT_CONCURRENCY", "Crawl", "CrawlConfig", "interleave_hosts"]

_CRAWLER = PRESETS["crawler"]
#: URLs in flight at once in all (Scrapy's CONCURRENT_REQUESTS is 16).
DEFAULT_CONCURRENCY = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class CrawlConfig:
    """How hard ``fetch`` pushes: by default the ``crawler`` preset's per-host cap and retries.

    Attributes:
        concurrency: URLs in flight in all.
        per_host: Requests in flight per host.
        rate: Requests started per second per host; ``None``: no pacing beyond ``per_host``.
        timeout: Seconds per URL, retries and waits included.
        retries: Retries per URL after the first attempt.
    """

    concurrency: int = DEFAULT_CONCURRENCY
    per_host: int = _CRAWLER.limit_per_host
    rate: float | None = None
    timeout: float = _CRAWLER.timeout.total or 180.0
    retries: int = _CRAWLER.policy.attempts - 1

    def __post_init__(self) -> None:
        for name in ("concurrency", "per_host"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.rate is not None and not self.rate > 0:
            raise ValueError(f"rate must be > 0, got {self.rate!r}")
        if not self.timeout > 0:
            raise ValueError(f"timeout must be > 0, got {self.timeout!r}")
        if not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {self.retries!r}")


def interleave_hosts(urls: Iterable[str]) -> list[str]:
    """Round-robin over hosts, keeping each host's order: a worker that takes the next URL
    rarely waits for a host that is already at its per-host cap."""
    by_host: dict[str, collections.deque[str]] = {}
    for url in urls:
        by_host.setdefault(host_of(url), collections.deque()).append(url)
    order: list[str] = []
    queues = list(by_host.values())
    while queues:
        order.extend(queue.popleft() for queue in queues)
        queues = [queue for queue in queues if queue]
    return order


class _Pacer:
    """Starts of requests to one host at least ``1/rate`` seconds apart."""

    def __init__(self, rate: float | None) -> None:
        self._interval = 0.0 if rate is None else 1.0 / rate
        self._next: dict[str, float] = {}

    async def wait(self, host: str, stop: asyncio.Event) -> bool:
        """Wait for ``host``'s next slot; returns ``False`` if ``stop`` was set meanwhile (the
        slots booked ahead add up: 16 workers at 0.2/s hold slots 75 s out, and a Ctrl-C must
        not wait for them)."""
        if not self._interval:
            return True
        now = time.monotonic()
        at = max(now, self._next.get(host, now))
        self._next[host] = at + self._interval
        if at > now:
            try:
                await asyncio.wait_for(stop.wait(), at - now)
            except asyncio.TimeoutError:
                return True
            return False
        return True


#: The retries of the URL the current task is fetching, counted by the session's on_retry hook
#: (which runs in that task).
_RETRIES: contextvars.ContextVar[list[int]] = contextvars.ContextVar("fetch_retries")


class Crawl:
    """One run over a list of URLs; counters for the progress display.

    Attributes:
        total: URLs to fetch in this run.
        finished: URLs with a record (fetched or failed).
        failed: URLs that failed.
        in_flight: URLs being fetched now.
        retries: Retries made so far.
    """

    def __init__(
        self,
        urls: list[str],
        store: Store,
        config: CrawlConfig,
        on_record: Callable[[Record], None],
    ) -> None:
        self.urls = interleave_hosts(urls)
        self.store = store
        self.config = config
        self.on_record = on_record
        self.total = len(urls)
        self.finished = 0
        self.failed = 0
        self.in_flight = 0
        self.retries = 0
        self._pacer = _Pacer(config.rate)

    def _session(self) -> aiohttp.ClientSession:
        config = self.config
        crawler, cap = _CRAWLER.timeout, config.timeout
        timeout = aiohttp.ClientTimeout(
            total=cap,
            connect=min(crawler.connect or cap, cap),
            sock_connect=min(crawler.sock_connect or cap, cap),
            sock_read=min(crawler.sock_read or cap, cap),
        )
        return resilient_session(
            preset="crawler",
            limit=max(config.concurrency, config.per_host),
            limit_per_host=config.per_host,
            policy=_CRAWLER.policy.replace(attempts=config.retries + 1),
            timeout=timeout,
            on_retry=self._on_retry,
        )

    def _on_retry(self, event: RetryEvent) -> None:
        self.retries += 1
        counter = _RETRIES.get(None)
        if counter is not None:
            counter[0] += 1

    async def run(self, stop: asyncio.Event) -> bool:
        """Fetch every URL, or until ``stop`` is set: then no URL is started, and those in
        flight finish (each bounded by the timeout) and are recorded. Returns whether it was
        stopped."""
        queue = collections.deque(self.urls)
        async with self._session() as session:

            async def worker() -> None:
                while queue and not stop.is_set():
                    url = queue.popleft()
                    if not await self._pacer.wait(host_of(url), stop) or stop.is_set():
                        return  # not started: a resumed run fetches it
                    self.in_flight += 1
                    try:
                        record = await self._fetch(session, url)
                    finally:
                        self.in_flight -= 1
                    self.finished += 1
                    self.failed += not record.ok
                    self.on_record(record)

            workers = [
                asyncio.create_task(worker())
                for _ in range(min(self.config.concurrency, len(queue)))
            ]
            try:
                await asyncio.gather(*workers)
            finally:
                for task in workers:
                    task.cancel()  # only on a way out by error: gather returned otherwise
                await asyncio.gather(*workers, return_exceptions=True)
        return stop.is_set()

    async def _fetch(self, session: aiohttp.ClientSession, url: str) -> Record:
        parsed = URL(url)
        retries = [0]
        token = _RETRIES.set(retries)
        started = time.monotonic()
        status: int | None = None
        headers: dict[str, str] = {}
        body = b""
        error: str | None = None
        try:
            async with session.get(parsed) as resp:
                status = resp.status
                headers = {h: resp.headers[h] for h in RECORDED_HEADERS if h in resp.headers}
                body = await resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            error = cause_name(exc)
            status = getattr(exc, "status", None) if isinstance(exc, ResilientError) else None
        finally:
            _RETRIES.reset(token)
        if error is None and status is not None and status >= 400:
            error = f"HTTP {status}"
        file = self.store.save_body(url, body) if error is None else None
        return Record(
            url=url,
            status=status,
            size=len(body),
            seconds=round(time.monotonic() - started, 6),
            attempts=retries[0] + 1,
            error=error,
            headers=headers,
            file=file,
        )
