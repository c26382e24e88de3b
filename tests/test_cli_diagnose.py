"""``aiohttp-resilient diagnose``: a subprocess against loopback servers that make the faults each
step must find; the server counts what it was sent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import sys
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from _certs import self_signed, server_context
from _helpers import closed_port, run_cli, wait_listening
from _squid import needs_squid, squid_proxy
from aiohttp_resilient._cli._diagnose._http import probe_body_limit, probe_http, probe_repeat
from aiohttp_resilient._cli._diagnose._keepalive import _verdict, probe_keepalive
from aiohttp_resilient._cli._diagnose._model import DiagnoseConfig, Step
from aiohttp_resilient._cli._diagnose._report import conclude
from aiohttp_resilient.testing import Fault, FaultServer

# Python 3.10's asyncio leaves the server side's TLS transport unclosed when a handshake fails
# (the old sslproto never closes the app transport it made; 3.11's rewrite does): its __del__
# warns in the test process, though nothing of the library's is involved.
_TLS_HANDSHAKE_LEAK_310 = pytest.mark.filterwarnings(
    "ignore:unclosed transport <asyncio.sslproto._SSLProtocolTransport:ResourceWarning",
    "ignore:Exception ignored in. <function _SSLProtocolTransport.__del__"
    ":pytest.PytestUnraisableExceptionWarning",
)

#: Quick bounds for every run: the probes' defaults are for real servers.
QUICK = ("--json", "--timeout", "5", "--repeat", "5")


async def diagnose(url: object, *args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = await run_cli("diagnose", str(url), *QUICK, *args)
    assert code in (0, 1), err
    assert not err, err  # the give-ups are the probe's findings, not log noise
    return code, json.loads(out)


def step(report: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [s for s in report["steps"] if s["name"] == name]
    return found


def fixes(report: dict[str, Any]) -> str:
    return "\n".join(c["fix"] for c in report["conclusions"])


async def test_keepalive_timeout_measured_within_a_second() -> None:
    """A server closing idle connections after 2 s: found within 1 s of that, above the pool's
    4 s it is a problem, and the fix names keepalive_timeout; only GETs were sent."""
    async with FaultServer(idle_close=2.0) as server:
        code, report = await diagnose(
            server.url, "--keepalive-max", "8", "--keepalive-first-gap", "0.5"
        )
    keepalive = step(report, "keep-alive")
    assert keepalive["verdict"] == "warn"
    assert abs(keepalive["facts"]["server_idle_timeout"] - 2.0) < 1.0
    assert code == 1
    suggested = keepalive["facts"]["suggested_keepalive_timeout"]
    assert 0 < suggested < 2.0
    assert f"resilient_session(keepalive_timeout={suggested:g})" in fixes(report)
    assert {r.method for r in server.records} == {"GET"}


async def test_clean_server_exits_zero() -> None:
    """No idle close within the probe's bound, no faults: every step ok, exit status 0; gaps
    too short to compare with the pool's 4 s are a fact (info), not a problem."""
    async with FaultServer() as server:
        code, report = await diagnose(server.url, "--keepalive-max", "1.2")
    assert [s["name"] for s in report["steps"]] == [
        "resolve",
        "connect",
        "http",
        "keep-alive",
        "repeat",
    ]
    keepalive = step(report, "keep-alive")
    assert {s["verdict"] for s in report["steps"] if s is not keepalive} == {"ok"}
    assert keepalive["verdict"] == "info"
    assert keepalive["facts"]["server_idle_timeout"] is None
    assert 0.9 <= keepalive["facts"]["held"] <= 1.2
    assert (code, report["problem"], report["conclusions"]) == (0, False, [])


async def test_intermittent_fin_is_found_and_counted() -> None:
    """30% FIN: the repeat step sees intermittent ServerDisconnectedError, one attempt per
    request (the server saw exactly the requests sent: http's one and repeat's 20)."""
    async with FaultServer() as server:
        server.random(None, {Fault.fin(): 0.3}, seed=7)
        code, report = await diagnose(server.url, "--no-keepalive", "--repeat", "20")
    repeat = step(report, "repeat")["facts"]
    assert repeat["intermittent"] is True
    assert set(repeat["causes"]) == {"ServerDisconnectedError"}
    fins = server.action_counts["fin"]
    http_failed = step(report, "http")["verdict"] == "fail"
    assert repeat["failures"] == fins - http_failed
    assert server.count() == 21
    assert code == 1
    assert "Idempotency-Key" in fixes(report)


