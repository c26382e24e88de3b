"""``aiohttp-resilient serve``: a real subprocess hit by aiohttp, and usage errors in-process."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest

from aiohttp_resilient._cli._main import main
from aiohttp_resilient.testing._faults import Fault, FaultSpecError, parse_fault_spec

#: Bounds each wait on the subprocess: importing aiohttp takes a moment on a slow machine.
WAIT = 15


@contextlib.asynccontextmanager
async def serving(*args: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """``aiohttp-resilient serve ARGS`` in a subprocess: yields it and its first line; killed on
    the way out if it is still running."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aiohttp_resilient._cli._main",
        "serve",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        yield proc, (await asyncio.wait_for(proc.stdout.readline(), WAIT)).decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def terminate(proc: asyncio.subprocess.Process) -> list[str]:
    """SIGTERM, then the rest of stdout as lines; the exit status must be 0."""
    proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), WAIT)
    assert proc.returncode == 0, err.decode()
    return out.decode().splitlines()


async def test_serve_subprocess_serves_counts_and_stops_on_sigterm() -> None:
    """First line is the URL; requests get the drawn faults; SIGTERM prints a summary, exit 0."""
    args = ("--fault", "503:retry-after=2=50%", "--seed", "1", "--stats-interval", "0.05")
    async with serving(*args) as (proc, first):
        match = re.fullmatch(r"serving on (http://127\.0\.0\.1:\d+)\n", first)
        assert match, first
        statuses = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            for _ in range(20):
                async with session.get(match[1] + "/x") as resp:
                    statuses.append(resp.status)
                    if resp.status == 503:
                        assert resp.headers["Retry-After"] == "2"
        assert set(statuses) == {200, 503}
        lines = await terminate(proc)
    assert lines[0] == "fault seed: 1"
    summary = lines[-1]
    assert summary.startswith("summary: ")
    assert "requests=20 connections=1" in summary
    assert f"ok={statuses.count(200)} status={statuses.count(503)}" in summary


async def test_serve_outage_exempt_path_and_request_ids() -> None:
    """--outage from the start with a computed Retry-After; --exempt-path is served; ids that
    arrive twice are counted."""
    args = ("--outage", "0:30:503", "--compute-retry-after", "--exempt-path", "/h")
    async with serving(*args, "--request-id-header", "X-Id") as (proc, first):
        url = first.split()[-1]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            async with session.get(url + "/x") as resp:
                assert resp.status == 503
                assert resp.headers["Retry-After"] in ("30", "29")
            for _ in range(2):
                async with session.post(url + "/h", data=b"x", headers={"X-Id": "1"}) as resp:
                    assert resp.status == 200
        summary = (await terminate(proc))[-1]
    assert "requests=3 " in summary
    assert "shed:outage=1" in summary
    assert summary.endswith("ids_twice=1")


