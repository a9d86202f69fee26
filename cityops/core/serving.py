"""Several server processes on one port, each with a listening socket of its own (``SO_REUSEPORT``), so the
kernel spreads new connections evenly over them.

Why not ``uvicorn --workers``: its workers share one listening socket, and asyncio accepts every connection
waiting on a socket (up to the backlog) in the worker that wakes first. Keep-alive clients opening their
connections together all land in one worker: measured on case intake, one of two workers stored 1,461 cases
while the other stored 71, and the idle one's core did nothing for the busy one. With a socket per worker in
one ``SO_REUSEPORT`` group, the kernel picks the socket by a hash of the connection's addresses.

The parent binds and listens every socket (a taken port fails here, before any worker starts), starts one
spawned process per socket, starts a worker again if one dies, and on SIGINT/SIGTERM asks the workers to stop
(uvicorn's graceful shutdown) and waits for them. Uvicorn's own ``Multiprocess`` supervisor hands every worker
the same sockets, so it cannot be reused for this; the loop below is the small part it would have done.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading

from cityops.core.http_protocol import GatheringHttpToolsProtocol

log = logging.getLogger("cityops.serving")

#: uvicorn's settings for every worker: one write per answer (``core.http_protocol``), no websockets (the app
#: takes none).
UVICORN_DEFAULTS = {"log_config": None, "http": GatheringHttpToolsProtocol, "ws": "none"}

multiprocessing.allow_connection_pickling()  # a socket handed to a spawned process is duplicated into it
_SPAWN = multiprocessing.get_context("spawn")


def reuse_port_supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT")


def listen_sockets(host: str, port: int, count: int, backlog: int = 2048) -> list[socket.socket]:
    """``count`` listening TCP sockets on ``host:port`` in one ``SO_REUSEPORT`` group (``port`` 0: a free port,
    the same for all)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.listen(backlog)
            sock.set_inheritable(True)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _worker(target: str, sock: socket.socket, options: dict) -> None:
    import uvicorn

    config = uvicorn.Config(target, **options)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # the interrupt reached the whole process group: the parent is stopping us
        pass


class Workers:
    """``count`` uvicorn processes serving ``target`` (an import string, ``options`` for ``uvicorn.Config``) on
    ``host:port``, a listening socket each. ``start()``, then ``port``; ``run()`` supervises until a signal or
    ``stop()``."""

    RESTART_PAUSE = 1.0

    def __init__(self, target: str, host: str, port: int, count: int, **options):
        self.target, self.options = target, {**UVICORN_DEFAULTS, **options}
        self.sockets = listen_sockets(host, port, count, backlog=self.options.get("backlog", 2048))
        self.port = self.sockets[0].getsockname()[1]
        self.processes: list = [None] * count
        self._stopping = threading.Event()

    def _spawn(self, i: int):
        proc = _SPAWN.Process(target=_worker, args=(self.target, self.sockets[i], self.options),
                              name=f"cityops-worker-{i}")
        proc.start()
        self.processes[i] = proc
        return proc

    def start(self) -> "Workers":
        for i in range(len(self.sockets)):
            self._spawn(i)
        return self

    def run(self) -> None:
        """Until SIGINT/SIGTERM (in the main thread) or ``stop()``: a worker that died is started again (its
        socket stayed open here, so connections waiting on it are served by the new one)."""
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: self._stopping.set())
        if not any(self.processes):
            self.start()
        try:
            while not self._stopping.wait(0.5):
                for i, proc in enumerate(self.processes):
                    if not proc.is_alive() and not self._stopping.is_set():
                        log.warning("worker %d (pid %s) ended with %s; starting it again", i, proc.pid, proc.exitcode)
                        self._stopping.wait(self.RESTART_PAUSE)  # a worker failing at start-up does not spin
                        if not self._stopping.is_set():
                            self._spawn(i)
        finally:
            self._shutdown()

    def stop(self) -> None:
        self._stopping.set()

    def _shutdown(self, timeout: float = 30.0) -> None:
        for proc in self.processes:
            if proc is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)  # uvicorn's graceful shutdown: open requests are answered
        for proc in self.processes:
            if proc is not None:
                proc.join(timeout)
                if proc.is_alive():
                    proc.kill()
                    proc.join()
        for sock in self.sockets:
            sock.close()


def serve(target: str, host: str, port: int, workers: int, **options) -> None:
    """Serve ``target`` (an app factory's import string with ``factory=True`` in ``options``, or an app's) with
    ``workers`` processes, a ``SO_REUSEPORT`` socket each; where the platform has no ``SO_REUSEPORT``, uvicorn's
    shared socket."""
    if not reuse_port_supported():
        import uvicorn

        uvicorn.run(target, host=host, port=port, workers=workers, **{**UVICORN_DEFAULTS, **options})
        return
    Workers(target, host, port, workers, **options).run()
