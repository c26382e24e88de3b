"""FleetLimiter: a :class:`HostLimiter` whose cap holds across every process sharing a store.

An attempt takes a local slot (the process never asks the fleet for more than its cap), then a
lease from the store. Leases are renewed every third of their TTL while their requests run (a
long download keeps its slot), and given back when the slot is; the leases of a killed process
expire by themselves. One task per waiting host asks the store for all of that host's waiters at
once, woken when this process frees a slot or after a short backoff (never a hot loop); a freed
lease goes straight to the process's next waiter while it holds less than its share and the
fleet does not pace the host. The host's adaptive rate and ``Retry-After`` pauses live in the
store too: a lease may come with a delay before its send. When the store fails, waiters go at
once under the local cap (see :class:`StoreGuard`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Final

from .._health._breaker import BreakerPolicy
from .._health._limiter import HostKey, HostLimiter, format_host
from .._health._rate import AdaptiveRatePolicy
from .._retry._policy import DEFAULT_RETRY_AFTER_MAX
from .._util._timing import deadline_timer
from ._base import HealthStore
from ._breaker import BreakerNews, FleetOpenError, Outcome, Report, Verdict
from ._failover import StoreDownError, StoreGuard

__all__ = ["FleetLimiter"]

#: Seconds a waiting host's poller first waits between store calls, and at most.
POLL_FIRST: Final = 0.005
POLL_MAX: Final = 0.05
#: Seconds between tries to give back leases the store may hold for nobody (see ``_orphan``).
ORPHAN_RETRY: Final = 0.25
#: Seconds a host the fleet paced stays marked so after it went idle here (the store's next
#: answer for it says again), and between two sweeps of such hosts.
PACED_IDLE: Final = 60.0


class _Waiting:
    __slots__ = ("queue", "task", "wake")

    def __init__(self) -> None:
        self.queue: collections.deque[asyncio.Future[tuple[str, float] | None]] = (
            collections.deque()
        )
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class FleetLimiter(HostLimiter):
    """At most ``limit_per_host`` attempts in flight per host across every process sharing
    ``store`` (made by ``HostHealth(store=...)``; see :class:`HealthStore`).

    Args:
        limit_per_host: The most attempts in flight to one host, in this process and fleet-wide.
        store: The shared store.
        timeout: Seconds a store call may take before this process goes on alone.

    Raises:
        ValueError: ``limit_per_host`` is not a positive int, or ``store`` not a HealthStore.
    """

    __slots__ = (
        "__weakref__",  # the store keeps its limiters in a WeakSet
        "_closed_alone",
        "_contenders",
        "_leases",
        "_next_forget",
        "_orphaner",
        "_orphans",
        "_paced",
        "_paced_idle",
        "_probes",
        "_renewer",
        "_reports",
        "_seq",
        "_tasks",
        "_to_release",
        "_token",
        "_unleased",
        "_waiting",
        "breaker_policy",
        "guard",
        "rate_policy",
        "store",
    )

    def __init__(self, limit_per_host: int, store: HealthStore, *, timeout: float) -> None:
        super().__init__(limit_per_host)
        if not isinstance(store, HealthStore):
            raise ValueError(f"store must be a HealthStore, got {type(store).__name__}")
        self.store = store
        store._attach(self)
        self.guard = StoreGuard(store, timeout=timeout)
        # Lease members are unique across the fleet: this process's token and a counter.
        self._token = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._seq = itertools.count()
        self._leases: dict[HostKey, list[str]] = {}
        self._unleased: dict[HostKey, int] = {}
        self._waiting: dict[HostKey, _Waiting] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._renewer: asyncio.Task[None] | None = None
        #: Per host, the processes refused a slot lately (from the store's last answer).
        self._contenders: dict[HostKey, int] = {}
        #: Hosts the fleet paces now (rate or pause): their freed leases go back to the store.
        self._paced: set[HostKey] = set()
        #: Of those, the idle ones, by when they went idle (loop time); and the next sweep.
        self._paced_idle: dict[HostKey, float] = {}
        self._next_forget = 0.0
        self._to_release: dict[HostKey, list[str]] = {}
        #: Lease members the store may hold though no request here does (see ``_orphan``).
        self._orphans: dict[HostKey, list[str]] = {}
        self._orphaner: asyncio.Task[None] | None = None
        #: The adaptive rate, run fleet-wide in the store (``HostHealth`` moves it here from
        #: its policy when given a store); ``None``: no rate.
        self.rate_policy: AdaptiveRatePolicy | None = None
        #: The breaker, run fleet-wide through the store (``HostHealth`` sets it when given a
        #: store); ``None``: the store is not asked of breakers.
        self.breaker_policy: BreakerPolicy | None = None
        #: Per host, the lease member of this process's probe, and its last breaker report
        #: (an acquire waits for it, so that it never reads a state older than its own word).
        self._probes: dict[HostKey, str] = {}
        self._reports: dict[HostKey, asyncio.Task[None]] = {}
        #: Hosts whose breaker this process closed while the store was down: the fleet is told
        #: before this process's next lease (else the store's stale "open" would re-open it).
        # Closes this process's breaker made alone while the store was down, and when.
        self._closed_alone: dict[HostKey, float] = {}

    def __repr__(self) -> str:
        state = "up" if self.guard.up else "down"
        return f"<FleetLimiter limit_per_host={self.limit_per_host} store={state}>"

    def try_acquire(self, key: HostKey) -> int:
        # A lease needs a round trip: only while the store is down (and not due for a retry)
        # does a slot come without a wait.
        if self.guard.due():
            return 0
        held = HostLimiter.try_acquire(self, key)
        if held:
            self._unleased[key] = self._unleased.get(key, 0) + 1
        return held

    async def acquire(self, key: HostKey) -> None:
        await HostLimiter.acquire(self, key)
        try:
            lease = await self._lease(key)
        except BaseException:
            HostLimiter.release(self, key)
            raise
        if lease is None:
            self._unleased[key] = self._unleased.get(key, 0) + 1
            return
        member, delay = lease
        self._leases.setdefault(key, []).append(member)
        if self._renewer is None:
            self._renewer = self._spawn(self._renew_loop())
        if delay > 0:  # the fleet's adaptive rate: this send's turn on the shared schedule
            try:
                await asyncio.sleep(delay)
            except BaseException:
                self.release(key)
                raise

    def release(self, key: HostKey) -> None:
        unleased = self._unleased.get(key, 0)
        lease = None
        if unleased:  # the unleased go first: the fleet's count stays at or under the truth
            if unleased == 1:
                del self._unleased[key]
            else:
                self._unleased[key] = unleased - 1
        else:
            leases = self._leases.get(key)
            if leases:
                lease = leases.pop()
                if not leases:
                    del self._leases[key]
        HostLimiter.release(self, key)
        if lease is None:
            return
        waiting = self._waiting.get(key)
        if (
            waiting is not None
            and waiting.queue
            and key not in self._paced
            and self._under_share(key)
        ):
            self._hand(key, waiting, lease)  # straight to this process's next waiter
        else:
            self._give_back(key, lease)
        if not self._leases.get(key) and not waiting:
            # An idle host is forgotten, but for its pacing: it holds until the store's next
            # answer for the host says it is over (a hedge stands down meanwhile), or for
            # PACED_IDLE: a crawler's hosts throttled once do not pile up.
            self._contenders.pop(key, None)
            if key in self._paced or self._paced_idle:
                self._forget_paced(key)

    def _forget_paced(self, idle: HostKey) -> None:
        now = asyncio.get_running_loop().time()
        if idle in self._paced:
            self._paced_idle[idle] = now
        if now < self._next_forget:
            return
        self._next_forget = now + PACED_IDLE
        for key, since in list(self._paced_idle.items()):
            if now - since >= PACED_IDLE or key not in self._paced:
                del self._paced_idle[key]
                if key not in self._leases and key not in self._waiting:
                    self._paced.discard(key)

    def _under_share(self, key: HostKey) -> bool:
        # Whether this process holds fewer of the host's slots than its fair share among the
        # processes that were refused one lately (so that no process keeps them all).
        contenders = max(1, self._contenders.get(key, 1))
        return self.fleet_held(key) * contenders < self._live_limit(key)

    def refused(self, key: HostKey, throttled: bool, retry_after: float | None) -> None:
        # A 429 cuts the fleet's rate. A Retry-After holds every process until it ends (at
        # most the calling policy's retry_after_max, applied by the retry loop, and never past
        # the default's: a bogus header does not stop a fleet), except a 429's of a second or
        # less while the fleet's rate paces the host: a rate limiter's "Retry-After: 1" is its
        # next token, and the rate spreads the sends.
        host = format_host(key)
        self._paced.add(key)  # no lease goes from hand to hand past the fleet's schedule
        if throttled and self.rate_policy is not None:
            self._spawn(self._store_throttle(host, self.rate_policy))
            if retry_after is not None and retry_after <= 1.0:
                return
        if retry_after is not None and (pause := min(retry_after, DEFAULT_RETRY_AFTER_MAX)) > 0:
            self._spawn(self._store_pause(host, pause))

    async def _store_throttle(self, host: str, rate: AdaptiveRatePolicy) -> None:
        with contextlib.suppress(StoreDownError):  # the retry waits its backoff anyway
            await self.guard.run(self.store.throttle, host, rate)

    async def _store_pause(self, host: str, seconds: float) -> None:
        with contextlib.suppress(StoreDownError):  # this process's retry waits it out anyway
            await self.guard.run(self.store.pause, host, seconds)

    def paced(self, key: HostKey) -> bool:
        """Whether the fleet paces ``key``'s host now (its shared rate, or a pause)."""
        return key in self._paced

    def fleet_held(self, key: HostKey) -> int:
        """How many of ``key``'s slots this process holds under a lease."""
        return len(self._leases.get(key, ()))

    async def close(self) -> None:
        """Stop the renewals and pollers and give back every lease (the store stays open:
        ``store.close()`` calls this for every limiter on it)."""
        for waiting in list(self._waiting.values()):
            if waiting.task is not None:
                waiting.task.cancel()
        if self._renewer is not None:
            self._renewer.cancel()
        orphans = {key: list(members) for key, members in self._orphans.items()}
        if self._orphaner is not None:
            self._orphaner.cancel()
        pending = list(self._tasks)  # leases being given back: let them finish
        if pending:
            await asyncio.wait(pending, timeout=self.guard.timeout * 2)
        leases, self._leases = self._leases, {}
        for found in (orphans, self._orphans):  # and those of releases that failed meanwhile
            for key, members in found.items():
                leases.setdefault(key, []).extend(members)
        for key, members in leases.items():
            await self._store_call(self.store.release, key, members)  # else they expire

    # -- the breaker fleet-wide ------------------------------------------------------------

    async def acquire_probe(self, key: HostKey) -> None:
        """A slot for the call that comes to probe ``key``'s host when its breaker's break is
        over: granted with the fleet's one probe lease (the store down: a probe of this
        process alone).

        Raises:
            FleetOpenError: The fleet's breaker is still open (a probe is out elsewhere, or the
                break is longer there), or closed: the call goes back to its breaker.
        """
        await HostLimiter.acquire(self, key)
        try:
            news = await self._probe(key)
        except BaseException:
            HostLimiter.release(self, key)
            raise
        if news is None:  # the store is down: this process probes on its own
            self._unleased[key] = self._unleased.get(key, 0) + 1
            return
        if news.verdict is not Verdict.PROBE:
            HostLimiter.release(self, key)
            self._probes.pop(key, None)
            raise FleetOpenError(news)
        self._leases.setdefault(key, []).append(self._probes[key])
        if self._renewer is None:
            self._renewer = self._spawn(self._renew_loop())

    async def _probe(self, key: HostKey) -> BreakerNews | None:
        if not self.guard.due() or self.breaker_policy is None:
            return None
        member = self._probes[key] = self._member()  # named before it is asked: see abandon
        try:
            return await self.guard.run(
                self.store.breaker_probe,
                format_host(key),
                member,
                self._live_limit(key),
                self.breaker_policy.break_duration,
            )
        except StoreDownError:
            self._orphan(key, [member])  # the store may have granted it as it timed out
            return None

    def report_breaker(
        self,
        key: HostKey,
        outcome: Outcome,
        rnd: float,
        retry_after: float | None,
        reason: str,
        *,
        closed_at: float | None = None,
    ) -> None:
        """Tell the fleet what this process's breaker of ``key`` saw (sent by a task; a store
        that is down misses it, and each process goes on with its own breaker)."""
        policy = self.breaker_policy
        if policy is None:
            return
        member = "" if outcome is Outcome.OPENED else self._probes.pop(key, "")
        if outcome is not Outcome.PROBE_SUCCEEDED:
            self._closed_alone.pop(key, None)  # a close not yet told is stale now
        now = time.monotonic()
        ago = 0.0 if closed_at is None else max(now - closed_at, 1e-3)
        report = Report(member, outcome, rnd, retry_after, reason, ago)
        task = self._spawn(self._store_report(key, report, policy, closed_at or now))
        self._reports[key] = task
        task.add_done_callback(functools.partial(self._report_done, key))

    def _report_done(self, key: HostKey, task: asyncio.Task[None]) -> None:
        if self._reports.get(key) is task:
            del self._reports[key]

    async def _store_report(
        self, key: HostKey, report: Report, policy: BreakerPolicy, made_at: float
    ) -> None:
        try:
            await self.guard.run(self.store.breaker_report, format_host(key), report, policy)
        except StoreDownError:
            if report.outcome is Outcome.PROBE_SUCCEEDED:
                self._closed_alone.setdefault(key, made_at)
            return
        self._closed_alone.pop(key, None)

    # -- the store ---------------------------------------------------------------------------

    def _member(self) -> str:
        return f"{self._token}-{next(self._seq)}"

    def _live_limit(self, key: HostKey) -> int:
        host = self._hosts.get(key)
        return self.limit_per_host if host is None else host.limit

    async def _lease(self, key: HostKey) -> tuple[str, float] | None:
        # A lease for one attempt, or None when the store cannot give one now (it is down).
        # Every ask goes through the host's poller, so that the asks of one moment share one
        # store call (32 tasks starting at once make one round trip, not 32 connections).
        if not self.guard.due():
            return None
        waiting = self._waiting.get(key)
        if waiting is None:
            waiting = self._waiting[key] = _Waiting()
        future: asyncio.Future[tuple[str, float] | None] = (
            asyncio.get_running_loop().create_future()
        )
        waiting.queue.append(future)
        if waiting.task is None:
            waiting.task = asyncio.ensure_future(self._poll(key, waiting))
        try:
            return await future
        except BaseException:
            granted = future.done() and not future.cancelled() and future.exception() is None
            lease = future.result() if granted else None
            if lease is not None:
                self._give_back(key, lease[0])  # granted, then cancelled
            elif future in waiting.queue:
                waiting.queue.remove(future)
            raise

    async def _poll(self, key: HostKey, waiting: _Waiting) -> None:
        # Asks for every waiter of the host at once, oldest first, until none waits.
        host, delay = format_host(key), POLL_FIRST
        try:
            while True:
                while waiting.queue and waiting.queue[0].done():
                    waiting.queue.popleft()
                if not waiting.queue:
                    return
                members = [self._member() for f in waiting.queue if not f.done()]
                limit = self._live_limit(key)
                waiting.wake.clear()
                if (closed_at := self._closed_alone.pop(key, None)) is not None:
                    # The store is back: tell it first (a break it opened since stays).
                    self.report_breaker(
                        key, Outcome.PROBE_SUCCEEDED, 0.0, None, "", closed_at=closed_at
                    )
                if (report := self._reports.get(key)) is not None:
                    await asyncio.wait((report,))  # this process's word on the breaker first
                try:
                    granted, wait, paused, contenders, delays, broken = await self.guard.run(
                        self.store.acquire,
                        host,
                        self._token,
                        members,
                        limit,
                        self.rate_policy,
                        self.breaker_policy is not None,
                    )
                except StoreDownError:
                    # A call that timed out here may still run there once the store wakes.
                    self._orphan(key, members)
                    return  # the waiters go under the local cap, at once (below)
                if broken is not None:  # the fleet's breaker holds the host: every waiter
                    for future in waiting.queue:  # goes back to its breaker (HostHealth)
                        if not future.done():
                            future.set_exception(FleetOpenError(broken))
                    return
                self._contenders[key] = contenders
                self._paced_idle.pop(key, None)
                if delays or paused:  # paced by the fleet: every lease through the store
                    self._paced.add(key)
                elif granted:  # granted off any schedule: the host is not paced (a refusal
                    self._paced.discard(key)  # says nothing: its answer has no delays)
                for i, member in enumerate(members[:granted]):
                    self._hand(key, waiting, member, delays[i] if delays else 0.0)
                if granted:
                    delay = POLL_FIRST
                    continue
                if paused:  # the host's Retry-After, for the whole fleet: wait it out
                    pause = max(wait or 0.0, 0.001)
                else:
                    pause = delay if wait is None else min(delay, max(wait, 0.001))
                try:
                    async with deadline_timer(pause):
                        await waiting.wake.wait()
                except asyncio.TimeoutError:  # not the builtin TimeoutError on Python 3.10
                    pass
                delay = min(POLL_MAX, delay * 2)
        finally:
            # Also on an error of the poller's own, or close(): nobody is left waiting.
            for future in waiting.queue:
                if not future.done():
                    future.set_result(None)
            waiting.queue.clear()
            waiting.task = None
            if self._waiting.get(key) is waiting:
                del self._waiting[key]

    def _hand(self, key: HostKey, waiting: _Waiting, member: str, delay: float = 0.0) -> None:
        while waiting.queue:
            future = waiting.queue.popleft()
            if not future.done():
                future.set_result((member, delay))
                return
        self._give_back(key, member)  # its waiter left meanwhile

    def _give_back(self, key: HostKey, member: str) -> None:
        # The leases given back in one turn of the loop go in one store call.
        batch = self._to_release.get(key)
        if batch is None:
            self._to_release[key] = [member]
            self._spawn(self._flush_releases(key))
        else:
            batch.append(member)

    async def _flush_releases(self, key: HostKey) -> None:
        await asyncio.sleep(0)  # let the rest of this turn's releases join
        members = self._to_release.pop(key)
        if not await self._store_call(self.store.release, key, members):
            self._orphan(key, members)
        waiting = self._waiting.get(key)
        if waiting is not None:
            waiting.wake.set()

    async def _renew_loop(self) -> None:
        # Every third of the TTL while any lease is held; a renewal the store misses is retried
        # at the next turn (a lease outlives two missed renewals).
        period = self.store.lease_ttl / 3
        try:
            while self._leases:
                await asyncio.sleep(period)
                for key, members in list(self._leases.items()):
                    sent = list(members)
                    if not await self._store_call(self.store.renew, key, sent):
                        break
                    # A renewal takes again leases lost in an outage: one released while it
                    # was on its way must not come back held by nobody.
                    held = set(self._leases.get(key, ()))
                    if gone := [m for m in sent if m not in held]:
                        self._orphan(key, gone)
        finally:
            self._renewer = None

    def _orphan(self, key: HostKey, members: list[str]) -> None:
        # Leases the store may hold though no request of this process does: an acquire that
        # timed out here can still run in the store when it wakes (a SIGSTOPped Redis), and a
        # release it missed leaves its leases. Left to their TTL they would keep other processes
        # off the host for up to lease_ttl after the store is back, so they are given back (a
        # release of a lease that is not there does nothing) once the store answers, and once
        # more a moment later for an acquire still queued in it.
        self._orphans.setdefault(key, []).extend(members)
        if self._orphaner is None:
            self._orphaner = self._spawn(self._release_orphans())

    async def _release_orphans(self) -> None:
        # Until every orphan went back twice, or one lease TTL (then the store dropped them).
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.store.lease_ttl
        second: dict[HostKey, list[str]] = {}
        try:
            while (self._orphans or second) and loop.time() < give_up_at:
                await asyncio.sleep(ORPHAN_RETRY)
                if not self.guard.up:  # a call queued in a stopped store runs when it wakes:
                    give_up_at = loop.time() + self.store.lease_ttl  # its TTL starts then
                again, second = second, {}
                for key, members in again.items():
                    if not await self._store_call(self.store.release, key, members):
                        second[key] = members
                for key in list(self._orphans):
                    members = self._orphans.pop(key)
                    if await self._store_call(self.store.release, key, members):
                        second.setdefault(key, []).extend(members)
                    else:
                        self._orphans.setdefault(key, []).extend(members)
        finally:
            self._orphans.clear()
            self._orphaner = None

    async def _store_call(
        self,
        call: Callable[[str, Sequence[str]], Awaitable[None]],
        key: HostKey,
        members: list[str],
    ) -> bool:
        # Whether the store took the call (a failed one is the guard's to count and log).
        try:
            await self.guard.run(call, format_host(key), members)
        except StoreDownError:
            return False
        return True

    def _spawn(self, coro: Coroutine[object, object, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task
