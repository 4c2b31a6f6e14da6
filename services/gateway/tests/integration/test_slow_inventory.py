"""A slow inventory costs a page no more than the inventory deadline; after a few such calls
the breaker opens and pages stop waiting at all; once inventory is prompt again, availability
comes back by itself after the breaker's reset time.

Inventory here is a real grpc.aio server in this test process, whose answers we control.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import grpc
import pytest
from souq.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from souq_chassis.testing import ServiceProcess, free_port

API = "/api/v1"
DEADLINE_S = 0.25
BREAKER_FAILURES = 2
BREAKER_RESET_S = 0.5
SLOW_S = 2.0
MetricReader = Callable[..., Awaitable[float]]


class ControllableInventory(inventory_pb2_grpc.InventoryServiceServicer):
    """Says every SKU has `available` units, after `delay_s` seconds, or refuses with the
    status code `refusal`; counts the calls."""

    def __init__(self) -> None:
        self.delay_s = 0.0
        self.available = 42
        self.refusal: grpc.StatusCode | None = None
        self.calls = 0

    async def GetAvailability(  # the name is the contract's
        self, request: inventory_pb2.GetAvailabilityRequest, context: grpc.aio.ServicerContext
    ) -> inventory_pb2.GetAvailabilityResponse:
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        if self.refusal is not None:
            await context.abort(self.refusal, "refused on purpose")
        return inventory_pb2.GetAvailabilityResponse(
            items=[
                inventory_pb2.Availability(sku=sku, available=self.available, tracked=True)
                for sku in request.skus
            ]
        )


@pytest.fixture(scope="module")
def fake_inventory() -> Iterator[tuple[ControllableInventory, str]]:
    """The fake inventory served on its own event loop in a thread, for the whole module."""
    servicer = ControllableInventory()
    target = f"127.0.0.1:{free_port()}"
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-inventory", daemon=True)
    thread.start()

    async def start() -> grpc.aio.Server:
        server = grpc.aio.server()
        inventory_pb2_grpc.add_InventoryServiceServicer_to_server(servicer, server)
        assert server.add_insecure_port(target) != 0
        await server.start()
        return server

    try:
        server = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
        try:
            yield servicer, target
        finally:
            asyncio.run_coroutine_threadsafe(server.stop(None), loop).result(timeout=10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture(scope="module")
def gateway_to_fake(
    fake_inventory: tuple[ControllableInventory, str], new_gateway: Callable[..., ServiceProcess]
) -> Iterator[ServiceProcess]:
    _, target = fake_inventory
    settings = {
        "inventory_timeout_s": DEADLINE_S,
        "breaker_failures": BREAKER_FAILURES,
        "breaker_reset_s": BREAKER_RESET_S,
    }
    with new_gateway(target, **settings) as gateway:
        yield gateway


async def product_page(http: aiohttp.ClientSession, gateway: ServiceProcess) -> tuple[Any, float]:
    start = time.perf_counter()
    async with http.get(f"{gateway.url}{API}/products/1") as response:
        assert response.status == 200, await response.text()
        page = await response.json()
    return page, time.perf_counter() - start


async def until_available(
    http: aiohttp.ClientSession, gateway: ServiceProcess, within_s: float
) -> Any:
    """Poll the product page until availability is known again; its page, or the last one."""
    deadline = time.monotonic() + within_s
    page: Any = None
    while time.monotonic() < deadline:
        page, _ = await product_page(http, gateway)
        if page["availability"] != "unknown":
            break
        await asyncio.sleep(0.05)
    return page


@pytest.fixture
async def slow_inventory(
    http: aiohttp.ClientSession,
    fake_inventory: tuple[ControllableInventory, str],
    gateway_to_fake: ServiceProcess,
) -> AsyncIterator[ControllableInventory]:
    """Inventory turns slow, starting from a gateway that trusts it (breaker closed)."""
    servicer, _ = fake_inventory
    servicer.delay_s, servicer.available, servicer.refusal = 0.0, 42, None
    page = await until_available(http, gateway_to_fake, within_s=5)
    assert page["availability"] == "in_stock", "the gateway never got a prompt answer"
    servicer.delay_s = SLOW_S
    yield servicer
    servicer.delay_s = 0.0


async def test_a_slow_inventory_costs_a_page_only_the_inventory_deadline(
    http: aiohttp.ClientSession,
    gateway_to_fake: ServiceProcess,
    catalog: ServiceProcess,
    slow_inventory: ControllableInventory,
) -> None:
    async with http.get(f"{catalog.url}/v1/products/1") as response:
        product = await response.json()
    calls = slow_inventory.calls

    page, elapsed = await product_page(http, gateway_to_fake)

    assert slow_inventory.calls == calls + 1  # it did ask, and gave up waiting
    assert (page["availability"], page["available_quantity"]) == ("unknown", None)
    assert {k: page[k] for k in product} == product
    assert DEADLINE_S * 0.8 <= elapsed < 0.75


async def test_once_the_breaker_opens_pages_no_longer_wait_for_inventory(
    http: aiohttp.ClientSession,
    gateway_to_fake: ServiceProcess,
    slow_inventory: ControllableInventory,
    metric: MetricReader,
) -> None:
    rejected = {"upstream": "inventory", "outcome": "rejected"}
    rejected_before = await metric(
        gateway_to_fake.internal_url, "upstream_requests_total", **rejected
    )
    for _ in range(BREAKER_FAILURES):
        page, elapsed = await product_page(http, gateway_to_fake)
        assert page["availability"] == "unknown" and elapsed >= DEADLINE_S * 0.8
    calls = slow_inventory.calls

    page, elapsed = await product_page(http, gateway_to_fake)

    assert (page["availability"], page["available_quantity"]) == ("unknown", None)
    assert elapsed < DEADLINE_S  # it did not wait for the deadline
    assert slow_inventory.calls == calls  # it did not even ask
    assert (
        await metric(gateway_to_fake.internal_url, "circuit_breaker_state", upstream="inventory")
        == 2
    )
    assert (
        await metric(gateway_to_fake.internal_url, "upstream_requests_total", **rejected)
        == rejected_before + 1
    )


async def test_a_slow_list_page_is_unknown_for_every_item_within_the_deadline(
    http: aiohttp.ClientSession,
    gateway_to_fake: ServiceProcess,
    slow_inventory: ControllableInventory,
) -> None:
    start = time.perf_counter()
    async with http.get(f"{gateway_to_fake.url}{API}/products?page_size=12") as response:
        assert response.status == 200
        listing = await response.json()
    elapsed = time.perf_counter() - start

    assert len(listing["items"]) == 12
    assert {(p["availability"], p["available_quantity"]) for p in listing["items"]} == {
        ("unknown", None)
    }
    assert elapsed < 0.75


async def test_availability_comes_back_by_itself_once_inventory_is_prompt_again(
    http: aiohttp.ClientSession,
    gateway_to_fake: ServiceProcess,
    slow_inventory: ControllableInventory,
    metric: MetricReader,
) -> None:
    for _ in range(BREAKER_FAILURES):
        await product_page(http, gateway_to_fake)
    opened_at = time.monotonic()
    slow_inventory.delay_s = 0.0
    slow_inventory.available = 3
    calls = slow_inventory.calls

    still_open, _ = await product_page(http, gateway_to_fake)
    assert still_open["availability"] == "unknown"  # the breaker waits out its reset time
    assert slow_inventory.calls == calls
    recovered = await until_available(http, gateway_to_fake, within_s=5)
    recovered_after = time.monotonic() - opened_at

    assert (recovered["availability"], recovered["available_quantity"]) == ("low_stock", 3)
    assert BREAKER_RESET_S * 0.8 <= recovered_after < BREAKER_RESET_S + 2
    assert (
        await metric(gateway_to_fake.internal_url, "circuit_breaker_state", upstream="inventory")
        == 0
    )


@pytest.mark.parametrize(
    "refusal",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.PERMISSION_DENIED,
    ],
)
async def test_an_inventory_that_refuses_to_answer_leaves_pages_up_with_availability_unknown(
    http: aiohttp.ClientSession,
    gateway_to_fake: ServiceProcess,
    slow_inventory: ControllableInventory,
    refusal: grpc.StatusCode,
) -> None:
    slow_inventory.delay_s, slow_inventory.refusal = 0.0, refusal
    calls = slow_inventory.calls

    page, elapsed = await product_page(http, gateway_to_fake)
    async with http.get(f"{gateway_to_fake.url}{API}/products?page_size=5") as response:
        assert response.status == 200, await response.text()
        listing = await response.json()

    assert slow_inventory.calls == calls + 2  # asked once per page: a refusal is not retried
    assert (page["availability"], page["available_quantity"]) == ("unknown", None)
    assert {(p["availability"], p["available_quantity"]) for p in listing["items"]} == {
        ("unknown", None)
    }
    assert elapsed < DEADLINE_S


async def test_sigterm_lets_a_request_in_flight_finish_and_then_the_gateway_exits_cleanly(
    http: aiohttp.ClientSession,
    fake_inventory: tuple[ControllableInventory, str],
    new_gateway: Callable[..., ServiceProcess],
) -> None:
    servicer, target = fake_inventory
    servicer.delay_s, servicer.available, servicer.refusal = 1.0, 7, None
    gateway = new_gateway(target, inventory_timeout_s=5)
    try:
        with gateway:
            assert gateway.proc is not None
            in_flight = asyncio.create_task(product_page(http, gateway))
            await asyncio.sleep(0.4)  # the page now waits on inventory
            gateway.proc.terminate()
            page, elapsed = await in_flight
            exit_code = await asyncio.to_thread(gateway.proc.wait, 10)
    finally:
        servicer.delay_s = 0.0

    assert (page["availability"], page["available_quantity"]) == ("in_stock", 7)
    assert elapsed >= 1.0  # it really was in flight when the signal came
    assert exit_code == 0
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(f"{gateway.url}/healthz"):
            pass
