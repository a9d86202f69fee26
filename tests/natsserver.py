"""A nats-server with JetStream of the test's own, on a free port (Debian's nats-server)."""

from __future__ import annotations

import shutil
import subprocess
from contextlib import contextmanager

import pytest

from tests.conftest import free_port, wait_for_port


@contextmanager
def nats_server(store_dir):
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not shutil.which(binary):
        pytest.skip("nats-server is not installed (apt-get install nats-server)")
    port = free_port()
    proc = subprocess.Popen([binary, "-js", "-p", str(port), "-sd", str(store_dir), "-a", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(proc, port)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
