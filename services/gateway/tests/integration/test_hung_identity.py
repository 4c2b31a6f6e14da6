"""A hung identity (a real process, frozen with SIGSTOP) and a gateway that has no keys yet:
signed-in requests get a fast 503, and identity sees one JWKS fetch at a time, not a queue."""

from __future__ import annotations

import asyncio
import math
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator

import aiohttp
import pytest
from souq_chassis.testing import EmbeddedNats, ServiceProcess, TcpProxy, TokenIssuer

GatewayFactory = Callable[..., ServiceProcess]
WAVE = 50  # signed-in requests sent at once


@pytest.fixture(scope="module")
def identity(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """A real identity process (its own SQLite, a real embedded NATS)."""
    with EmbeddedNats(tmp_path_factory.mktemp("nats")) as nats:
        service = ServiceProcess.on_free_ports(
            "souq_identity",
            "IDENTITY",
            tmp_path_factory.mktemp("identity"),
            environment="test",
            env={"SOUQ_BROKER_URL": f"{nats.url}?namespace=hung{os.urandom(4).hex()}"},
        )
        with service:
            yield service


@pytest.fixture
async def frozen(identity: ServiceProcess) -> AsyncIterator[ServiceProcess]:
    """identity stopped with SIGSTOP for the test: it accepts connections, never answers."""
    assert identity.proc is not None
    identity.proc.send_signal(signal.SIGSTOP)
    try:
        yield identity
    finally:
        identity.proc.send_signal(signal.SIGCONT)


async def test_with_identity_hung_signed_in_requests_get_a_fast_503_and_one_fetch_at_a_time(
    frozen: ServiceProcess,
    new_gateway: GatewayFactory,
    inventory_target: str,
    issuer: TokenIssuer,
) -> None:
    async with TcpProxy("127.0.0.1", frozen.http_port) as proxy:
        gateway = new_gateway(inventory_target, jwks_url=f"http://127.0.0.1:{proxy.port}/v1/jwks")
        await asyncio.to_thread(gateway.start)
        try:
            timeout = aiohttp.ClientTimeout(total=5)
            connector = aiohttp.TCPConnector(limit=WAVE)
            async with aiohttp.ClientSession(
                gateway.url, timeout=timeout, connector=connector
            ) as http:
                headers = issuer.bearer("frozen-out")
                await warm(http)
                answers: list[tuple[int, str, float]] = []
                # A wave while the first fetch hangs, one while backing off, one after it.
                for pause_s in (0.0, 0.6, 1.2):
                    await asyncio.sleep(pause_s)
                    answers += await asyncio.gather(*(me(http, headers) for _ in range(WAVE)))
        finally:
            await asyncio.to_thread(gateway.stop)
            gateway.__exit__(None, None, None)

    statuses = {(status, kind) for status, kind, _ in answers}
    assert statuses == {(503, "application/problem+json")}, statuses
    latencies = sorted(elapsed for _, _, elapsed in answers)
    p99 = latencies[math.ceil(0.99 * len(latencies)) - 1]
    print(
        f"signed-in with identity hung: p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms over {len(latencies)}; "
        f"{proxy.accepted} JWKS connections, at most {proxy.most_open} at once"
    )
    assert p99 < 0.3, latencies[-10:]
    assert proxy.most_open == 1
    assert proxy.accepted <= 3  # three waves over ~2 s: a fetch, the back-off, a fetch


async def warm(http: aiohttp.ClientSession) -> None:
    """A public request first, so the client's own start-up is not measured."""
    async with http.get("/api/v1/categories") as response:
        await response.read()


async def me(http: aiohttp.ClientSession, headers: dict[str, str]) -> tuple[int, str, float]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with http.get("/api/v1/me", headers=headers) as response:
            await response.read()
            return response.status, response.content_type, loop.time() - started
    except TimeoutError:
        return 0, "timed out", loop.time() - started
