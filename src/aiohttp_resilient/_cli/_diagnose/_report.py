"""From the steps' findings to conclusions (the guide's table of causes: which setting fixes
each), and both renderings: text as the steps run, and one JSON document."""

from __future__ import annotations

import json
from typing import Any, TextIO

from ._model import PROBLEMS, Conclusion, DiagnoseConfig, Step, diagnose_command

__all__ = ["conclude", "step_line", "write_conclusions", "write_json"]

#: Errors of a connection dropped mid-request (FIN, RST, body cut).
_DROPS = frozenset(
    {"ServerDisconnectedError", "ClientOSError", "ClientConnectionResetError", "ClientPayloadError"}
)
_IDEMPOTENCY = (
    "resilient_session() already retries idempotent requests (GET, HEAD, OPTIONS, PUT, DELETE) "
    "after a drop, RetryPolicy(attempts=5) by default; make a POST retryable with an "
    'Idempotency-Key: session.post(url, json=body, headers={"Idempotency-Key": str(uuid.uuid4())})'
)


def step_line(step: Step) -> str:
    """``  keep-alive   2004.1 ms  warn  the server closes ...``."""
    return f"  {step.name:<11} {step.seconds * 1000:9.1f} ms  {step.verdict:<5} {step.summary}"


def conclude(steps: list[Step], config: DiagnoseConfig) -> list[Conclusion]:
    """Each problem found, with its likely cause and the setting or code that fixes it."""
    found: list[Conclusion] = []
    for step in steps:
        rule = _RULES.get(step.name)
        if rule is not None and step.verdict in PROBLEMS | {"info"}:
            found.extend(rule(step, config))
    return found


def _resolve(step: Step, config: DiagnoseConfig) -> list[Conclusion]:
    return [
        Conclusion(
            step="resolve",
            cause=f"{config.host} does not resolve ({step.facts.get('error')}); every request "
            "fails with ClientConnectorDNSError before anything is sent",
            fix="check the host name; aiohttp resolves through aiodns (c-ares), which reads "
            "/etc/resolv.conf and /etc/hosts as this probe did; no retry setting helps",
        )
    ]


def _connect(step: Step, config: DiagnoseConfig) -> list[Conclusion]:
    families = step.facts["families"]
    failed = {f: r for f, r in families.items() if r["error"] is not None}
    if step.facts["reachable"]:
        family, result = next(iter(failed.items()))
        other = "AF_INET" if family == "IPv6" else "AF_INET6"
        return [
            Conclusion(
                step="connect",
                cause=f"{family} ({result['address']}) is unreachable: {result['error']}; each new "
                "connection may wait for it first",
                fix="pin the family that works: resilient_session(connector=TrackingConnector("
                f"family=socket.{other}, limit_per_host=16, keepalive_timeout=4.0))",
            )
        ]
    errors = "; ".join(f"{f}: {r['error']}" for f, r in failed.items())
    return [
        Conclusion(
            step="connect",
            cause=f"no TCP connection to port {config.port} ({errors})",
            fix="no client setting fixes this: check the port, a firewall, or whether a proxy is "
            "needed (--proxy, HTTPS_PROXY with resilient_session(trust_env=True))",
        )
    ]


