"""Debian's squid as a real forward proxy for the tests: started on a free loopback port with a
minimal configuration (no disk cache, idle client connections closed after
``client_idle_pconn_timeout``), its pid file and logs in a temporary folder, stopped by its PID."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from _helpers import closed_port, wait_listening

#: Where Debian installs it (apt-get install squid); PATH may not have /usr/sbin.
SQUID = shutil.which("squid") or shutil.which("squid", path="/usr/sbin:/usr/local/sbin")

#: The seconds squid closes idle client connections after, in the tests. Squid keeps time in
#: whole seconds and looks for idle connections about once a second, so a close comes anywhere
#: from 0.1 s to 2.5 s after the last response (both seen); at 2 s, closes came past the gaps the
#: keep-alive step tries under the client's 4 s pool.
IDLE_TIMEOUT = 1

needs_squid = pytest.mark.skipif(
    SQUID is None,
    reason="squid is not installed (apt-get install squid): the real-proxy tests skip",
)

_CONFIG = """\
http_port 127.0.0.1:{port}
http_access allow all
cache deny all
cache_mem 1 MB
cache_dir null /tmp
client_idle_pconn_timeout {idle} seconds
pid_filename {folder}/squid.pid
cache_log {folder}/cache.log
access_log {folder}/access.log
cache_store_log none
coredump_dir {folder}
netdb_filename none
shutdown_lifetime 0 seconds
forwarded_for delete
"""


@contextlib.asynccontextmanager
async def squid_proxy(*, idle: int = IDLE_TIMEOUT) -> AsyncIterator[str]:
    """A running squid on 127.0.0.1; yields its URL. Squid drops root for its own user, so
    the folder is open to it."""
    assert SQUID is not None
    port = closed_port()
    with tempfile.TemporaryDirectory(prefix="squid-") as folder:
        os.chmod(folder, 0o777)
        config = Path(folder) / "squid.conf"
        config.write_text(_CONFIG.format(port=port, idle=idle, folder=folder))
        # -N: in the foreground, so the PID is squid's own and stops it.
        proc = await asyncio.create_subprocess_exec(
            SQUID,
            "-N",
            "-f",
            str(config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await _wait_listening(port, proc, folder)
            yield f"http://127.0.0.1:{port}"
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 1.0)
                except asyncio.TimeoutError:
                    proc.kill()  # no disk cache: nothing to lose
                    await proc.wait()


def _log_tail(folder: str) -> str:
    path = Path(folder) / "cache.log"
    return path.read_text()[-2000:] if path.exists() else ""


async def _wait_listening(port: int, proc: asyncio.subprocess.Process, folder: str) -> None:
    listening = asyncio.ensure_future(wait_listening(port))
    exited = asyncio.ensure_future(proc.wait())
    await asyncio.wait({listening, exited}, return_when=asyncio.FIRST_COMPLETED)
    if not listening.done():
        listening.cancel()
        raise RuntimeError(f"squid exited with {proc.returncode}: {_log_tail(folder)}")
    exited.cancel()
    listening.result()
