"""Uvicorn's HTTP/1.1 protocol (httptools) with one ``write`` per answer instead of two.

Uvicorn writes a response's status line and headers when the app sends ``http.response.start`` and its body at
``http.response.body``: two ``write`` system calls and two TCP segments for every answer, which the client's
kernel and the client then each handle. For a small JSON answer (a case report's 201) the second write cost about
as much as the first. Here uvicorn is handed a transport that gathers what it writes during one turn of the event
loop and writes it at the end of that turn, in one call: the app sends both messages in the same turn, so the
status line, the headers and the body leave together. Nothing waits longer than the current turn; a turn that
gathers more than ``FLUSH_BYTES`` writes at once, so a large body keeps the real transport's flow control.

Why by hand: uvicorn offers no option to join the two writes, and its ``http`` setting takes a protocol class, the
documented way to change how the server writes. Websockets are not used by the app (``ws="none"``).
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: Bytes gathered in one turn past which they are written at once (a large body is not held in memory here).
FLUSH_BYTES = 64 * 1024


class _GatheringTransport:
    """The connection's transport for uvicorn: ``write`` gathers until the end of the loop's turn; everything
    else goes to the real transport (``close`` writes what was gathered first)."""

    __slots__ = ("_transport", "_loop", "_pending", "_size")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._size = 0

    def write(self, data) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)
        self._size += len(data)
        if self._size >= FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending = []
        self._size = 0
        if not self._transport.is_closing():  # the client went away meanwhile: nobody reads it
            self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._size

    def __getattr__(self, name):
        return getattr(self._transport, name)


class GatheringHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` writing each loop turn's output in one call (``uvicorn.Config(http=…)``)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_GatheringTransport(transport, self.loop))
