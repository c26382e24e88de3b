"""Fault values the test server applies, and the command-line grammar that names them.

A :class:`Fault` is an immutable, hashable value (it is a key of the weight mappings given to
:meth:`FaultServer.random <aiohttp_resilient.testing.FaultServer.random>`). Build one with its
constructor functions, which validate their arguments::

    Fault.ok()
    Fault.status(503, retry_after=2)
    Fault.cut_body(size=1000, sent=100, how="rst")
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "KINDS",
    "SPEC_HELP",
    "Fault",
    "FaultSpecError",
    "parse_fault",
    "parse_fault_spec",
    "parse_fault_specs",
]

#: Every fault kind, which is also the ``action`` recorded for a request that got it.
KINDS = ("ok", "status", "fin", "rst", "partial_status", "cut_body", "hang", "drip")

# The server writes these itself; letting a fault override them would break the framing the
# fault is meant to control.
_RESERVED_HEADERS = frozenset({"content-length", "transfer-encoding"})


def _check_headers(headers: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    if headers is None:
        return ()
    items = tuple((str(k), str(v)) for k, v in headers.items())
    for name, value in items:
        if not name or any(c in name for c in ":\r\n \t"):
            raise ValueError(f"headers: invalid header name {name!r}")
        if "\r" in value or "\n" in value:
            raise ValueError(f"headers: header {name!r} has a line break in its value")
        if name.lower() in _RESERVED_HEADERS:
            raise ValueError(f"headers: {name!r} is set by the server and cannot be overridden")
    return items


def _check_number(
    field: str, value: float, *, minimum: float, integer: bool = False, strict: bool = False
) -> None:
    """Raise ValueError naming ``field`` unless ``value`` is a finite number >= ``minimum``
    (> with ``strict``). Also used by the server's options."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{field} must be a number, got {value!r}")
    if integer and not isinstance(value, int):
        raise ValueError(f"{field} must be an integer, got {value!r}")
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"{field} must be a finite number {relation} {minimum}, got {value!r}")


