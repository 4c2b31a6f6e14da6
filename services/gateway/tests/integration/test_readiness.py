"""The gateway's readiness on its public port: a status, checked in the background, so a flood
of probes costs catalog nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
from souq_chassis.testing import ServiceProcess

MetricReader = Callable[..., Awaitable[float]]
PROBES = 300


async def test_a_flood_of_readiness_probes_makes_no_calls_to_catalog(
    http: aiohttp.ClientSession,
    gateway: ServiceProcess,
    catalog: ServiceProcess,
    metric: MetricReader,
) -> None:
    async def probe() -> dict[str, object]:
        async with http.get(gateway.url + "/readyz") as response:
            assert response.status == 200
            body: dict[str, object] = await response.json()
            return body

    catalog_probes = {"route": "/healthz"}
    before = await metric(catalog.internal_url, "http_server_requests_total", **catalog_probes)
    start = time.monotonic()
    bodies = await asyncio.gather(*(probe() for _ in range(PROBES)))
    elapsed = time.monotonic() - start
    after = await metric(catalog.internal_url, "http_server_requests_total", **catalog_probes)

    # Only the background checks, about one a second from each of the session's gateways.
    assert after - before <= 5 * (elapsed + 2), (after - before, elapsed)
    assert all(body == {"status": "ready"} for body in bodies)
