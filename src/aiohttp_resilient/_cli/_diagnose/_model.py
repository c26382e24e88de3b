"""What a diagnosis is made of: its settings, the steps it ran and the conclusions it drew."""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from yarl import URL

from ..._util._redact import redact_url

__all__ = ["Conclusion", "DiagnoseConfig", "Step", "Stopwatch", "Verdict", "diagnose_command"]

#: ``ok``: nothing wrong; ``info``: a fact worth knowing; ``warn``: a likely cause of failures;
#: ``fail``: the step itself failed; ``skip``: not run (an earlier step failed, or not asked for).
Verdict = Literal["ok", "info", "warn", "fail", "skip"]
#: The verdicts that make ``diagnose`` exit with status 1.
PROBLEMS: Final = frozenset({"warn", "fail"})

#: Seconds each network operation of a probe (resolve, connect, handshake, one request) may take.
DEFAULT_STEP_TIMEOUT: Final = 10.0
#: Requests of the repeat step: enough to see a failure rate of 10% with 88% odds.
DEFAULT_REPEAT: Final = 20
#: The most requests the repeat step sends, whatever ``--repeat`` says.
MAX_REPEAT: Final = 200
#: Seconds the keep-alive probe holds idle connections in all: under a minute, and above the
#: 5 s of uvicorn and Node.js and the 15-60 s of most load balancers (nginx's 75 s is past it).
DEFAULT_KEEPALIVE_MAX: Final = 45.0
#: The first idle gap of the keep-alive probe; each next gap is twice as long.
DEFAULT_KEEPALIVE_FIRST_GAP: Final = 1.0
#: The body probe doubles from this size.
BODY_PROBE_START: Final = 1024
#: Response bodies are read (and dropped) up to this many bytes: a 2 GB URL probed 20 times
#: must not be downloaded 20 times, nor held in memory once.
BODY_READ_CAP: Final = 1024 * 1024
#: The body probe sends no body larger than this unless ``--body-max`` says otherwise.
DEFAULT_BODY_MAX: Final = 64 * 1024 * 1024
#: Bisection stops once the limit is bracketed this tightly (accepted * this >= refused).
BODY_PROBE_PRECISION: Final = 1.25
#: Certificates that expire in fewer days than this get a warning.
EXPIRY_WARN_DAYS: Final = 14


@dataclass(frozen=True, slots=True, kw_only=True)
class DiagnoseConfig:
    """The settings of one ``diagnose`` run (each bounded by the command line)."""

    url: URL
    proxy: str | None = None
    ca_bundle: str | None = None
    timeout: float = DEFAULT_STEP_TIMEOUT
    repeat: int = DEFAULT_REPEAT
    keepalive_max: float = DEFAULT_KEEPALIVE_MAX
    keepalive_first_gap: float = DEFAULT_KEEPALIVE_FIRST_GAP
    probe_body: bool = False
    body_max: int = DEFAULT_BODY_MAX
    preset: Literal["default", "crawler", "api"] = "default"

    @property
    def host(self) -> str:
        return self.url.raw_host or ""

    @property
    def port(self) -> int:
        return self.url.port or (443 if self.url.scheme == "https" else 80)

    @property
    def tls(self) -> bool:
        return self.url.scheme == "https"


def diagnose_command(config: DiagnoseConfig, *options: str) -> str:
    """A ``diagnose`` command that measures the same path as ``config``: its URL, and its
    ``--proxy``, ``--ca-bundle``, ``--preset`` and ``--timeout`` where set (the URLs'
    credentials redacted), then ``options``."""
    words = ["aiohttp-resilient", "diagnose", redact_url(config.url)]
    if config.proxy is not None:
        words += ["--proxy", redact_url(config.proxy)]
    if config.ca_bundle is not None:
        words += ["--ca-bundle", config.ca_bundle]
    if config.preset != "default":
        words += ["--preset", config.preset]
    if config.timeout != DEFAULT_STEP_TIMEOUT:
        words += ["--timeout", f"{config.timeout:g}"]
    return shlex.join([*words, *options])


@dataclass(slots=True, kw_only=True)
class Step:
    """One step's result: what it found, in one line and as facts (for ``--json``).

    Attributes:
        name: ``resolve``, ``connect``, ``tls``, ``proxy``, ``http``, ``keep-alive``, ``repeat``
            or ``body-limit``.
        verdict: See :data:`Verdict`.
        seconds: How long the step took.
        summary: What it found, in words.
        facts: What it found, as JSON-ready values; the conclusions read them.
    """

    name: str
    verdict: Verdict
    seconds: float
    summary: str
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Conclusion:
    """A likely cause and what to change: ``fix`` is code or a setting, never "verify=False"."""

    step: str
    cause: str
    fix: str


class Stopwatch:
    """``with Stopwatch() as watch: ...; watch.seconds``: monotonic time of a block."""

    __slots__ = ("_start", "seconds")

    def __init__(self) -> None:
        self._start = 0.0
        self.seconds = 0.0

    def __enter__(self) -> Stopwatch:
        self._start = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self._start

    @property
    def elapsed(self) -> float:
        """Seconds since the block started (while it runs)."""
        return time.monotonic() - self._start
