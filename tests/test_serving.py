"""Worker processes of ``cityops serve --workers``: a listening socket each (``core.serving``), so connections
opened together spread over the workers instead of landing in the one that accepts first."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from contextlib import contextmanager

import pytest

from cityops.core import serving

pytestmark = pytest.mark.skipif(not serving.reuse_port_supported(), reason="no SO_REUSEPORT on this platform")


def pid_app():
    """An ASGI app answering with its process id (the factory the workers import)."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = str(os.getpid()).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return app


def _answer(sock: socket.socket, path: str) -> tuple[bytes, bytes]:
    """Send a GET and read one answer with a Content-Length: (head, body)."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    return _read_answer(sock, b"")[:2]


def _read_answer(sock: socket.socket, data: bytes) -> tuple[bytes, bytes, bytes]:
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(rest) < length:
        rest += sock.recv(65536)
    return head, rest[:length], rest[length:]


def _ask(sock: socket.socket) -> int:
    return int(_answer(sock, "/")[1])


def _pids_of_connections(port: int, n: int) -> list[int]:
    """``n`` keep-alive connections opened one after the other before any request (as a client pool does), then a
    request on each: the process that accepted each connection."""
    conns = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(n)]
    try:
        return [_ask(c) for c in conns]
    finally:
        for c in conns:
            c.close()


def _wait_ready(port: int, workers: serving.Workers, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(p is not None and p.is_alive() for p in workers.processes):
            try:
                # Every worker answers: ask until each process id was seen.
                seen = set()
                for _ in range(20):
                    seen.update(_pids_of_connections(port, 8))
                    if len(seen) == len(workers.processes):
                        return
            except OSError:
                pass
        time.sleep(0.2)
    raise AssertionError("the workers did not answer in time")


@contextmanager
def _served(factory: str, count: int, ready):
    """``count`` workers serving ``factory``, supervised in a thread; ``ready(workers)`` waits until they answer."""
    w = serving.Workers(factory, "127.0.0.1", 0, count, factory=True, log_level="warning")
    thread = threading.Thread(target=w.run, daemon=True)
    thread.start()
    try:
        ready(w)
        yield w
    finally:
        w.stop()
        thread.join(60)
    assert not thread.is_alive()
    assert all(not p.is_alive() for p in w.processes), "a worker outlived its supervisor"


@pytest.fixture()
def workers():
    with _served("tests.test_serving:pid_app", 2, lambda w: _wait_ready(w.port, w)) as w:
        yield w


def test_connections_opened_together_spread_over_the_workers(workers):
    pids = _pids_of_connections(workers.port, 256)
    counts = {pid: pids.count(pid) for pid in set(pids)}
    assert set(counts) == {p.pid for p in workers.processes}
    # A hash of the addresses picks the socket: 256 connections fall about evenly (fewer than 35 % on one side
    # has a chance of about 1e-6 for a fair coin; measured 47 %). One socket shared by both (uvicorn --workers)
    # left the other worker 33 %, 43 % and 36 % of them in three tries here, and 5 % in the intake benchmark.
    assert min(counts.values()) >= 0.35 * len(pids), counts


def test_a_worker_that_dies_is_started_again_on_its_socket(workers):
    dead = workers.processes[0]
    os.kill(dead.pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (workers.processes[0] is dead or not workers.processes[0].is_alive()):
        time.sleep(0.1)
    assert workers.processes[0] is not dead and workers.processes[0].is_alive()
    _wait_ready(workers.port, workers)
    pids = _pids_of_connections(workers.port, 32)
    assert dead.pid not in pids and set(pids) == {p.pid for p in workers.processes}


def test_a_port_taken_by_another_server_fails_before_any_worker_starts():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        with pytest.raises(OSError):
            serving.Workers("tests.test_serving:pid_app", "127.0.0.1", taken.getsockname()[1], 2, factory=True)
    finally:
        taken.close()


def answers_app():
    """An ASGI app with the answers the gathering protocol must deliver intact (``core.http_protocol``): a small
    one, a large one, a stream whose parts come a second apart, and one that closes the connection."""
    import asyncio

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            for part in (b"one", b"two"):
                await send({"type": "http.response.body", "body": part, "more_body": True})
                await asyncio.sleep(1.0)
            await send({"type": "http.response.body", "body": b""})
            return
        body = b"x" * (1 << 20) if path == "/large" else b'{"ok": true}'
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if path == "/close":
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def _answers_ready(w: serving.Workers, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", w.port), timeout=5) as c:
                _answer(c, "/small")
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture()
def answers():
    with _served("tests.test_serving:answers_app", 1, _answers_ready) as w:
        yield w.port


def _data_segments_in(sock: socket.socket) -> int | None:
    """The data segments this socket received so far (Linux ``tcp_info.tcpi_data_segs_in``), or None."""
    import struct

    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except (AttributeError, OSError):
        return None
    return struct.unpack_from("I", info, 152)[0] if len(info) >= 156 else None


def test_a_small_answer_leaves_in_one_segment(answers):
    # Status line, headers and body in one write: uvicorn wrote the head and the body apart, two segments (and
    # two wake-ups of the client) for every answer.
    with socket.create_connection(("127.0.0.1", answers), timeout=10) as c:
        _answer(c, "/small")  # the connection's first answer
        before = _data_segments_in(c)
        if before is None:
            pytest.skip("no tcp_info data segment count on this platform")
        for _ in range(5):
            head, body = _answer(c, "/small")
            assert head.startswith(b"HTTP/1.1 200") and body == b'{"ok": true}'
        assert _data_segments_in(c) - before == 5


def test_large_pipelined_streamed_and_closing_answers_arrive_whole(answers):
    with socket.create_connection(("127.0.0.1", answers), timeout=10) as c:
        _, body = _answer(c, "/large")
        assert body == b"x" * (1 << 20)
        # Two requests in one send: both answered, in order, on the same connection.
        c.sendall(b"GET /small HTTP/1.1\r\nHost: t\r\n\r\nGET /large HTTP/1.1\r\nHost: t\r\n\r\n")
        _, first, rest = _read_answer(c, b"")
        _, second, _ = _read_answer(c, rest)
        assert (first, second) == (b'{"ok": true}', b"x" * (1 << 20))
    with socket.create_connection(("127.0.0.1", answers), timeout=10) as c:
        # A stream's parts leave as they are sent, not gathered until its end.
        c.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        data = b""
        while b"one" not in data:
            data += c.recv(65536)
        assert b"two" not in data
        while not data.endswith(b"0\r\n\r\n"):
            data += c.recv(65536)
        assert b"two" in data
    with socket.create_connection(("127.0.0.1", answers), timeout=10) as c:
        # An answer that closes the connection is written whole before the close.
        head, body = _answer(c, "/close")
        assert b"connection: close" in head.lower() and body == b'{"ok": true}'
        assert c.recv(10) == b""
