"""A nats-server with JetStream of the test's own, on a free port (Debian's nats-server)."""

from __future__ import annotations

import shutil
import subprocess
import time
from contextlib import contextmanager

import httpx
import pytest

from tests.conftest import free_port, wait_for_port


class NatsUrl(str):
    """The client URL (``nats://…``), with the server's monitoring endpoint beside it."""

    monitor: str

    def clients(self, prefix: str = "cityops-") -> list[str]:
        """The names of the connected clients whose name starts with ``prefix`` (the workers' buses)."""
        conns = httpx.get(f"{self.monitor}/connz", params={"limit": 1024}, timeout=10).json().get("connections") or []
        return [c.get("name", "") for c in conns if c.get("name", "").startswith(prefix)]

    def wait_for_clients(self, n: int, seconds: float = 240, prefix: str = "cityops-") -> list[str]:
        """Wait until ``n`` clients named ``prefix…`` are connected (e.g. every worker's bus is up)."""
        deadline = time.monotonic() + seconds
        while len(names := self.clients(prefix)) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(names)} of {n} bus connections after {seconds} s: {names}")
            time.sleep(0.2)
        return names


@contextmanager
def nats_server(store_dir):
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not shutil.which(binary):
        pytest.skip("nats-server is not installed (apt-get install nats-server)")
    port, monitor = free_port(), free_port()
    proc = subprocess.Popen([binary, "-js", "-p", str(port), "-m", str(monitor), "-sd", str(store_dir), "-a", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(proc, port)
        wait_for_port(proc, monitor)
        url = NatsUrl(f"nats://127.0.0.1:{port}")
        url.monitor = f"http://127.0.0.1:{monitor}"
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
