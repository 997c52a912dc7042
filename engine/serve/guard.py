"""Connection-level limits that an ASGI app cannot set: a header deadline and a connection cap.

uvicorn times out idle keep-alive connections, but not a connection that sends nothing, half a
request line, or headers without their blank line: each would stay open forever. ``guarded``
returns uvicorn's h11 protocol with two additions:

- a deadline from a connection's first moment (and from each later request's first byte) to the
  end of its headers; past it the server answers 408 and closes;
- at most ``max_connections`` open connections; one more is answered 503 and closed at once.

Request bodies get their own deadline and byte budget in the app (``app.Service.body``), where
the declared length is known. Needs the ``serve`` extra (uvicorn, h11).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol



def _response(status: bytes, body: bytes, *headers: bytes) -> bytes:
    lines = [b"HTTP/1.1 " + status, b"Content-Type: text/plain; charset=utf-8", b"Content-Length: %d" % len(body),
             *headers, b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


_408 = _response(b"408 Request Timeout", b"request headers not received in time\n")
_503 = _response(b"503 Service Unavailable", b"too many open connections; retry shortly\n", b"Retry-After: 1")


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and a connection cap (set by ``guarded``)."""

    header_timeout_s: float = 10.0
    max_connections: int = 1024

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            transport.write(_503)
            transport.close()
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and self._awaiting_headers():
            self._arm()  # the first byte of a request on a kept-alive connection
        super().data_received(data)
        if not self._awaiting_headers():
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _awaiting_headers(self) -> bool:
        return self.conn.their_state is h11.IDLE and not self.transport.is_closing()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expire(self) -> None:
        self._header_timer = None
        if self._awaiting_headers() and (self.cycle is None or self.cycle.response_complete):
            self.transport.write(_408)
            self.transport.close()


def guarded(header_timeout_s: float, max_connections: int) -> type[Any]:
    """A ``GuardedH11Protocol`` class with these limits, for ``uvicorn.Config(http=...)``."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,),
                {"header_timeout_s": header_timeout_s, "max_connections": max_connections})
