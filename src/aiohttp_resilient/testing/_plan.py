"""The fault plan: which :class:`Fault` each request gets, from scripts, random rules, defaults.

The order, first match wins: the next item of the path's script, else the path's random rule,
else the global random rule (``path=None``), else the path's default, else the server's default.
"""

from __future__ import annotations

import collections
import math
import random
from collections.abc import Iterable, Mapping

from ._faults import Fault

__all__ = ["FaultPlan", "RandomRule"]


class RandomRule:
    """Draws fault ``f`` with probability ``weights[f]``, nothing with the rest, from ``seed``."""

    __slots__ = ("_rng", "_table")

    def __init__(self, weights: Mapping[Fault, float], seed: int) -> None:
        total = 0.0
        table: list[tuple[float, Fault]] = []
        for fault, weight in weights.items():
            if not isinstance(fault, Fault):
                raise ValueError(f"weights: keys must be Fault, got {fault!r}")
            if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                raise ValueError(f"weights: weight of {fault!r} must be a number, got {weight!r}")
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"weights: weight of {fault!r} must be >= 0, got {weight!r}")
            total += weight
            table.append((total, fault))
        # Slack for float sums such as 0.1 + 0.2 + 0.7.
        if total > 1 + 1e-9:
            raise ValueError(f"weights: probabilities sum to {total:g}, more than 1")
        self._rng = random.Random(seed)
        self._table = table

    def draw(self) -> Fault | None:
        r = self._rng.random()
        for threshold, fault in self._table:
            if r < threshold:
                return fault
        return None


class FaultPlan:
    """Scripts, random rules and defaults per path; :meth:`choose` applies them.

    Args:
        default: The fault for requests nothing else decides.
    """

    __slots__ = ("_defaults", "_random", "_scripts", "default")

    def __init__(self, default: Fault) -> None:
        if not isinstance(default, Fault):
            raise ValueError(f"default must be a Fault, got {default!r}")
        self.default = default
        self._scripts: dict[str, collections.deque[Fault]] = {}
        self._random: dict[str | None, RandomRule] = {}
        self._defaults: dict[str, Fault] = {}

    def script(self, path: str, faults: Iterable[Fault]) -> None:
        """Queue ``faults`` for ``path`` (appended to what is queued)."""
        items = list(faults)
        for fault in items:
            if not isinstance(fault, Fault):
                raise ValueError(f"faults: items must be Fault, got {fault!r}")
        self._scripts.setdefault(path, collections.deque()).extend(items)

    def random(self, path: str | None, weights: Mapping[Fault, float], *, seed: int) -> None:
        """Replace the random rule of ``path`` (of every path when ``None``)."""
        self._random[path] = RandomRule(weights, seed)

    def set_default(self, path: str, fault: Fault) -> None:
        """Use ``fault`` for requests to ``path`` that no script or random rule decides."""
        if not isinstance(fault, Fault):
            raise ValueError(f"fault must be a Fault, got {fault!r}")
        self._defaults[path] = fault

    def clear(self) -> None:
        """Drop scripts and random rules; defaults stay."""
        self._scripts.clear()
        self._random.clear()

    def choose(self, path: str) -> Fault:
        """The fault for the next request to ``path`` (a script item is used up)."""
        if self._scripts:
            queue = self._scripts.get(path)
            if queue:
                return queue.popleft()
        if self._random:
            rule = self._random.get(path) or self._random.get(None)
            if rule is not None:
                fault = rule.draw()
                if fault is not None:
                    return fault
        if self._defaults:
            return self._defaults.get(path, self.default)
        return self.default
