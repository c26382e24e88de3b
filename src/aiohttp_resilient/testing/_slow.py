"""An endpoint whose answers are slow at random, rolled per request: a latency tail."""

from __future__ import annotations

import asyncio
import math
import random

from ._endpoint import Exchange

__all__ = ["SlowAnswers"]


class SlowAnswers:
    """Answers ``200`` with ``body``; ``share`` of the requests, rolled one by one with a seeded
    generator, wait ``seconds`` before anything of the response is written (the headers too),
    as a GC pause or a busy replica would make them. A request whose client went away while it
    waited gets nothing.

    Usage::

        server.serve("/", SlowAnswers(share=0.02, seconds=1.0, seed=1))

    Attributes:
        slow: Requests rolled slow so far.
    """

    def __init__(self, *, share: float, seconds: float, seed: int, body: bytes = b"ok") -> None:
        for name, value in (("share", share), ("seconds", seconds)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, got {value!r}")
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"share must be between 0 and 1, got {share!r}")
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"seconds must be a finite number >= 0, got {seconds!r}")
        self.share = share
        self.seconds = seconds
        self.body = body
        self.slow = 0
        self._rng = random.Random(seed)

    def received(self, conn: Exchange) -> None:
        """Nothing to keep of the body."""

    def respond(self, conn: Exchange) -> None:
        """Answer now, or after ``seconds`` if this request is rolled slow."""
        if self._rng.random() < self.share:
            self.slow += 1
            asyncio.get_running_loop().call_later(self.seconds, self._answer, conn)
        else:
            self._answer(conn)

    def _answer(self, conn: Exchange) -> None:
        if conn.transport is not None:  # else the client gave up (a hedge won, say)
            conn.write_simple(200, (), self.body)