@pytest.mark.parametrize("action", ["413", "rst"])
async def test_body_limit_found_within_a_factor_of_two(action: str) -> None:
    """--probe-body: the largest accepted body brackets the server's 100 kB limit within a
    factor of two, for a 413 and for a reset; a bounded number of POSTs."""
    limit = 100_000
    async with FaultServer(max_body=limit, max_body_action=action) as server:  # type: ignore[arg-type]
        _, report = await diagnose(server.url, "--no-keepalive", "--repeat", "1", "--probe-body")
    facts = step(report, "body-limit")["facts"]
    assert limit / 2 <= facts["accepted"] <= limit < facts["refused"] <= 2 * limit
    assert (facts["refused_with"] == "413") is (action == "413")
    posts = server.count(method="POST")
    assert posts == facts["requests"] <= 30
    assert step(report, "body-limit")["verdict"] == ("info" if action == "413" else "warn")
    assert "keep request bodies under" in fixes(report)


async def test_body_probe_is_opt_in() -> None:
    """Without --probe-body nothing but GET reaches the server."""
    async with FaultServer() as server:
        await diagnose(server.url, "--no-keepalive")
    assert server.count(method="POST") == 0
    assert server.count() == server.count(method="GET") > 0


@_TLS_HANDSHAKE_LEAK_310
async def test_self_signed_certificate(tmp_path: Path) -> None:
    """A self-signed certificate: explained, the fix is ca_bundle=, never turning verification
    off; with --ca-bundle pointing at it, TLS verifies and nothing is wrong."""
    cert = self_signed(tmp_path)
    async with FaultServer(ssl=server_context(cert)) as server:
        code, report = await diagnose(server.url, "--no-keepalive")
        tls = step(report, "tls")
        assert (code, tls["verdict"], tls["facts"]["cause"]) == (1, "fail", "self-signed")
        assert tls["facts"]["subject"] == "commonName=localhost"
        assert 'ca_bundle="/path/to/ca.pem"' in fixes(report)
        assert "verify=False" not in json.dumps(report)
        assert "ssl=False" not in json.dumps(report)
        assert server.count() == 0  # the failed handshake sent nothing
        code, report = await diagnose(server.url, "--ca-bundle", str(cert), "--no-keepalive")
    tls = step(report, "tls")
    assert (code, tls["verdict"]) == (0, "ok")
    assert tls["facts"]["version"] in ("TLSv1.2", "TLSv1.3")
    assert 85 <= tls["facts"]["days_to_expiry"] <= 90


@_TLS_HANDSHAKE_LEAK_310
async def test_expired_certificate(tmp_path: Path) -> None:
    """An expired certificate, even when trusted: expired, 10 days ago; only the operator can
    renew it."""
    cert = self_signed(tmp_path, expired=True)
    async with FaultServer(ssl=server_context(cert)) as server:
        code, report = await diagnose(server.url, "--ca-bundle", str(cert), "--no-keepalive")
    tls = step(report, "tls")
    assert (code, tls["facts"]["cause"]) == (1, "expired")
    assert -11 <= tls["facts"]["days_to_expiry"] <= -10
    assert "renew" in fixes(report)


