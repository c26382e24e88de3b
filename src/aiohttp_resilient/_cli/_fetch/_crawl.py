"""The crawl: URLs fetched through one ``resilient_session(preset="crawler")``, at most
``concurrency`` at a time and ``per_host`` per host, paced to ``rate`` per host, each outcome
handed to ``on_record`` as it ends. The per-host scheduler (``_schedule``) picks each next URL
from a host that can take it now. A stop (Ctrl-C) sends nothing more at once (no new URL, no
retry, no probe: the connector refuses) and gives the requests in flight ``STOP_GRACE`` seconds
to end; those recorded are kept, a resumed run fetches the rest."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import aiohttp
from yarl import URL

from ..._exceptions import ResilientError, cause_name
from ..._health._hosts import HostHealth
from ..._retry._policy import DEFAULT_MAX_BUFFER_SIZE
from ..._session import PRESETS, resilient_session, session_health
from ..._transfers._download import DEFAULT_CHUNK_SIZE, download
from ..._transport._connector import TrackingConnector
from ._schedule import HostQueue, Scheduler, estimate_eta
from ._store import RECORDED_HEADERS, Record, Store, safe_relative_path

__all__ = ["DEFAULT_CONCURRENCY", "LARGE_BODY", "STOP_GRACE", "Crawl", "CrawlConfig"]

_CRAWLER = PRESETS["crawler"]
#: URLs in flight at once in all (Scrapy's CONCURRENT_REQUESTS is 16).
DEFAULT_CONCURRENCY = 16
#: Seconds the requests in flight get to end after the first Ctrl-C; those still going are then
#: stopped, unrecorded (a resumed run fetches them), so that a stop is bounded whatever hangs.
STOP_GRACE = 1.0
#: Bodies announced (``Content-Length``) larger than this go to their file through
#: :func:`download`: streamed in chunks, resumed with a range after a cut, never whole in
#: memory. The policy's buffer limit: larger bodies are not read inside the retry loop anyway.
LARGE_BODY = DEFAULT_MAX_BUFFER_SIZE


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

    def command_options(self) -> list[str]:
        """The ``fetch`` options that give this config, only those that differ from the
        defaults (``["--rate", "0.1"]``): what a printed resume command carries. Each field is
        named as its option (``per_host``: ``--per-host``)."""
        words: list[str] = []
        for setting in dataclasses.fields(self):
            value = getattr(self, setting.name)
            if value != setting.default:
                words += [f"--{setting.name.replace('_', '-')}", str(value)]
        return words


#: Causes that say the host was not reached (nothing answered): such a URL gets one more pass.
UNREACHED: Final = frozenset({"ClientConnectorError", "CircuitOpenError"})

#: What went on the wire for the URL the current task is fetching: [connections asked for];
#: the connector's on_connect runs in that task.
_COUNTS: contextvars.ContextVar[list[int]] = contextvars.ContextVar("fetch_counts")


class Crawl:
    """One run over a list of URLs; counters for the progress display.

    Attributes:
        total: URLs to fetch in this run.
        finished: URLs with a record (fetched or failed).
        failed: URLs that failed.
        retries: Retries of the URLs finished so far (as the report counts them).
        scheduler: The per-host queues (hosts waiting, and why).
    """

    def __init__(
        self,
        urls: list[str],
        store: Store,
        config: CrawlConfig,
        on_record: Callable[[Record], None],
        shared_store: str | None = None,
    ) -> None:
        self.store = store
        #: ``--store``: the Redis URL whose per-host slots and pauses this run shares.
        self.shared_store = shared_store
        self.config = config
        self.on_record = on_record
        self.total = len(urls)
        self.finished = 0
        self.failed = 0
        self.retries = 0
        self.scheduler = Scheduler(urls, config.per_host, config.rate)
        self.started = time.monotonic()
        self._running: set[asyncio.Task[None]] = set()
        #: URLs whose host could not be reached, waiting for their second pass: their record.
        self._first_pass: dict[str, Record] = {}
        self._health: HostHealth | None = None

    @property
    def in_flight(self) -> int:
        """URLs being fetched now."""
        return len(self._running)

    def waiting_hosts(self) -> dict[str, int]:
        """Hosts with URLs left that wait now, per reason (``breaker``, ``rate``, ``slots``)."""
        return dict(self.scheduler.waiting())

    def eta(self) -> float | None:
        """Seconds left: the slowest host's, each host at its own pace so far (a host paced
        by a rate at that rate; one that refuses at once, none), else the whole crawl's."""
        return estimate_eta(self.scheduler, self._health, self.finished, self.started)

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
            store=self.shared_store,
        )

    async def run(self, stop: asyncio.Event) -> bool:
        """Fetch every URL, or until ``stop`` is set: then nothing more is sent, and those in
        flight get ``STOP_GRACE`` seconds to end and be recorded. Returns whether it was
        stopped."""
        wake = asyncio.Event()
        stopper = asyncio.create_task(_set_when(stop, wake))
        async with self._session() as session:
            self._health = session_health(session)
            connector = session.connector
            assert isinstance(connector, TrackingConnector)
            connector.on_connect = functools.partial(_count_or_refuse, stop)
            try:
                await self._dispatch(session, stop, wake)
            finally:
                stopper.cancel()
                await self._wind_down(stop)
        return stop.is_set()

    async def _dispatch(
        self, session: aiohttp.ClientSession, stop: asyncio.Event, wake: asyncio.Event
    ) -> None:
        # Hand each free worker a URL from a host that can take it now; else sleep until a URL
        # ends (a slot frees), the earliest waiting host may go, or the stop.
        scheduler, running = self.scheduler, self._running

        def ended(task: asyncio.Task[None]) -> None:
            running.discard(task)
            if not task.cancelled() and (error := task.exception()) is not None:
                errors.append(error)  # not a URL's failure (those are records): the run's
            wake.set()

        errors: list[BaseException] = []
        while (scheduler.pending or running) and not stop.is_set() and not errors:
            wake.clear()
            free = self.config.concurrency - len(running)
            chosen, nap = scheduler.take(self._health, time.monotonic(), free)
            for url, queue in chosen:
                task = asyncio.create_task(self._one(session, url, queue))
                running.add(task)
                task.add_done_callback(ended)
            if chosen and free > len(chosen):
                continue  # look again at once: the hosts may have more to give
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wake.wait(), None if nap == float("inf") else nap)
        if errors:
            raise errors[0]  # a body that could not be written, say: the run ends on it

    async def _wind_down(self, stop: asyncio.Event) -> None:
        # Stopped: the requests in flight end within STOP_GRACE or are cancelled, unrecorded.
        # Left by an error: all are cancelled at once.
        running = list(self._running)
        if running and stop.is_set():
            await asyncio.wait(running, timeout=STOP_GRACE)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    async def _one(self, session: aiohttp.ClientSession, url: str, queue: HostQueue) -> None:
        try:
            record = await self._fetch(session, url)
        finally:
            self.scheduler.done(queue)
        earlier = self._first_pass.pop(url, None)
        if earlier is not None:  # its second pass: the record tells both
            record.attempts += earlier.attempts
            record.seconds = round(record.seconds + earlier.seconds, 6)
        elif record.error in UNREACHED and self.config.retries:
            # The host could not be reached (down, restarting): one more pass once the
            # scheduler finds it able to take a request, rather than a loss for a blip that
            # outlasted this URL's attempts. Nothing was sent to a host that answered nothing.
            # Not with --retries 0: the user asked for no attempt beyond the first.
            self._first_pass[url] = record
            self.scheduler.put_back(queue, url)
            return
        self.finished += 1
        self.failed += not record.ok
        self.retries += record.retries
        self.on_record(record)

    async def _fetch(self, session: aiohttp.ClientSession, url: str) -> Record:
        counts = [0]
        token = _COUNTS.set(counts)
        started = time.monotonic()
        result = _Result()
        try:
            await self._get(session, url, result)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            result.error = cause_name(exc)
            if isinstance(exc, ResilientError):
                result.status = getattr(exc, "status", None)
        finally:
            _COUNTS.reset(token)
        if result.error is None and result.status is not None and result.status >= 400:
            result.error = f"HTTP {result.status}"
        file = result.file
        if result.error is None and file is None:
            file = self.store.save_body(url, result.body)
        return Record(
            url=url,
            status=result.status,
            size=result.size,
            seconds=round(time.monotonic() - started, 6),
            attempts=counts[0],
            error=result.error,
            headers=result.headers,
            file=file,
        )

    async def _get(self, session: aiohttp.ClientSession, url: str, result: _Result) -> None:
        # A body announced larger than LARGE_BODY, to be kept, leaves this response unread and
        # goes through download() (one more request: its own, with ranges after a cut).
        large = False
        async with session.get(URL(url)) as resp:
            result.status = resp.status
            result.headers = {h: resp.headers[h] for h in RECORDED_HEADERS if h in resp.headers}
            if resp.status >= 400:
                return
            if (resp.content_length or 0) <= LARGE_BODY:
                result.body = await resp.read()
                result.size = len(result.body)
                return
            if self.store.out is None:  # records only: counted as it streams, not kept
                async for chunk in resp.content.iter_chunked(DEFAULT_CHUNK_SIZE):
                    result.size += len(chunk)
                return
            large = True
            resp.close()
        if large:
            assert self.store.out is not None
            relative = safe_relative_path(url)
            path = self.store.out / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            done = await download(session, url, path)
            result.size, result.file = done.size, relative


@dataclass(slots=True)
class _Result:
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    size: int = 0
    error: str | None = None
    file: str | None = None


def _count_or_refuse(stop: asyncio.Event, req: aiohttp.ClientRequest) -> None:
    # The connector's on_connect: each attempt that goes on the wire is counted for its URL;
    # after the stop none goes (the task ends as cancelled: not recorded, fetched on resume).
    if stop.is_set():
        raise asyncio.CancelledError
    counts = _COUNTS.get(None)
    if counts is not None:
        counts[0] += 1


async def _set_when(stop: asyncio.Event, wake: asyncio.Event) -> None:
    await stop.wait()
    wake.set()
