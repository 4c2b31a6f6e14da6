"""The chassis server's guard: slow handlers and kept-alive clients are left alone, a stalled
body is answered 408, and one client address can be capped without capping the others."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from fastapi import Request
from souq_chassis.app import create_app
from souq_chassis.metrics import Metrics
from souq_chassis.settings import ServiceSettings
from souq_chassis.testing import serving

QUICK = ServiceSettings(header_timeout_s=0.3, keep_alive_timeout_s=5)


async def test_a_handler_slower_than_the_header_timeout_still_answers() -> None:
    app = create_app(title="test", version="1", metrics=Metrics())

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(1.0)
        return {"status": "done"}

    async with serving(app, QUICK) as url, aiohttp.ClientSession() as http:
        for _ in range(2):  # the second on the kept-alive connection
            async with http.get(url + "/slow") as response:
                assert response.status == 200
                assert await response.json() == {"status": "done"}


async def test_a_half_sent_head_on_a_kept_alive_connection_is_closed() -> None:
    app = create_app(title="test", version="1", metrics=Metrics())
    async with serving(app, QUICK) as url:
        port = int(url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(5):
            assert (await reader.readline()).startswith(b"HTTP/1.1 200 ")
            while await reader.readline() != b"\r\n":
                pass
            await reader.readexactly(len(b'{"status":"alive"}'))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and no more
        async with asyncio.timeout(3):  # the keep-alive timeout (5 s) is not what closes it
            assert await reader.read() == b""
        writer.close()


async def _answer(port: int, request: bytes, source: str = "127.0.0.1") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(request)
        async with asyncio.timeout(5):
            return await reader.read()
    except ConnectionError:
        return b""
    finally:
        writer.close()


async def test_a_handler_slower_than_the_body_timeout_once_it_has_the_body_still_answers() -> None:
    app = create_app(title="test", version="1", metrics=Metrics())

    @app.post("/slow")
    async def slow(request: Request) -> dict[str, int]:
        body = await request.body()
        await asyncio.sleep(1.0)
        return {"bytes": len(body)}

    settings = ServiceSettings(body_timeout_s=0.3, keep_alive_timeout_s=5)
    async with serving(app, settings) as url, aiohttp.ClientSession() as http:
        for _ in range(2):
            async with http.post(url + "/slow", data=b"x" * 5000) as response:
                assert response.status == 200
                assert await response.json() == {"bytes": 5000}


async def test_a_stalled_body_is_answered_408_and_closed() -> None:
    app = create_app(title="test", version="1", metrics=Metrics())

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    settings = ServiceSettings(body_timeout_s=0.3, keep_alive_timeout_s=5)
    async with serving(app, settings) as url:
        port = int(url.rsplit(":", 1)[1])
        answer = await _answer(
            port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{"
        )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"application/problem+json" in head
    assert json.loads(body)["status"] == 408


async def test_one_client_address_is_capped_and_others_are_not() -> None:
    app = create_app(title="test", version="1", metrics=Metrics())
    get = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    settings = ServiceSettings(max_connections_per_client=5, header_timeout_s=30)
    async with serving(app, settings) as url:
        port = int(url.rsplit(":", 1)[1])
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
        try:
            await asyncio.sleep(0.1)
            refused = await _answer(port, get)
            other = await _answer(port, get, source="127.0.0.2")
        finally:
            for _, writer in held:
                writer.close()
        await asyncio.sleep(0.2)
        again = await _answer(port, get)
    assert refused == b"" or refused.startswith(b"HTTP/1.1 429 "), refused[:200]
    assert other.startswith(b"HTTP/1.1 200 "), other[:200]
    assert again.startswith(b"HTTP/1.1 200 "), again[:200]


async def test_a_trusted_proxy_is_not_capped() -> None:
    app = create_app(title="test", version="1", metrics=Metrics())
    get = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    settings = ServiceSettings(
        max_connections_per_client=2, header_timeout_s=30, trusted_proxies="127.0.0.1"
    )
    async with serving(app, settings) as url:
        port = int(url.rsplit(":", 1)[1])
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
        try:
            answer = await _answer(port, get)
        finally:
            for _, writer in held:
                writer.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