@contextlib.asynccontextmanager
async def dropping_proxy(*, drop_every: int) -> AsyncIterator[tuple[str, list[str]]]:
    """A forward HTTP proxy on loopback that closes every ``drop_every``-th connection after
    reading the request, and relays the others; yields its URL and the request lines it saw."""
    seen: list[str] = []

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, OSError):
            writer.close()
            return
        seen.append(head.split(b"\r\n", 1)[0].decode())
        if len(seen) % drop_every == 0:
            writer.close()
            return
        target = head.split(b" ")[1].decode()
        host, port = target.split("/")[2].split(":")
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            # The origin is down: the proxy answers itself, as RFC 9209 has it.
            writer.write(
                b"HTTP/1.1 502 Bad Gateway\r\nServer: test-proxy/1.0\r\n"
                b"Via: 1.1 test-proxy/1.0\r\nProxy-Status: test-proxy; error=connection_refused"
                b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            writer.close()
            return
        up_writer.write(head)
        await asyncio.gather(relay(reader, up_writer), relay(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        server.close()
        await server.wait_closed()


async def test_proxy_that_drops_connections() -> None:
    """Through a proxy that drops every other connection, against a healthy server: the proxy
    step blames the proxy (direct requests all succeed) and says how to bypass it."""
    async with FaultServer() as server, dropping_proxy(drop_every=2) as (proxy, seen):
        code, report = await diagnose(server.url, "--proxy", proxy, "--no-keepalive")
    facts = step(report, "proxy")["facts"]
    assert facts["proxy_fails_more"] is True
    assert facts["direct"]["failures"] == 0
    assert facts["via_proxy"]["failures"] == facts["via_proxy"]["requests"] // 2
    assert all(line.startswith("GET http://127.0.0.1:") for line in seen)
    assert code == 1
    assert "NO_PROXY=127.0.0.1" in fixes(report)


async def test_text_output_prints_each_step_and_the_conclusion() -> None:
    """Without --json: a header line, one line per step with its verdict, then the conclusion."""
    async with FaultServer(idle_close=0.5) as server:
        code, out, _ = await run_cli(
            "diagnose",
            str(server.url),
            "--repeat",
            "2",
            "--keepalive-max",
            "3",
            "--keepalive-first-gap",
            "0.2",
        )
    lines = out.splitlines()
    assert lines[0] == f"diagnose {server.url}"
    assert [line.split()[0] for line in lines[1:6]] == [
        "resolve",
        "connect",
        "http",
        "keep-alive",
        "repeat",
    ]
    assert " warn " in lines[4]
    assert lines[6] == "conclusion:"
    assert code == 1


async def test_usage_errors() -> None:
    """A URL that is not http(s), an unbounded --repeat and a port out of range are refused
    with status 2; a URL's credentials are not printed."""
    code, _, err = await run_cli("diagnose", "ftp://example.org/")
    assert code == 2
    assert "is not an http:// or https:// URL" in err
    code, _, err = await run_cli("diagnose", "http://127.0.0.1:1/", "--repeat", "100000")
    assert code == 2
    assert "--repeat" in err
    code, _, err = await run_cli("diagnose", "http://127.0.0.1:70000/")
    assert code == 2
    assert "argument URL: 'http://127.0.0.1:70000/': the port is out of range (1-65535)" in err
    assert "_http_url" not in err
    code, _, err = await run_cli("diagnose", "http://user:s3cret@127.0.0.1:70000/?key=k3y")
    assert code == 2
    assert "the port is out of range (1-65535)" in err
    assert "s3cret" not in err
    assert "k3y" not in err


async def test_body_limit_not_confused_by_intermittent_drops() -> None:
    """A server that resets bodies over 100 kB and also drops 20% of all requests: the drops
    of small bodies are tried again, so the limit found is still within a factor of two."""
    limit = 100_000
    async with FaultServer(max_body=limit, max_body_action="rst") as server:
        server.random(None, {Fault.fin(): 0.2}, seed=5)
        _, report = await diagnose(server.url, "--no-keepalive", "--repeat", "1", "--probe-body")
    facts = step(report, "body-limit")["facts"]
    assert limit / 2 <= facts["accepted"] <= limit < facts["refused"] <= 2 * limit
    assert server.action_counts["fin"] > 0


async def test_resolve_through_aiodns_and_each_family() -> None:
    """``localhost`` resolves through aiodns (the hosts file: no DNS traffic) to 127.0.0.1;
    connect tries each family found and reaches IPv4, where the server listens."""
    async with FaultServer() as server:
        url = f"http://localhost:{server.port}/"
        _, report = await diagnose(url, "--no-keepalive", "--repeat", "1")
    resolve = step(report, "resolve")
    assert resolve["verdict"] == "ok"
    assert "127.0.0.1" in resolve["facts"]["addresses"]
    families = step(report, "connect")["facts"]["families"]
    assert families["IPv4"]["error"] is None
    assert set(families) == {"IPv6" if ":" in a else "IPv4" for a in resolve["facts"]["addresses"]}
    assert server.count() == 2  # http's GET and repeat's one


async def test_a_server_that_never_answers_is_a_finding_not_a_crash() -> None:
    """Every HTTP step against a server that reads requests and never answers (direct and as a
    proxy, GET and POST) ends in the total timeout: a failed step, not a traceback. On 3.10
    aiohttp raises asyncio.TimeoutError there, which is not the builtin TimeoutError."""
    async with FaultServer() as server:
        for path in ("/", str(server.url_for("/"))):  # direct, and as a proxy is asked
            server.set_default(path, Fault.hang(30))
        code, out, err = await run_cli(
            "diagnose",
            str(server.url_for("/")),
            "--json",
            "--timeout",
            "0.3",
            "--repeat",
            "2",
            "--no-keepalive",
            "--probe-body",
            "--proxy",
            str(server.url),
        )
        assert code == 1, err
        assert not err, err
        report = json.loads(out)
    for name in ("http", "repeat", "proxy"):
        assert step(report, name)["verdict"] in ("fail", "warn"), name
    assert step(report, "http")["facts"]["error"] == "TimeoutError"
    assert step(report, "repeat")["facts"]["causes"] == {"TimeoutError": 2}
    assert step(report, "proxy")["facts"]["direct"]["failures"] == 2
    body = step(report, "body-limit")
    assert body["verdict"] == "warn"
    assert body["summary"].startswith("not measured")
    assert body["facts"]["refused"] is None  # no limit of "about 0 bytes"
    assert server.count(method="POST") == body["facts"]["requests"] == 3
    assert "body-limit" not in {c["step"] for c in report["conclusions"]}


async def test_body_probe_goes_through_the_proxy() -> None:
    """With --proxy the POSTs go through it as the GETs do (they went direct), and the limit
    behind it is found."""
    limit = 100_000
    async with (
        FaultServer(max_body=limit, max_body_action="413") as server,
        dropping_proxy(drop_every=10**6) as (proxy, seen),
    ):
        _, report = await diagnose(
            server.url, "--no-keepalive", "--repeat", "1", "--probe-body", "--proxy", proxy
        )
    facts = step(report, "body-limit")["facts"]
    assert limit / 2 <= facts["accepted"] <= limit < facts["refused"] <= 2 * limit
    posts = [line for line in seen if line.startswith("POST ")]
    assert len(posts) == server.count(method="POST") == facts["requests"]


async def test_body_probe_measures_nothing_when_nothing_was_sent() -> None:
    """POSTs that could not even connect say nothing about bodies: not measured, no limit."""
    config = DiagnoseConfig(url=URL(f"http://127.0.0.1:{closed_port()}/"), timeout=5.0)
    found = await probe_body_limit(config)
    assert found.summary.startswith("not measured: no POST could be sent")
    assert found.facts["not_sent"] == 3
    assert conclude([found], config) == []


@pytest.mark.parametrize("status", [302, 401, 503])
async def test_body_probe_does_not_count_a_redirect_401_or_5xx_as_accepted(status: int) -> None:
    """Answers that say nothing about the size (a redirect, not followed; credentials wanted)
    or fail every POST (a 5xx) are not "accepted": the probe says it measured nothing."""
    async with FaultServer() as server, FaultServer() as elsewhere:
        headers = {"Location": str(elsewhere.url_for("/"))} if status == 302 else {}
        server.set_default("/", Fault.status(status, headers=headers))
        config = DiagnoseConfig(url=server.url_for("/"), timeout=5.0, body_max=64 * 1024)
        found = await probe_body_limit(config)
    assert found.summary.startswith("not measured"), found.summary
    assert found.facts.get("refused") is None
    assert found.verdict != "ok"
    assert conclude([found], config) == []
    assert elsewhere.count() == 0  # the redirect was not followed
    assert server.count(method="POST") == (3 if status == 503 else 1)


@contextlib.asynccontextmanager
async def served(*args: str) -> AsyncIterator[URL]:
    """``aiohttp-resilient serve ARGS`` in another process (so that its memory is not the
    probe's): yields its URL."""
    import re

    from _helpers import start_cli

    proc = await start_cli("serve", *args)
    try:
        assert proc.stdout is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        match = re.fullmatch(r"serving on (http://127\.0\.0\.1:\d+)\n", first)
        assert match, first
        yield URL(match[1] + "/")
    finally:
        proc.kill()
        await proc.communicate()


async def peak_memory(probe: Awaitable[Step]) -> tuple[Step, int]:
    """What ``probe`` returns and the peak of memory allocated while it ran."""
    import tracemalloc

    tracemalloc.start()
    try:
        found = await probe
        return found, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def test_body_probe_streams_its_bodies() -> None:
    """Bodies up to 16 MiB go out without being allocated whole: the probe's peak memory stays
    well under the largest body."""
    body_max = 16 * 1024 * 1024
    async with served() as url:
        config = DiagnoseConfig(url=url, timeout=10.0, body_max=body_max)
        found, peak = await peak_memory(probe_body_limit(config))
    assert found.facts["accepted"] == body_max  # every size was sent and accepted
    assert peak < body_max / 4, peak


@pytest.mark.parametrize("name", ["http", "repeat", "keep-alive"])
async def test_a_large_body_is_not_downloaded_whole(name: str) -> None:
    """A 64 MiB response: the http and repeat steps read 1 MiB of it and say so; the
    keep-alive step, which needs a connection whose response was read to its end, measures
    with HEAD. The probe's peak memory stays a few MiB."""
    size = 64 * 1024 * 1024
    async with served("--fault", f"drip:{size}:65536:0=100%") as url:
        config = DiagnoseConfig(
            url=url, timeout=10.0, repeat=3, keepalive_max=1.2, keepalive_first_gap=0.5
        )
        if name == "keep-alive":
            probe = probe_keepalive(config, "127.0.0.1")
        else:
            probe = (probe_http if name == "http" else probe_repeat)(config)
        found, peak = await peak_memory(probe)
    assert peak < 8 * 1024 * 1024, peak
    assert found.verdict in ("ok", "info"), found.summary
    if name == "keep-alive":
        assert found.facts["method"] == "HEAD"
        assert found.facts["held"] > 0  # the connection was reused after idle gaps
        assert "probed with HEAD" in found.summary
    else:
        assert "not read past 1048576 B" in found.summary


@needs_squid
async def test_keepalive_through_squid_is_the_proxys_idle_timeout() -> None:
    """squid closing idle client connections after 1 s, in front of a server that keeps them:
    the keep-alive step measures the client's connection to the proxy (about 1 s, by the
    proxy), not the direct path, and the conclusion names the proxy."""
    async with FaultServer() as server, squid_proxy() as proxy:
        code, report = await diagnose(
            server.url, "--proxy", proxy, "--keepalive-max", "6", "--keepalive-first-gap", "0.5"
        )
    keepalive = step(report, "keep-alive")
    assert keepalive["facts"]["hop"] == "proxy"
    assert keepalive["verdict"] == "warn", keepalive
    # squid keeps whole seconds and looks for idle connections about once a second: the probe
    # sees the close 0.1-2.5 s into a gap, under the pool's 4 s either way (direct, the server
    # keeps them for good: no close at all).
    measured = keepalive["facts"]["server_idle_timeout"]
    assert 0 < measured < keepalive["facts"]["client_keepalive_timeout"], keepalive
    assert keepalive["summary"].startswith("the proxy closes idle connections after")
    assert code == 1
    (found,) = [c for c in report["conclusions"] if c["step"] == "keep-alive"]
    assert found["cause"].startswith("the proxy closes idle connections")
    assert "before the proxy does" in found["fix"]


@needs_squid
async def test_origin_down_behind_squid_is_the_proxys_answer() -> None:
    """The origin refuses connections; squid answers 503 with X-Squid-Error: ERR_CONNECT_FAIL
    111. The http step and the conclusion say the proxy made that answer, and why; nothing
    says the server answered 503."""
    async with squid_proxy() as proxy:
        code, report = await diagnose(
            f"http://127.0.0.1:{closed_port()}/", "--proxy", proxy, "--no-keepalive"
        )
    reason = "ERR_CONNECT_FAIL 111: the proxy could not connect to the origin: connection refused"
    http = step(report, "http")
    assert http["facts"]["answered_by_proxy"] == reason
    assert "made by the proxy itself" in http["summary"]
    causes = "\n".join(c["cause"] for c in report["conclusions"])
    assert f"the proxy, not the origin, answered 5/5 requests: {reason} (x5)" in causes
    assert "the server answered" not in causes
    assert code == 1


async def test_origin_down_behind_our_proxy_is_the_proxys_answer() -> None:
    """The same with the project's own proxy, whose 502 carries RFC 9209's Proxy-Status."""
    async with dropping_proxy(drop_every=1000) as (proxy, seen):
        _, report = await diagnose(
            f"http://127.0.0.1:{closed_port()}/", "--proxy", proxy, "--no-keepalive"
        )
    reason = (
        "Proxy-Status error=connection_refused: the proxy could not connect to the origin: "
        "connection refused"
    )
    assert step(report, "http")["facts"]["answered_by_proxy"] == reason
    causes = "\n".join(c["cause"] for c in report["conclusions"])
    assert "the proxy, not the origin, answered 5/5" in causes
    assert "the server answered" not in causes
    assert len(seen) >= 6  # http and repeat went through it


async def test_keepalive_goes_through_our_proxy() -> None:
    """Through the project's proxy, the keep-alive GETs are sent to the proxy in absolute
    form (the path the pool will use), and the close it relays is the proxy hop's."""
    async with FaultServer(idle_close=1.0) as server, dropping_proxy(drop_every=1000) as relay:
        proxy, seen = relay
        _, report = await diagnose(
            server.url, "--proxy", proxy, "--keepalive-max", "4", "--keepalive-first-gap", "0.5"
        )
    keepalive = step(report, "keep-alive")
    assert keepalive["facts"]["hop"] == "proxy"
    assert 0.8 <= keepalive["facts"]["server_idle_timeout"] <= 1.5
    # The proxy logs each connection's first request line: 5 of the proxy step, 1 of http, at
    # least 1 of repeat (pooled), and the keep-alive step's own connection.
    proxied = sum(1 for line in seen if line.startswith(f"GET {server.url}"))
    assert proxied >= 5 + 1 + 1 + 1


@contextlib.asynccontextmanager
async def python_http_server(folder: Path) -> AsyncIterator[URL]:
    """``python -m http.server`` (HTTP/1.0, closes every connection) on a free loopback port,
    stopped by its PID."""
    port = closed_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "http.server",
        "--bind",
        "127.0.0.1",
        "--directory",
        str(folder),
        str(port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_listening(port)
        yield URL(f"http://127.0.0.1:{port}/")
    finally:
        proc.terminate()
        await proc.wait()


async def test_http10_server_is_reported_as_such_not_as_stale_connections(
    tmp_path: Path,
) -> None:
    """python -m http.server answers HTTP/1.0 and closes each connection: nothing goes stale.
    The keep-alive step says so (info), there is no force_close advice, and the exit is 0."""
    (tmp_path / "index.html").write_text("hello")
    async with python_http_server(tmp_path) as url:
        code, report = await diagnose(url, "--keepalive-max", "3")
    keepalive = step(report, "keep-alive")
    assert keepalive["verdict"] == "info"
    assert "does not keep connections (it answers HTTP/1.0" in keepalive["summary"]
    assert "force_close" not in json.dumps(report)
    assert code == 0, report


async def test_keepalive_measurement_survives_random_drops() -> None:
    """A server closing idle connections after 2 s that also drops the first request and the
    one after the first gap (a random fault would): the probe tries again on new connections
    and still finds 2 s by the server's FIN, with no private name in any message."""
    async with FaultServer(idle_close=2.0) as server:
        server.script("/", [Fault.fin(), Fault.ok(), Fault.fin()])
        config = DiagnoseConfig(
            url=server.url, timeout=5.0, keepalive_max=8.0, keepalive_first_gap=1.0
        )
        found = await probe_keepalive(config, "127.0.0.1")
    assert found.facts["detected_by"] == "FIN", found
    assert found.facts["server_idle_timeout"] == pytest.approx(2.0, abs=0.3)
    assert found.facts["retried"] == 2
    (conclusion,) = conclude([found], config)
    assert "keepalive_timeout=1.5" in conclusion.fix
    assert "_" + "Closed" not in found.summary + conclusion.cause


async def test_a_gap_that_failed_twice_brackets_without_contradiction() -> None:
    """A server that drops every request after the first on a connection (no FIN while idle):
    the bracket starts at 0, so there is no keepalive_timeout to suggest and no force_close
    claim (the server did keep the connection for a response): the fix is a command that
    measures under the first gap, and it runs as printed."""
    async with FaultServer() as server:
        server.script("/", [Fault.ok(), Fault.fin(), Fault.ok(), Fault.fin()])
        config = DiagnoseConfig(
            url=server.url, timeout=5.0, keepalive_max=3.0, keepalive_first_gap=0.2
        )
        found = await probe_keepalive(config, "127.0.0.1")
        assert found.facts["bracket"] == [0.0, pytest.approx(0.3, abs=0.05)], found
        (conclusion,) = conclude([found], config)
        assert "force_close" not in conclusion.fix
        assert "between 0.00 and 0.30 s" in conclusion.cause
        command = conclusion.fix.split("measure under the first gap: ", 1)[1].split(";")[0]
        code, out, err = await run_cli(*shlex.split(command)[1:], "--repeat", "1", "--json")
    assert code in (0, 1), err
    assert step(json.loads(out), "keep-alive")["facts"]["requests"] >= 2


async def test_keepalive_compare_hint_runs_as_printed() -> None:
    """A hold too short to compare with the pool's 4 s prints a command that compares; run as
    printed (the installed aiohttp-resilient on PATH), it holds one 4 s gap and says ok."""
    async with FaultServer() as server:
        _, report = await diagnose(server.url, "--keepalive-max", "0.6")
        keepalive = step(report, "keep-alive")
        assert keepalive["verdict"] == "info"
        command = keepalive["summary"].split("; to compare: ", 1)[1]
        assert command == keepalive["facts"]["compare_command"]
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
        proc = await asyncio.create_subprocess_exec(
            *shlex.split(command), stdout=asyncio.subprocess.PIPE, env=env
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out
    # One 4 s gap, as long as the pool's idle time: measured 4.00 s, or a little more when
    # the loop is late (a loaded machine), and judged ok either way.
    line = re.search(r"^  keep-alive .*$", out.decode(), re.MULTILINE)
    assert line is not None, out
    assert re.search(r"  ok +an idle connection survived gaps up to 4\.\d\d s", line[0]), line[0]


def test_printed_diagnose_commands_measure_the_same_path() -> None:
    """The keep-alive step's compare command and the "measure under the first gap" fix carry
    the run's --proxy (its password redacted), --ca-bundle, --preset and --timeout: run as
    printed, they measure the path that was measured."""
    config = DiagnoseConfig(
        url=URL("http://127.0.0.1:9/"),
        proxy="http://u:pw@127.0.0.1:8/",
        ca_bundle="/tmp/ca.pem",
        preset="crawler",
        timeout=3.0,
    )
    compare = _verdict({"server_idle_timeout": None, "held": 0.5}, 1.0, config)
    warn = Step(
        name="keep-alive",
        verdict="warn",
        seconds=1.0,
        summary="",
        facts={"bracket": [0.0, 0.3], "measured": "x", "client_keepalive_timeout": 4.0},
    )
    (conclusion,) = conclude([warn], config)
    first_gap = conclusion.fix.split("measure under the first gap: ", 1)[1].split(";")[0]
    for command in (compare.facts["compare_command"], first_gap):
        assert shlex.split(command)[:11] == [
            "aiohttp-resilient",
            "diagnose",
            "http://127.0.0.1:9/",
            "--proxy",
            "http://REDACTED@127.0.0.1:8/",
            "--ca-bundle",
            "/tmp/ca.pem",
            "--preset",
            "crawler",
            "--timeout",
            "3",
        ]
        assert "pw" not in command
