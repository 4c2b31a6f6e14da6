"""The outbound clients against real servers: deadlines, retries, breaker, metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from souq_chassis.grpc_client import GrpcUpstream
from souq_chassis.grpc_server import GrpcServer
from souq_chassis.http_client import HttpUpstream
from souq_chassis.metrics import Metrics
from souq_chassis.resilience import Policy, UpstreamUnavailable
from souq_chassis.testing import free_port


class Flaky:
    """A real HTTP server whose first `failures` answers are 503s; can also be slow."""

    def __init__(self) -> None:
        self.failures = 0
        self.delay_s = 0.0
        self.hits = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        await asyncio.sleep(self.delay_s)
        if request.path == "/missing":
            return web.json_response({"detail": "no such thing"}, status=404)
        if request.path == "/cannot-now":  # the service's own answer: a dependency is away
            body = b'{"status": 503, "detail": "prices unavailable"}'
            return web.Response(body=body, status=503, content_type="application/problem+json")
        if self.failures > 0:
            self.failures -= 1
            return web.json_response({"detail": "busy"}, status=503)
        return web.json_response({"method": request.method, "path": request.path})


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[Flaky, str]]:
    state = Flaky()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield state, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_idempotent_calls_are_retried_past_transient_failures(
    flaky: tuple[Flaky, str],
) -> None:
    server, url = flaky
    metrics = Metrics()
    client = HttpUpstream("flaky", url, metrics, Policy(timeout_s=2, attempts=3))
    await client.start()
    server.failures = 2
    reply = await client.request("GET", "/things", operation="GetThings")
    await client.close()
    assert reply.status == 200 and reply.json() == {"method": "GET", "path": "/things"}
    assert server.hits == 3
    labels = {"kind": "http", "upstream": "flaky", "operation": "GetThings", "outcome": "ok"}
    assert _value(metrics, "upstream_requests_total", **labels) == 1


async def test_non_idempotent_calls_are_not_retried(flaky: tuple[Flaky, str]) -> None:
    server, url = flaky
    client = HttpUpstream("flaky", url, Metrics(), Policy(timeout_s=2, attempts=3))
    await client.start()
    server.failures = 1
    with pytest.raises(UpstreamUnavailable):
        await client.request("POST", "/orders", json={"a": 1}, operation="PlaceOrder")
    await client.close()
    assert server.hits == 1


async def test_a_slow_upstream_fails_at_the_deadline_not_later(flaky: tuple[Flaky, str]) -> None:
    server, url = flaky
    client = HttpUpstream("flaky", url, Metrics(), Policy(timeout_s=0.2, attempts=3))
    await client.start()
    server.delay_s = 2.0
    start = time.perf_counter()
    with pytest.raises(UpstreamUnavailable, match="deadline"):
        await client.request("GET", "/slow", operation="Slow")
    elapsed = time.perf_counter() - start
    await client.close()
    assert 0.18 < elapsed < 0.5


async def test_the_breaker_opens_then_rejects_without_calling(flaky: tuple[Flaky, str]) -> None:
    server, url = flaky
    metrics = Metrics()
    policy = Policy(timeout_s=1, attempts=1, breaker_failures=2, breaker_reset_s=60)
    client = HttpUpstream("flaky", url, metrics, policy)
    await client.start()
    server.failures = 100
    for _ in range(2):
        with pytest.raises(UpstreamUnavailable):
            await client.request("GET", "/x", operation="X")
    hits = server.hits
    with pytest.raises(UpstreamUnavailable, match="circuit open"):
        await client.request("GET", "/x", operation="X")
    await client.close()
    assert server.hits == hits
    assert _value(metrics, "circuit_breaker_state", upstream="flaky") == 2
    rejected = {"kind": "http", "upstream": "flaky", "operation": "X", "outcome": "rejected"}
    assert _value(metrics, "upstream_requests_total", **rejected) == 1


async def test_client_errors_are_answers_not_failures(flaky: tuple[Flaky, str]) -> None:
    server, url = flaky
    client = HttpUpstream("flaky", url, Metrics(), Policy(attempts=3, breaker_failures=1))
    await client.start()
    reply = await client.request("GET", "/missing", operation="Missing")
    again = await client.request("GET", "/missing", operation="Missing")
    await client.close()
    assert reply.status == again.status == 404
    assert reply.json() == {"detail": "no such thing"}
    assert server.hits == 2, "a 404 is not retried"
    assert client.upstream.breaker.state == 0, "a 404 does not count against the upstream"


async def test_grpc_calls_carry_the_deadline_and_fail_fast_when_the_server_is_gone() -> None:
    metrics = Metrics()
    port = free_port()
    server = GrpcServer("127.0.0.1", port, Metrics(), [], ["souq.test.v1.Nothing"])
    await server.start()
    upstream = GrpcUpstream("peer", f"127.0.0.1:{port}", metrics, Policy(timeout_s=0.5, attempts=2))
    await upstream.start()
    stub = health_pb2_grpc.HealthStub(upstream.channel)
    reply = await upstream.call(
        "Check",
        lambda timeout: stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout),
        idempotent=True,
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    await server.stop(0)
    start = time.perf_counter()
    with pytest.raises(UpstreamUnavailable):
        await upstream.call(
            "Check",
            lambda timeout: stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout),
            idempotent=True,
        )
    assert time.perf_counter() - start < 0.6
    await upstream.close()
    ok = {"kind": "grpc", "upstream": "peer", "operation": "Check", "outcome": "ok"}
    failed = {**ok, "outcome": "error"}
    assert _value(metrics, "upstream_requests_total", **ok) == 1
    assert _value(metrics, "upstream_requests_total", **failed) == 1


async def test_grpc_answers_that_are_not_transient_are_raised_as_is() -> None:
    port = free_port()
    server = GrpcServer("127.0.0.1", port, Metrics(), [], [])
    await server.start()
    upstream = GrpcUpstream("peer", f"127.0.0.1:{port}", Metrics(), Policy(timeout_s=1))
    await upstream.start()
    stub = health_pb2_grpc.HealthStub(upstream.channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await upstream.call(
            "Check",
            lambda timeout: stub.Check(
                health_pb2.HealthCheckRequest(service="nope"), timeout=timeout
            ),
            idempotent=True,
        )
    await upstream.close()
    await server.stop(0)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert upstream.upstream.breaker.state == 0


async def test_a_services_own_503_problem_can_be_an_answer_not_a_failure(
    flaky: tuple[Flaky, str],
) -> None:
    server, url = flaky
    metrics = Metrics()
    upstream = HttpUpstream("svc", url, metrics, Policy(breaker_failures=2, breaker_reset_s=60))
    await upstream.start()
    try:
        for _ in range(5):
            reply = await upstream.request(
                "GET", "/cannot-now", operation="Get", answers=frozenset({503})
            )
            assert reply.status == 503
        assert server.hits == 5  # neither retried nor cut off by the breaker
        assert (await upstream.request("GET", "/ok", operation="Get")).status == 200

        for _ in range(2):  # the same answer, not declared one: failures that open the breaker
            with pytest.raises(UpstreamUnavailable):
                await upstream.request("GET", "/cannot-now", operation="Get")
        with pytest.raises(UpstreamUnavailable):
            await upstream.request("GET", "/ok", operation="Get")
    finally:
        await upstream.close()
