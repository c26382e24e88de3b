"""Argparse ``type=`` converters shared by the command-line tools."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["number"]


def number(
    kind: Callable[[str], float],
    *,
    minimum: float,
    maximum: float | None = None,
    strict: bool = False,
) -> Callable[[str], float]:
    """An argparse ``type`` for finite numbers >= ``minimum`` (> with ``strict``), and
    <= ``maximum`` when given; ``kind`` is ``int`` or ``float``."""

    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            name = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {name}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if value < minimum or (strict and value == minimum):
            relation = ">" if strict else ">="
            raise argparse.ArgumentTypeError(f"{text!r} must be {relation} {minimum:g}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{text!r} must be <= {maximum:g}")
        return value

    return convert
