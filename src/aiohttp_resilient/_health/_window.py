"""A sliding window kept as a ring of slots that expire one at a time (tower's TpsBudget, Polly's
rolling health metrics): the retry budget and the breaker's failure ratio both count in one."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["rotate"]


def rotate(
    rings: Sequence[list[int] | list[float]], index: int, end: float, width: float, now: float
) -> tuple[int, float]:
    """Move the window to ``now``: every slot that ended by then is emptied in all ``rings``
    (parallel lists of one length), oldest first, at most once each. Takes the current slot's
    ``index`` and ``end`` time (``now >= end``); returns the new ones. O(slots) at worst."""
    passed = int((now - end) // width) + 1
    size = len(rings[0])
    for _ in range(min(size, passed)):
        index = (index + 1) % size
        for ring in rings:
            ring[index] = 0
    return index, end + width * passed
