"""The chassis server's head guard leaves slow handlers and kept-alive clients alone."""

from __future__ import annotations

import asyncio

import aiohttp
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
