"""What the gateway reports at /metrics: its requests by route template, its upstream calls,
and the state of its circuit breakers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
from souq_chassis.testing import ServiceProcess

API = "/api/v1"
PRODUCT_ROUTE = f"{API}/products/{{product_id}}"
MetricReader = Callable[..., Awaitable[float]]


async def fetch(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url) as response:
        await response.read()
        return response.status


async def test_requests_are_counted_by_route_template_not_by_raw_path(
    http: aiohttp.ClientSession, gateway: ServiceProcess, metric: MetricReader
) -> None:
    ok = {"method": "GET", "route": PRODUCT_ROUTE, "status": "200"}
    missing = {"method": "GET", "route": PRODUCT_ROUTE, "status": "404"}
    ok_before = await metric(gateway.internal_url, "http_server_requests_total", **ok)
    missing_before = await metric(gateway.internal_url, "http_server_requests_total", **missing)

    statuses = [
        await fetch(http, f"{gateway.url}{API}/products/2"),
        await fetch(http, f"{gateway.url}{API}/products/3"),
        await fetch(http, f"{gateway.url}{API}/products/987654321"),
    ]

    assert statuses == [200, 200, 404]
    assert await metric(gateway.internal_url, "http_server_requests_total", **ok) == ok_before + 2
    assert (
        await metric(gateway.internal_url, "http_server_requests_total", **missing)
        == missing_before + 1
    )
    for raw in ("/api/v1/products/2", "/api/v1/products/987654321"):
        assert await metric(gateway.internal_url, "http_server_requests_total", route=raw) == 0


async def test_unmatched_paths_share_one_label(
    http: aiohttp.ClientSession, gateway: ServiceProcess, metric: MetricReader
) -> None:
    labels = {"method": "GET", "route": "unmatched", "status": "404"}
    before = await metric(gateway.internal_url, "http_server_requests_total", **labels)

    for path in ("/wp-login.php", "/api/v1/nope-1", "/api/v1/nope-2"):
        assert await fetch(http, gateway.url + path) == 404

    assert await metric(gateway.internal_url, "http_server_requests_total", **labels) == before + 3
    assert (
        await metric(gateway.internal_url, "http_server_requests_total", route="/wp-login.php") == 0
    )


async def test_a_product_page_is_one_catalog_call_and_one_inventory_call(
    http: aiohttp.ClientSession, gateway: ServiceProcess, metric: MetricReader
) -> None:
    catalog = {"kind": "http", "upstream": "catalog", "operation": "GetProduct", "outcome": "ok"}
    inventory = {
        "kind": "grpc",
        "upstream": "inventory",
        "operation": "GetAvailability",
        "outcome": "ok",
    }
    catalog_before = await metric(gateway.internal_url, "upstream_requests_total", **catalog)
    inventory_before = await metric(gateway.internal_url, "upstream_requests_total", **inventory)

    assert await fetch(http, f"{gateway.url}{API}/products/4") == 200

    assert (
        await metric(gateway.internal_url, "upstream_requests_total", **catalog)
        == catalog_before + 1
    )
    assert (
        await metric(gateway.internal_url, "upstream_requests_total", **inventory)
        == inventory_before + 1
    )


async def test_a_list_page_asks_inventory_once_for_all_its_items(
    http: aiohttp.ClientSession, gateway: ServiceProcess, metric: MetricReader
) -> None:
    catalog = {"kind": "http", "upstream": "catalog", "operation": "ListProducts", "outcome": "ok"}
    inventory = {"kind": "grpc", "upstream": "inventory", "operation": "GetAvailability"}
    catalog_before = await metric(gateway.internal_url, "upstream_requests_total", **catalog)
    inventory_before = await metric(gateway.internal_url, "upstream_requests_total", **inventory)

    assert await fetch(http, f"{gateway.url}{API}/products?page_size=30") == 200

    assert (
        await metric(gateway.internal_url, "upstream_requests_total", **catalog)
        == catalog_before + 1
    )
    assert (
        await metric(gateway.internal_url, "upstream_requests_total", **inventory)
        == inventory_before + 1
    )


async def test_upstream_call_durations_are_recorded(
    http: aiohttp.ClientSession, gateway: ServiceProcess, metric: MetricReader
) -> None:
    labels = {"kind": "grpc", "upstream": "inventory", "operation": "GetAvailability"}
    before = await metric(gateway.internal_url, "upstream_request_duration_seconds_count", **labels)

    assert await fetch(http, f"{gateway.url}{API}/products/5") == 200

    assert (
        await metric(gateway.internal_url, "upstream_request_duration_seconds_count", **labels)
        == before + 1
    )
    assert await metric(gateway.internal_url, "upstream_request_duration_seconds_sum", **labels) > 0


async def test_the_inventory_breaker_is_closed_while_inventory_answers_and_open_when_it_does_not(
    http: aiohttp.ClientSession,
    gateway: ServiceProcess,
    gateway_without_inventory: ServiceProcess,
    metric: MetricReader,
) -> None:
    for _ in range(6):  # more than the default five failures in a row
        assert await fetch(http, f"{gateway.url}{API}/products/6") == 200
        assert await fetch(http, f"{gateway_without_inventory.url}{API}/products/6") == 200

    healthy = await metric(gateway.internal_url, "circuit_breaker_state", upstream="inventory")
    cut_off = await metric(
        gateway_without_inventory.internal_url, "circuit_breaker_state", upstream="inventory"
    )
    assert (healthy, cut_off) == (0, 2)  # 0 closed, 2 open
    failed = {"upstream": "inventory", "outcome": "error"}
    rejected = {"upstream": "inventory", "outcome": "rejected"}
    assert (
        await metric(gateway_without_inventory.internal_url, "upstream_requests_total", **failed)
        >= 5
    )
    assert (
        await metric(gateway_without_inventory.internal_url, "upstream_requests_total", **rejected)
        >= 1
    )
    assert await metric(gateway.internal_url, "upstream_requests_total", **failed) == 0
