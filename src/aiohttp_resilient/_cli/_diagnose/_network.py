"""The steps below HTTP: resolve (aiodns), TCP connect per address family, TLS (stdlib ssl)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import socket
import ssl
import tempfile
from typing import Any

import aiodns

from ..._session import _tls_context
from ._model import EXPIRY_WARN_DAYS, DiagnoseConfig, Step, Stopwatch, Verdict

__all__ = ["open_stream", "probe_connect", "probe_resolve", "probe_tls"]

#: OpenSSL's verify codes (``X509_V_ERR_*``) and how each is explained.
_VERIFY_CAUSES = {
    10: "expired",  # CERT_HAS_EXPIRED
    9: "not yet valid",  # CERT_NOT_YET_VALID
    18: "self-signed",  # DEPTH_ZERO_SELF_SIGNED_CERT
    19: "self-signed",  # SELF_SIGNED_CERT_IN_CHAIN
    20: "unknown CA",  # UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21: "unknown CA",  # UNABLE_TO_VERIFY_LEAF_SIGNATURE
    62: "wrong host",  # HOSTNAME_MISMATCH
    64: "wrong host",  # IP_ADDRESS_MISMATCH
}


async def open_stream(
    config: DiagnoseConfig, address: str, tls: ssl.SSLContext | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to ``address`` on the URL's port within the step's timeout; with ``tls``,
    a handshake naming the URL's host (SNI and the name checked, unless it is an address)."""
    return await asyncio.wait_for(
        asyncio.open_connection(
            address, config.port, ssl=tls, server_hostname=config.host if tls else None
        ),
        config.timeout,
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def probe_resolve(config: DiagnoseConfig) -> Step:
    """Resolve the host through aiodns (c-ares: DNS and the hosts file), both families."""
    host = config.host
    if _is_ip(host):
        family = "IPv6" if ":" in host else "IPv4"
        return Step(
            name="resolve",
            verdict="ok",
            seconds=0.0,
            summary=f"{host} is an {family} address: nothing to resolve",
            facts={"addresses": [host]},
        )
    resolver = aiodns.DNSResolver(timeout=config.timeout, tries=1)
    with Stopwatch() as watch:
        try:
            result = await asyncio.wait_for(
                resolver.getaddrinfo(host, family=socket.AF_UNSPEC, port=config.port),
                config.timeout,
            )
        except (aiodns.error.DNSError, TimeoutError, asyncio.TimeoutError) as exc:
            error: str | None = _dns_error(exc)
        else:
            error = None
        finally:
            with contextlib.suppress(Exception):
                await resolver.close()
    if error is not None:
        return Step(
            name="resolve",
            verdict="fail",
            seconds=watch.seconds,
            summary=f"{host} does not resolve: {error}",
            facts={"addresses": [], "error": error},
        )
    # c-ares gives the address as bytes.
    addresses = list(dict.fromkeys(_text(node.addr[0]) for node in result.nodes))
    summary = ", ".join(addresses) if addresses else "no address"
    return Step(
        name="resolve",
        verdict="ok" if addresses else "fail",
        seconds=watch.seconds,
        summary=summary,
        facts={"addresses": addresses},
    )


def _text(value: bytes | str) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else value


def _dns_error(exc: BaseException) -> str:
    if isinstance(exc, aiodns.error.DNSError) and len(exc.args) >= 2:
        return str(exc.args[1])
    return "timed out" if isinstance(exc, (TimeoutError, asyncio.TimeoutError)) else str(exc)


async def probe_connect(config: DiagnoseConfig, addresses: list[str]) -> Step:
    """TCP connect to the first address of each family, timed."""
    per_family: dict[str, dict[str, Any]] = {}
    for address in addresses:
        family = "IPv6" if ":" in address else "IPv4"
        if family in per_family:
            continue
        with Stopwatch() as watch:
            try:
                _, writer = await open_stream(config, address)
            except (OSError, asyncio.TimeoutError) as exc:
                error: str | None = _connect_error(exc, config.timeout)
            else:
                error = None
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        per_family[family] = {"address": address, "seconds": watch.seconds, "error": error}
    reached = [f for f, r in per_family.items() if r["error"] is None]
    parts = [
        f"{family} {r['address']} "
        + (f"{r['seconds'] * 1000:.1f} ms" if r["error"] is None else f"failed: {r['error']}")
        for family, r in per_family.items()
    ]
    verdict: Verdict = "ok" if len(reached) == len(per_family) else "warn" if reached else "fail"
    return Step(
        name="connect",
        verdict=verdict,
        seconds=sum(r["seconds"] for r in per_family.values()),
        summary="; ".join(parts),
        facts={"families": per_family, "reachable": bool(reached)},
    )


def _connect_error(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return f"no answer within {timeout:g} s (a firewall dropping packets?)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (nothing listens on that port)"
    return f"{type(exc).__name__}: {exc}"


async def probe_tls(config: DiagnoseConfig, address: str) -> Step:
    """Handshake as the client would, with verification; on failure explain why, and read the
    certificate without verification only to describe it (nothing is sent over that channel)."""
    host = config.host
    sni = None if _is_ip(host) else host
    with Stopwatch() as watch:
        try:
            _, writer = await open_stream(config, address, _tls_context(config.ca_bundle))
        except ssl.SSLCertVerificationError as exc:
            verify_error: ssl.SSLCertVerificationError | None = exc
            other: str | None = None
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            verify_error, other = None, _connect_error(exc, config.timeout)
        else:
            verify_error, other = None, None
    facts: dict[str, Any] = {"sni": sni, "handshake_seconds": watch.seconds}
    if other is not None:
        facts["error"] = other
        return Step(name="tls", verdict="fail", seconds=watch.seconds, summary=other, facts=facts)
    if verify_error is not None:
        cause = _VERIFY_CAUSES.get(verify_error.verify_code, "unverifiable")
        facts.update(
            verified=False,
            cause=cause,
            verify_code=verify_error.verify_code,
            verify_message=verify_error.verify_message,
        )
        facts.update(await _unverified_certificate(config, address))
        summary = f"certificate verification failed: {cause} ({verify_error.verify_message})"
        if "subject" in facts:
            summary += f"; subject {facts['subject']}, issuer {facts['issuer']}"
        return Step(name="tls", verdict="fail", seconds=watch.seconds, summary=summary, facts=facts)
    ssl_object = writer.get_extra_info("ssl_object")
    cipher = writer.get_extra_info("cipher")
    facts.update(
        verified=True,
        version=ssl_object.version() if ssl_object is not None else None,
        cipher=cipher[0] if cipher else None,
    )
    facts.update(_describe(writer.get_extra_info("peercert") or {}))
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    days = facts.get("days_to_expiry")
    verdict: Verdict = "warn" if days is not None and days < EXPIRY_WARN_DAYS else "ok"
    summary = (
        f"{facts['version']} {facts['cipher']}, verified; subject {facts.get('subject')}, "
        f"issuer {facts.get('issuer')}, expires in {days} days"
    )
    return Step(name="tls", verdict=verdict, seconds=watch.seconds, summary=summary, facts=facts)


def _name(rdns: Any) -> str:
    return ", ".join(f"{k}={v}" for rdn in rdns for k, v in rdn)


def _describe(cert: dict[str, Any]) -> dict[str, Any]:
    """Subject, issuer, names and days to expiry from ``getpeercert()``'s dictionary."""
    if not cert:
        return {}
    not_after = cert.get("notAfter")
    days = None
    if not_after:
        expires = datetime.datetime.fromtimestamp(
            ssl.cert_time_to_seconds(not_after), tz=datetime.timezone.utc
        )
        left = expires - datetime.datetime.now(tz=datetime.timezone.utc)
        days = int(left.total_seconds() / 86400)  # whole days, toward zero either side
    return {
        "subject": _name(cert.get("subject", ())),
        "issuer": _name(cert.get("issuer", ())),
        "names": [value for _, value in cert.get("subjectAltName", ())],
        "not_after": not_after,
        "days_to_expiry": days,
    }


async def _unverified_certificate(config: DiagnoseConfig, address: str) -> dict[str, Any]:
    """The peer's certificate, read without verification to explain why verification failed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        _, writer = await open_stream(config, address, context)
    except (OSError, asyncio.TimeoutError, ssl.SSLError):
        return {}
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    facts: dict[str, Any] = {"version": ssl_object.version() if ssl_object else None}
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):
        await writer.wait_closed()
    if der:
        facts.update(_describe(_decode_der(der)))
    return facts


def _decode_der(der: bytes) -> dict[str, Any]:
    """``getpeercert()``'s dictionary for a certificate that did not verify. The stdlib only
    decodes verified peers' certificates; its test helper decodes a PEM file (CPython's own
    tests use it). Where it is missing, the conclusions go without subject and dates."""
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is None:
        return {}
    pem = ssl.DER_cert_to_PEM_cert(der)
    fd, path = tempfile.mkstemp(suffix=".pem")
    try:
        with os.fdopen(fd, "w") as file:
            file.write(pem)
        result: dict[str, Any] = decode(path)
    except (ssl.SSLError, OSError, ValueError):
        return {}
    else:
        return result
    finally:
        os.unlink(path)