def _tls(step: Step, config: DiagnoseConfig) -> list[Conclusion]:
    facts = step.facts
    cause = facts.get("cause")
    if facts.get("verified"):
        return [
            Conclusion(
                step="tls",
                cause=f"the certificate expires in {facts['days_to_expiry']} days "
                f"({facts['not_after']})",
                fix="ask the server's operator to renew it now; clients will fail with "
                "ClientConnectorCertificateError once it expires",
            )
        ]
    if cause in ("self-signed", "unknown CA"):
        what = (
            "a self-signed certificate"
            if cause == "self-signed"
            else "a certificate from a CA this machine does not trust"
        )
        return [
            Conclusion(
                step="tls",
                cause=f"the server presents {what} (issuer {facts.get('issuer', '?')}): "
                "ClientConnectorCertificateError on every request",
                fix='trust that CA, and only it: resilient_session(ca_bundle="/path/to/ca.pem"), '
                "with the CA's PEM (for a self-signed certificate, the certificate itself) "
                "obtained from the operator, not from this connection; for ad-hoc scripts, "
                'ssl.create_default_context(cafile="/path/to/ca.pem") as ssl_context=. '
                "Do not turn verification off",
            )
        ]
    if cause == "expired":
        return [
            Conclusion(
                step="tls",
                cause="the server's certificate has expired "
                f"({facts.get('not_after', 'date unknown')}, "
                f"{-(facts.get('days_to_expiry') or 0)} days ago)",
                fix="the server's operator must renew it; no client setting fixes an expired "
                "certificate safely (check this machine's clock too)",
            )
        ]
    if cause == "not yet valid":
        return [
            Conclusion(
                step="tls",
                cause="the certificate is not valid yet",
                fix="check this machine's clock (and the server's)",
            )
        ]
    if cause == "wrong host":
        names = ", ".join(facts.get("names") or []) or "other names"
        return [
            Conclusion(
                step="tls",
                cause=f"the certificate is not for {config.host}; it names {names}",
                fix="use a host name the certificate names, or ask the operator for one that "
                f"covers {config.host}",
            )
        ]
    return [
        Conclusion(
            step="tls",
            cause=f"TLS failed: {step.summary}",
            fix="compare with `openssl s_client -connect HOST:PORT -servername HOST`",
        )
    ]


def _proxy(step: Step, config: DiagnoseConfig) -> list[Conclusion]:
    if not step.facts.get("proxy_fails_more"):
        return []
    via = step.facts["via_proxy"]
    return [
        Conclusion(
            step="proxy",
            cause=f"the proxy {step.facts['proxy']} drops requests that succeed direct "
            f"({via['failures']}/{via['requests']} failed through it: "
            f"{', '.join(via['causes'])})",
            fix="the disconnects are the proxy's, not the server's: fix or bypass it "
            f"(NO_PROXY={config.host}, or resilient_session(trust_env=False) and no proxy=); "
            + _IDEMPOTENCY,
        )
    ]


def _http(step: Step, config: DiagnoseConfig) -> list[Conclusion]:
    error = step.facts.get("error") or ""
    if error == "SocketTimeoutError" or error.endswith("TimeoutError"):
        return [
            Conclusion(
                step="http",
                cause=f"no response within {config.timeout:g} s ({error})",
                fix="give slow responses more time: "
                "resilient_session(timeout=aiohttp.ClientTimeout(total=300, sock_read=120))",
            )
        ]
    return []  # the repeat step's tally says more about other failures


def _keepalive(step: Step, config: DiagnoseConfig) -> list[Conclusion]:
    if step.verdict != "warn":
        return []
    facts = step.facts
    suggested = facts.get("suggested_keepalive_timeout")
    if suggested:
        fix = (
            f"resilient_session(keepalive_timeout={suggested:g}): the pool lets go before the "
            f"{'proxy' if facts.get('hop') == 'proxy' else 'server'} does from the first "
            "request (the connector also learns the timeout from the server's Keep-Alive "
            "header or the first close it sees, but only after that)"
        )
    else:
        high = facts["bracket"][1]
        first_gap = max(0.05, round(high / 4, 2))
        fix = "measure under the first gap: " + diagnose_command(
            config, "--keepalive-first-gap", f"{first_gap:g}"
        )
    return [
        Conclusion(
            step="keep-alive",
            cause=f"{facts['measured']}, the client's pool keeps them "
            f"{facts['client_keepalive_timeout']:g} s: a request sent on a connection just "
            "closed fails with ServerDisconnectedError (the stale keep-alive race), at random",
            fix=fix + "; RetryPolicy(retry_stale_immediately=True), the default, retries that race "
            "at once for idempotent requests",
        )
    ]


