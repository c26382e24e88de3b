"""A real redis-server for the shared-store tests and benchmarks: Debian's ``redis-server``
on a loopback port, nothing persisted, stopped by its PID (private: not part of the kit)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["REDIS_SERVER", "redis_server"]

#: The redis-server binary (the Debian package's path when it is not on PATH).
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis_server(*, timeout: float = 10.0) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """redis-server on a free loopback port until the block ends: ``(port, process)``.

    Raises:
        RuntimeError: It did not accept connections within ``timeout`` seconds.
    """
    port = _free_port()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen([REDIS_SERVER, *args], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while not _listening(port):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)
        yield port, proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)  # it may have been left stopped
            proc.terminate()
        proc.wait(timeout=10)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0
