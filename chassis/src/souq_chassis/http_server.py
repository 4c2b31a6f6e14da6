"""The HTTP server every service runs: uvicorn + httptools with limits at the edge of the
process, on a public listener and an internal one (metrics, detailed readiness).

Why uvicorn + httptools with a small guard rather than another server (measured on a trivial
route, 16 connections, wrk, on this 2-core machine): httptools served 6,700 req/s, h11 3,800,
granian 2.8 embedded 5,900. httptools has no limit on the request head (six 30 MiB headers
took 3 s each and 220 MB) and uvicorn times out no connection before its first complete
request. h11 does not bound a head that arrives in one read (a 64 KiB header passed its 16 KiB
limit) and answers 400, not 431. Granian answers 431 and times out a half-sent head, but never
closes a connection that sends nothing, and its socket is out of our reach. So: httptools,
plus a guard that counts the bytes of each request head (431 past the limit), closes a
connection whose head is not complete in time, and uses uvicorn's own keep-alive timeout and
concurrency limit (503 past it).
"""

from __future__ import annotations

import asyncio
import os
import socket
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


@dataclass(frozen=True)
class EdgeLimits:
    """What one connection may cost a process before it is answered or closed."""

    max_header_bytes: int = 16 * 1024  # request line and headers of one request
    header_timeout_s: float = 5.0  # from connecting (or a request's first byte) to its last header
    keep_alive_timeout_s: float = 5.0  # idle between requests
    max_connections: int = 1000  # open connections and in-flight requests; then 503


# After a 431 the rest of the request is read and dropped for a moment before closing, so the
# client reads the answer instead of a reset (closing with unread input sends an RST).
_LINGER_S = 1.0
_LINGER_BYTES = 1024 * 1024


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded, timed request head."""

    limits: ClassVar[EdgeLimits] = EdgeLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.limits.keep_alive_timeout_s  # type: ignore[assignment]
        self._reading_head = True
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._dropped = -1  # bytes read and dropped after a 431; -1: none refused

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._dropped >= 0:
            self._dropped += len(data)
            if self._dropped > _LINGER_BYTES:
                self.transport.close()
            return
        if not self._reading_head or self.transport.is_closing():
            super().data_received(data)
            return
        room = self.limits.max_header_bytes - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            super().data_received(data)
            # A head begun on a kept-alive connection and not finished in this read: time it
            # (a whole request in one read, the usual case, costs no timer). A request that
            # completed in this read reset the count: its response is no head to time.
            if self._reading_head and self._head_bytes and self._head_timer is None:
                self._arm_head_timer()
            return
        # Feed what fits: the head may end within it, and the rest is a body (or the next
        # request, counted afresh).
        self._head_bytes += room
        super().data_received(data[:room])
        if self.transport.is_closing():
            return
        if self._reading_head:
            self._refuse_oversized_head()
            return
        self.data_received(data[room:])

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head = True
        self._head_bytes = 0

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_late)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self._reading_head and not self.transport.is_closing():
            self.transport.close()

    def _refuse_oversized_head(self) -> None:
        limit = self.limits.max_header_bytes
        body = orjson.dumps(
            {
                "type": "about:blank",
                "title": "Request Header Fields Too Large",
                "status": 431,
                "detail": f"The request line and headers exceed {limit} bytes.",
                "request_id": os.urandom(16).hex(),
            }
        )
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/problem+json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body
        )
        self._cancel_head_timer()
        self._dropped = 0
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._head_timer = self.loop.call_later(_LINGER_S, self.transport.close)


def guarded_protocol(limits: EdgeLimits) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for uvicorn's `http` option, with these limits."""
    return type("GuardedHttpTools", (GuardedHttpToolsProtocol,), {"limits": limits})


def listen(host: str, port: int) -> socket.socket:
    """A bound TCP socket for uvicorn (port 0: one the system picks)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


class ByListener:
    """One ASGI app for two listeners: requests to the internal socket's port go to `internal`,
    everything else (and the lifespan) to `public`."""

    def __init__(self, public: ASGIApp, internal: ASGIApp, internal_port: int) -> None:
        self.public = public
        self.internal = internal
        self.internal_port = internal_port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        if scope["type"] != "lifespan" and server is not None and server[1] == self.internal_port:
            await self.internal(scope, receive, send)
        else:
            await self.public(scope, receive, send)
