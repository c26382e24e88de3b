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
    in_flight: int
    retries: int


class Progress(Protocol):
    interval: float

    def update(self, counters: Counters) -> None: ...

    def close(self, counters: Counters) -> None: ...


def _rate_and_eta(counters: Counters, started: float) -> tuple[float, float | None]:
    elapsed = time.monotonic() - started
    rate = counters.finished / elapsed if elapsed > 0 else 0.0
    left = counters.total - counters.finished
    return rate, (left / rate if rate > 0 else None)


class _Lines:
    """``fetch: 1200/2000 done, 3 failed, 16 in flight, 98.5/s, ETA 8 s, 41 retries``."""

    def __init__(self, out: TextIO, interval: float) -> None:
        self.out = out
        self.interval = interval
        self._started = time.monotonic()

    def update(self, counters: Counters) -> None:
        rate, eta = _rate_and_eta(counters, self._started)
        self.out.write(
            f"fetch: {counters.finished}/{counters.total} done, {counters.failed} failed, "
            f"{counters.in_flight} in flight, {rate:.1f}/s, "
            f"ETA {'?' if eta is None else f'{eta:.0f} s'}, {counters.retries} retries\n"
        )
        self.out.flush()

    def close(self, counters: Counters) -> None:
        self.update(counters)


class _Bar:
    """A rich progress bar on stderr: done/total, failed, in flight, rate, ETA, retries."""

    interval = 0.1

    def __init__(self, rich_progress: Any, total: int) -> None:
        self._progress = rich_progress
        self._task = rich_progress.add_task(
            "fetch", total=total, failed=0, flight=0, retries=0, rate="0.0/s"
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
            rate=f"{_rate_and_eta(counters, self._started)[0]:.1f}/s",
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
                rich.TimeRemainingColumn(),
            )
            # On stderr, where the plain lines go too: stdout is for the report.
            console = Console(stderr=True)
            return _Bar(rich.Progress(*columns, console=console, transient=False), total)
    return _Lines(sys.stderr, plain_interval)
