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
connection whose head or body is not complete in time, caps the connections of one client
address (optional), and uses uvicorn's own keep-alive timeout and concurrency limit (503 past
it).

The body deadline runs from the end of the head to the end of the body, so a trickle does not
extend it, and stops there: a handler that is slow once it has the body is not cut. It also
runs while uvicorn has paused reading because the app has not taken what came yet, which
bodies within our limit (64 KiB, uvicorn's high-water mark) never cause.
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
    body_timeout_s: float = 10.0  # from a request's last header to the last byte of its body
    max_connections: int = 1000  # open connections and in-flight requests; then 503
    # Open connections from one client address (the socket's peer); past it a new one is
    # answered 429 and closed at once. 0: no cap. Peers in `uncapped` (trusted proxies, whose
    # connections carry many clients) are not capped.
    max_connections_per_client: int = 0
    uncapped: frozenset[str] = frozenset()


# After a 431 the rest of the request is read and dropped for a moment before closing, so the
# client reads the answer instead of a reset (closing with unread input sends an RST).
_LINGER_S = 1.0
_LINGER_BYTES = 1024 * 1024


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded, timed request head, a timed request body,
    and optionally a cap on the connections of one client address."""

    limits: ClassVar[EdgeLimits] = EdgeLimits()
    # Open connections per client address, of every listener of the server (one per class).
    per_client: ClassVar[dict[str, int]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.limits.keep_alive_timeout_s  # type: ignore[assignment]
        self._reading_head = True
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._dropped = -1  # bytes read and dropped after a 431 or 429; -1: none refused
        self._body_due = False  # a request's head is in, the end of its body is not
        self._body_timer: asyncio.TimerHandle | None = None
        self._counted: str | None = None  # the client address counted in per_client

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        cap = self.limits.max_connections_per_client
        if cap and self.client and self.client[0] not in self.limits.uncapped:
            host = self.client[0]
            if self.per_client.get(host, 0) >= cap:
                self._refuse_connection()
                return
            self.per_client[host] = self.per_client.get(host, 0) + 1
            self._counted = host
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        self._cancel_body_timer()
        if self._counted is not None:
            left = self.per_client[self._counted] - 1
            if left:
                self.per_client[self._counted] = left
            else:
                del self.per_client[self._counted]
            self._counted = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._receive(data)
        # A body begun and not finished in this read: time it (a whole request in one read,
        # the usual case, costs no timer). A request queued behind another (pipelined) is
        # timed once it is started, since reading is paused meanwhile.
        if self._body_due and self._body_timer is None and not self.pipeline:
            self._arm_body_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start a pipelined request
        if self._body_due and self._body_timer is None and not self.pipeline:
            self._arm_body_timer()

    def _receive(self, data: bytes) -> None:
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
        self._receive(data[room:])

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._body_due = True
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head = True
        self._head_bytes = 0
        self._body_due = False
        self._cancel_body_timer()

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

    def _arm_body_timer(self) -> None:
        self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_late)

    def _cancel_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_late(self) -> None:
        self._body_timer = None
        # Not ours any more once upgraded (a WebSocket has its own protocol).
        transport = self.transport
        if not self._body_due or transport.is_closing() or transport.get_protocol() is not self:
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_started and not cycle.response_complete:
            limit = self.limits.body_timeout_s
            self.transport.write(
                _problem(408, "Request Timeout", f"The request body took over {limit:g} s.")
            )
        if cycle is not None and not cycle.response_complete:
            # The app waiting for the rest of the body reads a disconnect; whatever it sends
            # now is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()

    def _refuse_connection(self) -> None:
        cap = self.limits.max_connections_per_client
        self.transport.write(
            _problem(429, "Too Many Requests", f"Over {cap} open connections from this address.")
        )
        self._dropped = 0  # whatever it sent is not read
        self.transport.close()

    def _refuse_oversized_head(self) -> None:
        limit = self.limits.max_header_bytes
        self.transport.write(
            _problem(
                431,
                "Request Header Fields Too Large",
                f"The request line and headers exceed {limit} bytes.",
            )
        )
        self._cancel_head_timer()
        self._dropped = 0
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._head_timer = self.loop.call_later(_LINGER_S, self.transport.close)


def _problem(status: int, title: str, detail: str) -> bytes:
    """A whole problem+json response that closes the connection, written by the guard itself."""
    body = orjson.dumps(
        {
            "type": "about:blank",
            "title": title,
            "status": status,
            "detail": detail,
            "request_id": os.urandom(16).hex(),
        }
    )
    return (
        f"HTTP/1.1 {status} {title}\r\n".encode() + b"content-type: application/problem+json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"connection: close\r\n\r\n" + body
    )


def guarded_protocol(limits: EdgeLimits) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for uvicorn's `http` option, with these limits (and a count of
    connections per client of its own)."""
    return type(
        "GuardedHttpTools", (GuardedHttpToolsProtocol,), {"limits": limits, "per_client": {}}
    )


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