def test_serve_capacity_and_rate_limit_options(capsys: pytest.CaptureFixture[str]) -> None:
    """The overload and rate-limit options build a server (its summary shows in_service)."""
    argv = ["serve", "--duration", "0.1", "--capacity", "2", "--service-time-ms", "10"]
    argv += ["--over-capacity", "rst", "--rate-limit", "100", "--over-rate", "503:retry-after=1"]
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("in_service=0")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--capacity", "2"], "needs --service-time-ms"),
        (["--rate-burst", "5"], "needs --rate-limit"),
        (["--outage", "1"], "expected AT:SECONDS[:FAULT]"),
        (["--outage", "1:0"], "must be > 0"),
        (["--outage", "1:2:bogus"], "unknown fault kind 'bogus'"),
        (["--outage", "1:2", "--outage", "2:1"], "outages overlap"),
        (["--over-rate", "429=5%"], "invalid fault"),
    ],
)
def test_bad_health_options_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Health options that cannot work together, or do not parse, are usage errors."""
    assert main(["serve", "--duration", "0.1", *argv]) == 2
    assert message in capsys.readouterr().err


def test_serve_stops_after_duration(capsys: pytest.CaptureFixture[str]) -> None:
    """--duration ends the run by itself: URL line, count lines, summary, exit 0."""
    assert main(["serve", "--duration", "0.3", "--stats-interval", "0.1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"serving on http://127\.0\.0\.1:\d+", lines[0])
    assert any(re.fullmatch(r"\[\s*0\.\ds\] requests=0 connections=0", line) for line in lines)
    assert re.fullmatch(r"summary: 0\.\ds requests=0 connections=0", lines[-1])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("bogus=5%", "unknown fault kind 'bogus'"),
        ("fin", "expected FAULT=PERCENT%"),
        ("fin=5", "must be a percentage"),
        ("fin=x%", "the percentage must be a number"),
        ("fin=150%", "at most 100%"),
        ("hang=1%", "hang needs SECONDS"),
        ("hang:soon=1%", "hang SECONDS must be a number"),
        ("cut:10:20=1%", "must be smaller than SIZE"),
        ("cut:100:10:both=1%", "'fin' or 'rst'"),
        ("99=1%", "200..599"),
        ("503:retry=2=1%", "unknown status option 'retry=2'"),
        ("fin:now=1%", "at most 0 arguments"),
    ],
)
def test_bad_spec_exits_2_naming_it(
    spec: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad --fault spec: exit status 2, and stderr names the spec and the reason."""
    assert main(["serve", "--fault", spec, "--duration", "0.1"]) == 2
    err = capsys.readouterr().err
    assert f"invalid fault spec {spec!r}" in err
    assert message in err


def test_percentages_over_100_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Specs that are fine alone but sum past 100% are refused together."""
    assert main(["serve", "--fault", "fin=60%", "--fault", "rst=41%", "--duration", "0.1"]) == 2
    assert "percentages sum to 101%, over 100%" in capsys.readouterr().err


def test_same_fault_twice_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Giving one fault twice is a mistake worth naming."""
    assert main(["serve", "--fault", "fin=1%", "--fault", "fin=2%", "--duration", "0.1"]) == 2
    assert "'fin=2%': this fault is already given" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [["serve", "--port", "-1"], ["serve", "--duration", "0"], ["serve", "--seed", "x"], []],
)
def test_bad_options_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Out-of-range numbers and a missing command are usage errors."""
    assert main(argv) == 2
    assert "error:" in capsys.readouterr().err


def test_help_exits_0_and_documents_the_grammar(capsys: pytest.CaptureFixture[str]) -> None:
    """serve --help shows the fault spec grammar."""
    assert main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    assert "fault spec grammar" in out
    assert "503:retry-after=2=2%" in out


@pytest.mark.parametrize(
    ("spec", "fault", "weight"),
    [
        ("fin=5%", Fault.fin(), 0.05),
        ("rst=1%", Fault.rst(), 0.01),
        ("partial=1%", Fault.partial_status(), 0.01),
        ("503:retry-after=2=2%", Fault.status(503, retry_after=2), 0.02),
        ("429:retry-after=1=0.5%", Fault.status(429, retry_after=1), 0.005),
        (
            "503:retry-after-date=30=1%",
            Fault.status(503, retry_after=30, retry_after_date=True),
            0.01,
        ),
        ("cut=1%", Fault.cut_body(), 0.01),
        ("cut:500:10:rst=1%", Fault.cut_body(500, 10, "rst"), 0.01),
        ("hang:2=1%", Fault.hang(2), 0.01),
        ("drip:50:5:0.1=1%", Fault.drip(b"x" * 50, 5, 0.1), 0.01),
        ("ok=100%", Fault.ok(), 1.0),
    ],
)
def test_spec_grammar(spec: str, fault: Fault, weight: float) -> None:
    """Each documented spec form parses to the matching Fault and probability."""
    got_fault, got_weight = parse_fault_spec(spec)
    assert got_fault == fault
    assert got_weight == pytest.approx(weight)


def test_spec_error_is_a_value_error() -> None:
    """FaultSpecError subclasses ValueError."""
    with pytest.raises(ValueError, match="unknown fault kind"):
        parse_fault_spec("nope=1%")
    assert issubclass(FaultSpecError, ValueError)
