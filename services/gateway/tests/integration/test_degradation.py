"""When an upstream is away, the storefront degrades: no inventory means availability
`unknown` within the inventory deadline; no catalog means a 503 the client can retry."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
from souq_chassis.testing import ServiceProcess

API = "/api/v1"
INVENTORY_DEADLINE_S = 0.25  # the gateway's default GATEWAY_INVENTORY_TIMEOUT_S
WELL_UNDER_A_SECOND = INVENTORY_DEADLINE_S + 0.5  # the deadline, plus room for a busy machine


async def timed_get(http: aiohttp.ClientSession, url: str) -> tuple[int, Any, float]:
    """Status, JSON body and seconds taken."""
    start = time.perf_counter()
    async with http.get(url) as response:
        body = await response.json(content_type=None)
    return response.status, body, time.perf_counter() - start


async def catalog_product(
    http: aiohttp.ClientSession, catalog: ServiceProcess, product_id: int
) -> Any:
    async with http.get(f"{catalog.url}/v1/products/{product_id}") as response:
        assert response.status == 200
        return await response.json()


async def test_without_inventory_a_product_still_shows_with_availability_unknown(
    http: aiohttp.ClientSession, gateway_without_inventory: ServiceProcess, catalog: ServiceProcess
) -> None:
    product = await catalog_product(http, catalog, 7)

    for _ in range(3):  # the first calls fail at the socket, later ones at the open breaker
        status, page, elapsed = await timed_get(
            http, f"{gateway_without_inventory.url}{API}/products/7"
        )
        assert status == 200, page
        assert {k: page[k] for k in product} == product
        assert page["availability"] == "unknown"
        assert page["available_quantity"] is None
        assert elapsed < WELL_UNDER_A_SECOND


async def test_without_inventory_every_listed_item_is_unknown(
    http: aiohttp.ClientSession, gateway_without_inventory: ServiceProcess, catalog: ServiceProcess
) -> None:
    status, listing, elapsed = await timed_get(
        http, f"{gateway_without_inventory.url}{API}/products?category=jewelry&page_size=50"
    )
    async with http.get(f"{catalog.url}/v1/products?category=jewelry&page_size=50") as response:
        from_catalog = await response.json()

    assert status == 200
    assert [p["id"] for p in listing["items"]] == [p["id"] for p in from_catalog["items"]]
    assert len(listing["items"]) == listing["total"] == from_catalog["total"] > 0
    assert {(p["availability"], p["available_quantity"]) for p in listing["items"]} == {
        ("unknown", None)
    }
    assert elapsed < WELL_UNDER_A_SECOND


async def test_a_gateway_without_inventory_is_still_ready(
    http: aiohttp.ClientSession, gateway_without_inventory: ServiceProcess
) -> None:
    async with http.get(f"{gateway_without_inventory.url}/readyz") as response:
        assert response.status == 200


async def test_without_catalog_a_product_page_is_a_503_problem_to_retry(
    http: aiohttp.ClientSession, gateway_without_catalog: ServiceProcess
) -> None:
    start = time.perf_counter()
    headers = {"X-Request-ID": "catalog-down-1"}
    async with http.get(
        f"{gateway_without_catalog.url}{API}/products/1", headers=headers
    ) as response:
        text = await response.text()
        status, content_type = response.status, response.content_type
        retry_after = response.headers.get("Retry-After")
    elapsed = time.perf_counter() - start

    assert (status, content_type) == (503, "application/problem+json"), text
    assert retry_after is not None and int(retry_after) > 0
    body = json.loads(text)
    assert set(body) == {"type", "title", "status", "detail", "request_id"}
    assert (body["status"], body["title"], body["request_id"]) == (
        503,
        "Service Unavailable",
        "catalog-down-1",
    )
    assert "catalog" in body["detail"]
    assert "Traceback" not in text and 'File "' not in text and ".py" not in text
    assert elapsed < 1.5  # bounded by the catalog deadline (1 s), not hanging


async def test_without_catalog_the_list_and_categories_are_503_too(
    http: aiohttp.ClientSession, gateway_without_catalog: ServiceProcess
) -> None:
    for path in ("/products", "/products?category=kitchen", "/categories"):
        async with http.get(f"{gateway_without_catalog.url}{API}{path}") as response:
            assert response.status == 503, path
            assert response.content_type == "application/problem+json"
            assert "Retry-After" in response.headers


async def test_without_catalog_bad_parameters_are_still_422_not_503(
    http: aiohttp.ClientSession, gateway_without_catalog: ServiceProcess
) -> None:
    async with http.get(f"{gateway_without_catalog.url}{API}/products?page=0") as response:
        assert response.status == 422


async def test_a_gateway_without_catalog_says_it_is_not_ready(
    http: aiohttp.ClientSession, gateway_without_catalog: ServiceProcess
) -> None:
    async with http.get(f"{gateway_without_catalog.url}/readyz") as response:
        assert response.status == 503
        public = await response.json(content_type="application/problem+json")
    async with http.get(f"{gateway_without_catalog.internal_url}/readyz") as response:
        assert response.status == 503
        internal = await response.json(content_type="application/problem+json")

    assert "checks" not in public and "catalog" not in json.dumps(public)
    assert internal["checks"]["catalog"].startswith("failed")
