"""Progress of a crawl: a rich progress bar on a terminal when the ``[cli]`` extra is installed,
else a plain line every few seconds (logs and pipes get lines, not redraws)."""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol, TextIO

__all__ = ["Counters", "Progress", "make_progress"]


class Counters(Protocol):
    """What the display reads (a :class:`Crawl`)."""

    total: int
    finished: int
    failed: int
    retries: int

    @property
    def in_flight(self) -> int: ...

    def waiting_hosts(self) -> dict[str, int]:
        """Hosts with URLs left that wait now, per reason."""
        ...

    def eta(self) -> float | None:
        """Seconds left, the waiting hosts accounted for."""
        ...


class Progress(Protocol):
    interval: float

    def update(self, counters: Counters) -> None: ...

    def close(self, counters: Counters) -> None: ...


def _rate(counters: Counters, started: float) -> float:
    elapsed = time.monotonic() - started
    return counters.finished / elapsed if elapsed > 0 else 0.0


def _waiting(counters: Counters) -> str:
    """``2 hosts waiting (1 breaker, 1 rate)``, or ``""``."""
    waiting = counters.waiting_hosts()
    if not waiting:
        return ""
    total = sum(waiting.values())
    reasons = ", ".join(f"{n} {why}" for why, n in sorted(waiting.items()))
    return f"{total} host{'s' if total > 1 else ''} waiting ({reasons})"


def _eta(counters: Counters) -> str:
    eta = counters.eta() if counters.finished < counters.total else 0.0
    return "?" if eta is None else f"{eta:.0f} s"


class _Lines:
    """``fetch: 1200/2000 done, 3 failed, 16 in flight, 98.5/s, ETA 8 s, 41 retries, 1 host
    waiting (1 rate)``."""

    def __init__(self, out: TextIO, interval: float) -> None:
        self.out = out
        self.interval = interval
        self._started = time.monotonic()

    def update(self, counters: Counters) -> None:
        waiting = _waiting(counters)
        self.out.write(
            f"fetch: {counters.finished}/{counters.total} done, {counters.failed} failed, "
            f"{counters.in_flight} in flight, {_rate(counters, self._started):.1f}/s, "
            f"ETA {_eta(counters)}, {counters.retries} retries"
            f"{', ' + waiting if waiting else ''}\n"
        )
        self.out.flush()

    def close(self, counters: Counters) -> None:
        self.update(counters)


class _Bar:
    """A rich progress bar on stderr: done/total, failed, in flight, retries, rate, the ETA
    (the waiting hosts accounted for) and the hosts waiting."""

    interval = 0.1

    def __init__(self, rich_progress: Any, total: int) -> None:
        self._progress = rich_progress
        self._task = rich_progress.add_task(
            "fetch", total=total, failed=0, flight=0, retries=0, rate="0.0/s", eta="?", waiting=""
        )
        self._started = time.monotonic()
        rich_progress.start()

    def update(self, counters: Counters) -> None:
        self._progress.update(
            self._task,
            completed=counters.finished,
            failed=counters.failed,
            flight=counters.in_flight,
            retries=counters.retries,
            rate=f"{_rate(counters, self._started):.1f}/s",
            eta=f"ETA {_eta(counters)}",
            waiting=_waiting(counters),
        )

    def close(self, counters: Counters) -> None:
        self.update(counters)
        self._progress.stop()


def make_progress(total: int, *, plain_interval: float, bar: bool | None = None) -> Progress:
    """A bar when stderr is a terminal and rich is importable (``bar=None``), else lines."""
    if bar is None:
        bar = sys.stderr.isatty()
    if bar:
        try:
            from rich import progress as rich
            from rich.console import Console
        except ImportError:
            pass
        else:
            columns = (
                rich.TextColumn("fetch"),
                rich.BarColumn(),
                rich.MofNCompleteColumn(),
                rich.TextColumn(
                    "{task.fields[failed]} failed, {task.fields[flight]} in flight, "
                    "{task.fields[retries]} retries"
                ),
                rich.TextColumn("{task.fields[rate]}"),
                rich.TextColumn("{task.fields[eta]}"),
                rich.TextColumn("{task.fields[waiting]}"),
            )
            # On stderr, where the plain lines go too: stdout is for the report.
            console = Console(stderr=True)
            return _Bar(rich.Progress(*columns, console=console, transient=False), total)
    return _Lines(sys.stderr, plain_interval)