def _repeat(step: Step, config: DiagnoseConfig) -> list[Conclusion]:
    facts = step.facts
    if not facts["failures"]:
        return []
    found = []
    not_sent = facts.get("not_sent", {})
    causes = {c: n for c, n in facts["causes"].items() if c not in not_sent}
    share = f"{facts['failures']}/{facts['requests']}"
    if not_sent:
        every = sum(not_sent.values()) == facts["requests"]
        found.append(
            Conclusion(
                step="repeat",
                cause=f"{sum(not_sent.values())}/{facts['requests']} connections could not be "
                f"opened ({', '.join(not_sent)})" + (", every time" if every else ""),
                fix="nothing was sent, so resilient_session() retries these for any method, "
                "POST included, with backoff (RetryPolicy(attempts=5)); "
                + (
                    "a server down or a wrong port is not retried away: see the connect step"
                    if every
                    else "intermittent refusals come from a server or load balancer at its "
                    "connection limit: lower limit_per_host= to open fewer at once"
                ),
            )
        )
    drops = {c: n for c, n in causes.items() if c in _DROPS}
    if drops:
        found.append(
            Conclusion(
                step="repeat",
                cause=f"{share} requests were dropped mid-way ({', '.join(drops)})"
                + (", intermittently" if facts["intermittent"] else ", every time")
                + (
                    " on the connection to the proxy, which is the hop that closed it"
                    if config.proxy is not None
                    else ""
                ),
                fix=_IDEMPOTENCY,
            )
        )
    found.extend(_proxy_answers(facts))
    statuses = {
        c: n for c, n in causes.items() if c.startswith("HTTP ") and not c.endswith("proxy")
    }
    if statuses:
        found.append(
            Conclusion(
                step="repeat",
                cause=f"the server answered {', '.join(statuses)} to {share} requests",
                fix="resilient_session() retries 429/500/502/503/504 with backoff and honours "
                "Retry-After up to RetryPolicy(retry_after_max=60.0); raise attempts= or "
                "retry_after_max= if the host needs longer",
            )
        )
    timeouts = [c for c in causes if "Timeout" in c]
    if timeouts:
        found.append(
            Conclusion(
                step="repeat",
                cause=f"requests timed out ({', '.join(timeouts)})",
                fix="resilient_session(timeout=aiohttp.ClientTimeout(total=300, sock_read=120)) "
                "if the server is slow rather than gone",
            )
        )
    return found


def _proxy_answers(facts: dict[str, Any]) -> list[Conclusion]:
    """Responses the proxy made itself: the origin was not what answered."""
    answers = facts.get("proxy_answers") or {}
    if not answers:
        return []
    n = sum(answers.values())
    return [
        Conclusion(
            step="repeat",
            cause=f"the proxy, not the origin, answered {n}/{facts['requests']} requests: "
            + "; ".join(f"{reason} (x{count})" for reason, count in answers.items()),
            fix="the requests did not reach the origin: check that it is up and that the proxy "
            "can reach it (its DNS, routes, firewall) or its rules allow the request; "
            "resilient_session() retries 502/503/504 with backoff, which helps only once the "
            "proxy can reach the origin again",
        )
    ]


def _body(step: Step, config: DiagnoseConfig) -> list[Conclusion]:
    facts = step.facts
    if facts.get("refused") is None:
        return []
    accepted, how = facts["accepted"], facts["refused_with"]
    answer = "413 Content Too Large" if how == "413" else f"a dropped connection ({how})"
    return [
        Conclusion(
            step="body-limit",
            cause=f"request bodies over about {accepted} bytes get {answer}",
            fix=f"keep request bodies under {accepted} bytes (split or compress the upload); "
            "retrying cannot help, the same body is refused again",
        )
    ]


_RULES = {
    "resolve": _resolve,
    "connect": _connect,
    "tls": _tls,
    "proxy": _proxy,
    "http": _http,
    "keep-alive": _keepalive,
    "repeat": _repeat,
    "body-limit": _body,
}


def write_conclusions(out: TextIO, conclusions: list[Conclusion], problem: bool) -> None:
    """The text ending: the causes and fixes, or a clean bill."""
    if not conclusions:
        out.write("conclusion: no problem found\n" if not problem else "conclusion: see above\n")
        return
    out.write("conclusion:\n")
    for item in conclusions:
        out.write(f"  - {item.step}: {item.cause}\n    fix: {item.fix}\n")


def write_json(
    out: TextIO, shown_url: str, steps: list[Step], conclusions: list[Conclusion], problem: bool
) -> None:
    """One JSON document: ``{"url", "problem", "steps": [...], "conclusions": [...]}``."""
    document: dict[str, Any] = {
        "url": shown_url,
        "problem": problem,
        "steps": [
            {
                "name": s.name,
                "verdict": s.verdict,
                "seconds": round(s.seconds, 6),
                "summary": s.summary,
                "facts": s.facts,
            }
            for s in steps
        ],
        "conclusions": [{"step": c.step, "cause": c.cause, "fix": c.fix} for c in conclusions],
    }
    json.dump(document, out, indent=2)
    out.write("\n")