@dataclass(frozen=True, slots=True)
class Fault:
    """What the server does with one request.

    Use the constructor functions (:meth:`ok`, :meth:`status`, :meth:`fin`, :meth:`rst`,
    :meth:`partial_status`, :meth:`cut_body`, :meth:`hang`, :meth:`drip`); fields that do not
    apply to a kind keep their defaults. Instances are frozen and hashable.

    Example::

        server.script("/flaky", [Fault.rst(), Fault.status(503, retry_after=1), Fault.ok()])

    Attributes:
        kind: One of :data:`KINDS`; also recorded as the request's ``action``.
        code: Status code of the response (``ok``, ``status``, ``cut_body``, ``drip``).
        body: Response body (``ok``, ``status``, ``drip``).
        headers: Extra response headers, as ``(name, value)`` pairs.
        retry_after: ``Retry-After`` in seconds, or None for no header.
        retry_after_date: Send ``Retry-After`` as an IMF-fixdate instead of delta-seconds.
        size: ``Content-Length`` promised by ``cut_body``.
        sent: Body bytes ``cut_body`` writes before cutting.
        how: ``"fin"`` or ``"rst"``: how ``cut_body`` cuts.
        seconds: How long ``hang`` stays silent before closing.
        chunk: Bytes per write for ``drip``.
        interval: Seconds between ``drip`` writes.
    """

    kind: str
    code: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    retry_after: float | None = None
    retry_after_date: bool = False
    size: int = 0
    sent: int = 0
    how: str = "fin"
    seconds: float = 0.0
    chunk: int = 0
    interval: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {self.kind!r}")
        # Named `code`, not `status`: `Fault.status` is the constructor function.
        _check_number("code", self.code, minimum=200, integer=True)
        if self.code > 599:
            raise ValueError(f"code must be in 200..599, got {self.code!r}")
        if not isinstance(self.body, bytes):
            raise ValueError(f"body must be bytes, got {type(self.body).__name__}")
        if self.code in (204, 304) and self.body:
            raise ValueError(f"body must be empty for status {self.code}")
        if self.retry_after is not None:
            _check_number("retry_after", self.retry_after, minimum=0)
        _check_number("size", self.size, minimum=0, integer=True)
        _check_number("sent", self.sent, minimum=0, integer=True)
        if self.kind == "cut_body" and self.sent >= self.size:
            raise ValueError(f"sent must be < size ({self.size}) to cut the body, got {self.sent}")
        if self.how not in ("fin", "rst"):
            raise ValueError(f"how must be 'fin' or 'rst', got {self.how!r}")
        _check_number("seconds", self.seconds, minimum=0)
        _check_number("chunk", self.chunk, minimum=0, integer=True)
        if self.kind == "drip" and self.chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {self.chunk!r}")
        _check_number("interval", self.interval, minimum=0)

    def __repr__(self) -> str:
        # Only the fields that differ from the defaults: reprs show up in test failure output.
        parts = [
            f"{name}={getattr(self, name)!r}"
            for name, default in _DEFAULTS.items()
            if getattr(self, name) != default
        ]
        return f"Fault.{self.kind}({', '.join(parts)})"

    @classmethod
    def ok(
        cls, status: int = 200, body: bytes = b"ok", headers: Mapping[str, str] | None = None
    ) -> Fault:
        """A normal response with ``Content-Length``: ``Fault.ok(body=b"{}")``."""
        return cls("ok", code=status, body=body, headers=_check_headers(headers))

    @classmethod
    def status(
        cls,
        code: int,
        *,
        retry_after: float | None = None,
        retry_after_date: bool = False,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        """A response with any status code: ``Fault.status(503, retry_after=2)``.

        Args:
            code: The status code, 200..599.
            retry_after: Seconds for a ``Retry-After`` header; written as an integer when integral.
            retry_after_date: Write ``Retry-After`` as the IMF-fixdate ``retry_after`` seconds
                from the moment of the response (rounded up to the next whole second).
            body: Response body.
            headers: Extra response headers.
        """
        if retry_after_date and retry_after is None:
            raise ValueError("retry_after must be set when retry_after_date is True")
        return cls(
            "status",
            code=code,
            body=body,
            headers=_check_headers(headers),
            retry_after=retry_after,
            retry_after_date=retry_after_date,
        )

    @classmethod
    def fin(cls) -> Fault:
        """Close the connection (FIN) before any response byte.

        The aiohttp client raises ``ServerDisconnectedError``.
        """
        return cls("fin")

    @classmethod
    def rst(cls) -> Fault:
        """Reset the connection (RST, via ``SO_LINGER`` 0) before any response byte.

        The aiohttp client raises ``ClientOSError`` with errno ``ECONNRESET``.
        """
        return cls("rst")

    @classmethod
    def partial_status(cls) -> Fault:
        """Write ``b"HTTP/1.1 20"`` (half a status line), then close (FIN)."""
        return cls("partial_status")

    @classmethod
    def cut_body(
        cls, size: int = 1000, sent: int = 100, how: Literal["fin", "rst"] = "fin"
    ) -> Fault:
        """A 200 whose ``Content-Length`` is ``size`` but only ``sent`` bytes follow, then FIN/RST.

        The aiohttp client gets the response, then ``ClientPayloadError`` from ``resp.read()``.
        """
        return cls("cut_body", size=size, sent=sent, how=how)

    @classmethod
    def hang(cls, seconds: float) -> Fault:
        """Read the request, send nothing for ``seconds``, then close (FIN)."""
        return cls("hang", seconds=seconds)

    @classmethod
    def drip(cls, body: bytes = b"x" * 100, chunk: int = 10, interval: float = 0.01) -> Fault:
        """A 200 with the full ``Content-Length``; the body goes out ``chunk`` bytes at a time.

        The headers go out at once; each chunk follows ``interval`` seconds after the previous
        write, so the body takes ``ceil(len(body) / chunk) * interval`` seconds.
        """
        return cls("drip", body=body, chunk=chunk, interval=interval)


_DEFAULTS = {
    name: getattr(Fault("ok"), name) for name in Fault.__dataclass_fields__ if name != "kind"
}


class FaultSpecError(ValueError):
    """A command-line fault spec that does not parse; the message names the spec and the reason."""


#: The grammar of ``--fault`` specs, shown by ``aiohttp-resilient serve --help``.
SPEC_HELP = """\
fault spec grammar:  FAULT=PERCENT%   (each request draws at most one fault; the rest get 200 ok)
  fin                          close (FIN) before any response byte
  rst                          reset (RST) before any response byte
  partial                      send b"HTTP/1.1 20", then close
  cut[:SIZE[:SENT[:fin|rst]]]  promise SIZE body bytes (1000), send SENT (100), then FIN or RST
  hang:SECONDS                 read the request, stay silent SECONDS, then close
  drip[:SIZE[:CHUNK[:INTERVAL]]]  200 with SIZE bytes (100), CHUNK (10) every INTERVAL s (0.01)
  NNN[:retry-after=S][:retry-after-date=S]  status NNN (200..599), optional Retry-After
                                 as delta-seconds or as a date S seconds ahead
  ok                           a normal 200
examples: --fault fin=5%  --fault 503:retry-after=2=2%  --fault hang:2=1%
          --fault cut:1000:10:rst=1%
percentages of all --fault options must add up to at most 100%."""


def _number(spec: str, what: str, text: str, *, integer: bool) -> float:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise FaultSpecError(f"{spec!r}: {what} must be {kind}, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise FaultSpecError(f"{spec!r}: {what} must be >= 0, got {text!r}")
    return value


def _positional(spec: str, kind: str, args: list[str], limit: int) -> None:
    if len(args) > limit:
        raise FaultSpecError(f"{spec!r}: {kind} takes at most {limit} arguments, got {len(args)}")
    for arg in args:
        if "=" in arg:
            raise FaultSpecError(f"{spec!r}: {kind} takes positional arguments, got {arg!r}")


def _parse_fault(spec: str, text: str) -> Fault:
    kind, *args = text.split(":")
    if kind == "ok":
        _positional(spec, kind, args, 0)
        return Fault.ok()
    if kind in ("fin", "rst"):
        _positional(spec, kind, args, 0)
        return Fault.fin() if kind == "fin" else Fault.rst()
    if kind == "partial":
        _positional(spec, kind, args, 0)
        return Fault.partial_status()
    if kind == "cut":
        _positional(spec, kind, args, 3)
        size = int(_number(spec, "cut SIZE", args[0], integer=True)) if args else 1000
        sent = int(_number(spec, "cut SENT", args[1], integer=True)) if len(args) > 1 else 100
        how = args[2] if len(args) > 2 else "fin"
        if how not in ("fin", "rst"):
            raise FaultSpecError(f"{spec!r}: cut must end with 'fin' or 'rst', got {how!r}")
        if sent >= size:
            raise FaultSpecError(f"{spec!r}: cut SENT ({sent}) must be smaller than SIZE ({size})")
        return Fault.cut_body(size=size, sent=sent, how="rst" if how == "rst" else "fin")
    if kind == "hang":
        _positional(spec, kind, args, 1)
        if not args:
            raise FaultSpecError(f"{spec!r}: hang needs SECONDS, e.g. hang:2=1%")
        return Fault.hang(_number(spec, "hang SECONDS", args[0], integer=False))
    if kind == "drip":
        _positional(spec, kind, args, 3)
        size = int(_number(spec, "drip SIZE", args[0], integer=True)) if args else 100
        chunk = int(_number(spec, "drip CHUNK", args[1], integer=True)) if len(args) > 1 else 10
        interval = _number(spec, "drip INTERVAL", args[2], integer=False) if len(args) > 2 else 0.01
        if chunk < 1:
            raise FaultSpecError(f"{spec!r}: drip CHUNK must be >= 1")
        return Fault.drip(b"x" * size, chunk=chunk, interval=interval)
    if kind.isdigit():
        code = int(kind)
        if not 200 <= code <= 599:
            raise FaultSpecError(f"{spec!r}: status code must be in 200..599, got {code}")
        retry_after: float | None = None
        as_date = False
        for arg in args:
            key, sep, value = arg.partition("=")
            if not sep or key not in ("retry-after", "retry-after-date"):
                raise FaultSpecError(
                    f"{spec!r}: unknown status option {arg!r} "
                    "(expected retry-after=SECONDS or retry-after-date=SECONDS)"
                )
            if retry_after is not None:
                raise FaultSpecError(f"{spec!r}: Retry-After given twice")
            retry_after = _number(spec, key, value, integer=False)
            as_date = key == "retry-after-date"
        return Fault.status(code, retry_after=retry_after, retry_after_date=as_date)
    raise FaultSpecError(
        f"{spec!r}: unknown fault kind {kind!r} "
        "(expected fin, rst, partial, cut, hang, drip, ok or a status code like 503)"
    )


def parse_fault(text: str) -> Fault:
    """Parse one fault of the grammar, without a percentage: ``parse_fault("503:retry-after=1")``.

    Raises:
        FaultSpecError: The text does not parse; the message names it and says why.
    """
    return _parse_fault(text, text)


def parse_fault_spec(spec: str) -> tuple[Fault, float]:
    """Parse one ``FAULT=PERCENT%`` spec into the fault and its probability (0..1).

    Example: ``parse_fault_spec("503:retry-after=2=2%")`` is
    ``(Fault.status(503, retry_after=2), 0.02)``.

    Raises:
        FaultSpecError: The spec does not parse; the message names it and says why.
    """
    text, sep, weight = spec.rpartition("=")
    if not sep or not text:
        raise FaultSpecError(f"{spec!r}: expected FAULT=PERCENT%, e.g. fin=5%")
    if not weight.endswith("%"):
        raise FaultSpecError(f"{spec!r}: the weight must be a percentage like 5%, got {weight!r}")
    percent = _number(spec, "the percentage", weight[:-1], integer=False)
    if percent > 100:
        raise FaultSpecError(f"{spec!r}: the percentage must be at most 100%, got {weight}")
    return _parse_fault(spec, text), percent / 100


def parse_fault_specs(specs: list[str]) -> dict[Fault, float]:
    """Parse several specs into the weight mapping :meth:`FaultServer.random` takes.

    Raises:
        FaultSpecError: A spec does not parse, a fault is given twice, or the percentages add up
            to more than 100%.
    """
    weights: dict[Fault, float] = {}
    for spec in specs:
        fault, weight = parse_fault_spec(spec)
        if fault in weights:
            raise FaultSpecError(f"{spec!r}: this fault is already given by an earlier --fault")
        weights[fault] = weight
    total = sum(weights.values())
    # A little slack for float sums like 0.1 + 0.2; 100.0000001% is still a typo, not intent.
    if total > 1 + 1e-9:
        raise FaultSpecError(
            f"percentages sum to {total * 100:g}%, over 100%: {', '.join(map(repr, specs))}"
        )
    return weights
