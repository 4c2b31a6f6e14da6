"""Every service defends its own edge: limits on request heads and bodies, slow and idle
clients and connections, and its internals (metrics, readiness details) only on its internal
listener.

Real gateway and catalog processes, each with small limits, poked with raw sockets.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import aiohttp
import psutil
import pytest
from souq_chassis.testing import ServiceProcess, free_port

HEADER_LIMIT = 16 * 1024
HEADER_TIMEOUT_S = 1.0
KEEP_ALIVE_S = 1.0
BODY_TIMEOUT_S = 1.5
MAX_CONNECTIONS = 40
# Slack for a busy machine on top of a timeout; uvicorn's own default keep-alive (5 s) and
# a head or body that is never timed out both lie beyond it.
SLACK_S = 2.5


# A route of each service that waits for its whole body before it answers.
BODY_ROUTES = {"souq_gateway": "/api/v1/auth/login", "souq_catalog": "/v1/admin/products"}


def _nowhere() -> str:
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="module", params=["gateway", "catalog"])
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    name: str = request.param
    prefix = name.upper()
    process = ServiceProcess.on_free_ports(
        f"souq_{name}",
        prefix,
        tmp_path_factory.mktemp(name),
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": "",
            "SOUQ_JWKS_URL": _nowhere(),
            "SOUQ_BROKER_URL": f"nats://127.0.0.1:{free_port()}",
            f"{prefix}_CATALOG_URL": _nowhere(),
        },
        log_level="WARNING",
        seed_demo_data=False,
        max_header_bytes=HEADER_LIMIT,
        header_timeout_s=HEADER_TIMEOUT_S,
        keep_alive_timeout_s=KEEP_ALIVE_S,
        body_timeout_s=BODY_TIMEOUT_S,
        max_connections=MAX_CONNECTIONS,
    )
    process.ready_path = "/healthz"  # its dependencies are nowhere: alive is enough here
    with process.serving():
        yield process


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> float | None:
    """Seconds until the server closed the connection (None: still open after `seconds`)."""
    start = time.monotonic()
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return None
    except ConnectionError:
        pass
    return time.monotonic() - start


async def _huge_head(port: int, size: int) -> bytes:
    """Send a request whose one header is `size` bytes, in 64 KiB writes; what came back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        for _ in range(size // 65536):
            writer.write(b"a" * 65536)
            await writer.drain()
        writer.write(b"\r\n\r\n")
        await writer.drain()
    except ConnectionError:
        pass
    try:
        async with asyncio.timeout(30):
            return await reader.read()
    except ConnectionError:
        return b""
    finally:
        writer.close()


async def _latency_of_a_probe(url: str) -> float:
    async with aiohttp.ClientSession() as http:
        start = time.monotonic()
        async with http.get(url + "/healthz") as response:
            assert response.status == 200
        return time.monotonic() - start


def _rss(process: ServiceProcess) -> int:
    assert process.proc is not None
    return int(psutil.Process(process.proc.pid).memory_info().rss)


async def test_an_oversized_head_is_refused_with_431_at_once(service: ServiceProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", service.http_port)
    start = time.monotonic()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n")
    async with asyncio.timeout(10):
        answer = await reader.read()
    elapsed = time.monotonic() - start
    writer.close()

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"application/problem+json" in head
    assert json.loads(body)["status"] == 431
    assert elapsed < 1.0


async def test_a_request_line_too_long_is_refused_too(service: ServiceProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", service.http_port)
    writer.write(b"GET /" + b"a" * 65536 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    async with asyncio.timeout(10):
        answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]


async def test_huge_heads_neither_stall_others_nor_cost_memory(service: ServiceProcess) -> None:
    before = _rss(service)
    attacks = [asyncio.create_task(_huge_head(service.http_port, 30 * 2**20)) for _ in range(6)]
    await asyncio.sleep(0.05)
    probe = await _latency_of_a_probe(service.url)
    answers = await asyncio.gather(*attacks)
    grown = (_rss(service) - before) / 2**20

    assert probe < 1.0
    assert all(a == b"" or a.startswith(b"HTTP/1.1 431 ") for a in answers), answers
    assert grown < 20, f"{grown:.0f} MiB more"


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /heal", b"GET /healthz HTTP/1.1\r\nHost: x\r\n"],
    ids=["nothing", "half-a-request-line", "half-the-headers"],
)
async def test_a_connection_that_does_not_finish_its_head_is_closed(
    service: ServiceProcess, sent: bytes
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", service.http_port)
    writer.write(sent)
    closed_after = await _closed_within(reader, HEADER_TIMEOUT_S + SLACK_S)
    writer.close()
    assert closed_after is not None, "still open"


async def test_a_head_sent_a_byte_at_a_time_is_closed_all_the_same(service: ServiceProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", service.http_port)
    drip = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
    start = time.monotonic()
    try:
        for byte in drip:
            if time.monotonic() - start > HEADER_TIMEOUT_S + SLACK_S or reader.at_eof():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.05)
    except ConnectionError:
        pass
    closed_after = await _closed_within(reader, 0.5)
    writer.close()
    assert closed_after is not None, "still open"


async def test_an_idle_keep_alive_connection_is_closed(service: ServiceProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", service.http_port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    async with asyncio.timeout(10):
        status = await reader.readline()
        while await reader.readline() not in (b"\r\n", b""):
            pass
    assert status.startswith(b"HTTP/1.1 200 ")
    closed_after = await _closed_within(reader, KEEP_ALIVE_S + SLACK_S)
    writer.close()
    assert closed_after is not None, "still open"


async def test_connections_beyond_the_cap_are_refused_without_growing_memory(
    service: ServiceProcess,
) -> None:
    before = _rss(service)
    held = [
        await asyncio.open_connection("127.0.0.1", service.http_port)
        for _ in range(MAX_CONNECTIONS)
    ]
    try:

        async def one_more() -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", service.http_port)
            try:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                async with asyncio.timeout(10):
                    return await reader.read()
            except ConnectionError:
                return b""
            finally:
                writer.close()

        answers = await asyncio.gather(*(one_more() for _ in range(200)))
        grown = (_rss(service) - before) / 2**20
    finally:
        for _, writer in held:
            writer.close()
    assert all(a == b"" or a.startswith(b"HTTP/1.1 503 ") for a in answers), answers[:3]
    assert grown < 20, f"{grown:.0f} MiB more"
    # Once they are gone, it serves again.
    deadline = time.monotonic() + 10
    while True:
        try:
            assert await _latency_of_a_probe(service.url) < 5
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _head_of_a_body(
    service: ServiceProcess,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that sent a POST's head, promising 60,000 bytes of body, and one of them."""
    route = BODY_ROUTES[service.module]
    reader, writer = await asyncio.open_connection("127.0.0.1", service.http_port)
    writer.write(
        f"POST {route} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 60000\r\n\r\n{".encode()
    )
    await writer.drain()
    return reader, writer


async def test_a_body_that_stops_arriving_is_closed(service: ServiceProcess) -> None:
    reader, writer = await _head_of_a_body(service)
    closed_after = await _closed_within(reader, BODY_TIMEOUT_S + SLACK_S)
    writer.close()
    assert closed_after is not None, "still open"


async def test_a_body_sent_a_byte_at_a_time_is_closed_all_the_same(
    service: ServiceProcess,
) -> None:
    reader, writer = await _head_of_a_body(service)
    start = time.monotonic()
    try:
        for _ in range(1000):  # 0.05 s apart: the trickle would take 50 s
            if time.monotonic() - start > BODY_TIMEOUT_S + SLACK_S or reader.at_eof():
                break
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.05)
    except ConnectionError:
        pass
    closed_after = await _closed_within(reader, 0.5)
    writer.close()
    assert closed_after is not None, "still open"


async def test_stalled_bodies_beyond_the_cap_lock_nobody_out_for_long(
    service: ServiceProcess,
) -> None:
    stalled = [await _head_of_a_body(service) for _ in range(MAX_CONNECTIONS + 10)]
    try:
        start = time.monotonic()
        served_after = None
        while time.monotonic() - start < BODY_TIMEOUT_S + 4 * SLACK_S:
            reader, writer = await asyncio.open_connection("127.0.0.1", service.http_port)
            try:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                async with asyncio.timeout(5):
                    status = await reader.readline()
            except (ConnectionError, TimeoutError):
                status = b""
            finally:
                writer.close()
            if status.startswith(b"HTTP/1.1 200 "):
                served_after = time.monotonic() - start
                break
            await asyncio.sleep(0.2)
    finally:
        for _, writer in stalled:
            writer.close()
    assert served_after is not None, "503 throughout"
    assert served_after < BODY_TIMEOUT_S + 2 * SLACK_S, f"served only after {served_after:.1f} s"


async def test_metrics_and_readiness_details_are_only_on_the_internal_listener(
    service: ServiceProcess,
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(service.url + "/metrics") as response:
            assert response.status == 404
        async with http.get(service.url + "/readyz") as response:
            public = await response.json(content_type=None)
        async with http.get(service.internal_url + "/metrics") as response:
            assert response.status == 200
            assert "http_server_requests_total" in await response.text()
        async with http.get(service.internal_url + "/readyz") as response:
            internal = await response.json(content_type=None)

    assert set(public) <= {"status", "type", "title", "request_id", "detail"}, public
    assert "failed" not in json.dumps(public)
    assert "checks" in internal
