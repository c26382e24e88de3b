"""Test certificates made with ``cryptography``: self-signed, and self-signed but expired."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def self_signed(directory: Path, *, expired: bool = False, name: str = "localhost") -> Path:
    """Write ``cert.pem`` and ``key.pem`` for ``name`` and 127.0.0.1; returns the cert's path.

    ``expired``: valid from 40 days ago to 10 days ago.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(tz=datetime.timezone.utc)
    start, end = (
        (now - datetime.timedelta(days=40), now - datetime.timedelta(days=10))
        if expired
        else (now - datetime.timedelta(days=1), now + datetime.timedelta(days=90))
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / ("expired.pem" if expired else "cert.pem")
    key_path = directory / ("expired-key.pem" if expired else "key.pem")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path


def server_context(cert_path: Path) -> ssl.SSLContext:
    """A server-side context for the certificate ``self_signed`` wrote."""
    key_path = cert_path.with_name(cert_path.stem.replace("cert", "key") + ".pem")
    if cert_path.name == "expired.pem":
        key_path = cert_path.with_name("expired-key.pem")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context
