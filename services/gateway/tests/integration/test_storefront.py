"""The storefront shows what catalog and inventory say, joined, and as they say it now."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from souq_chassis.testing import ServiceProcess, TokenIssuer

API = "/api/v1"
LOW_STOCK_AT_MOST = 5  # units: the storefront's published low-stock line


def label_for(available: int) -> str:
    """The availability a shopper should see for what inventory reports sellable."""
    if available <= 0:
        return "out_of_stock"
    return "low_stock" if available <= LOW_STOCK_AT_MOST else "in_stock"


async def get_json(http: aiohttp.ClientSession, url: str, **params: Any) -> Any:
    async with http.get(url, params=params) as response:
        assert response.status == 200, (
            f"GET {url} {params}: {response.status} {await response.text()}"
        )
        assert response.content_type == "application/json"
        return await response.json()


@pytest.fixture
def stock_of(
    http: aiohttp.ClientSession, inventory: ServiceProcess, issuer: TokenIssuer
) -> Callable[[str], Awaitable[int | None]]:
    """`await stock_of(sku)`: units inventory says are available, asked directly (as an
    administrator: stock levels are not public); None if it has no record of the SKU."""
    admin = issuer.bearer("stock-reader", ("admin",))

    async def available(sku: str) -> int | None:
        async with http.get(f"{inventory.url}/v1/stock/{sku}", headers=admin) as response:
            if response.status == 404:
                return None
            assert response.status == 200
            return int((await response.json())["available"])

    return available


@pytest.mark.parametrize(
    ("sku", "expected"),
    [("KIT-0001", "in_stock"), ("TEX-0002", "low_stock"), ("DEC-0012", "out_of_stock")],
)
async def test_a_product_page_joins_catalog_details_with_inventory_stock(
    http: aiohttp.ClientSession,
    gateway: ServiceProcess,
    catalog: ServiceProcess,
    inventory: ServiceProcess,
    sku: str,
    expected: str,
    stock_of: Callable[[str], Awaitable[int | None]],
) -> None:
    from_catalog = await get_json(http, f"{catalog.url}/v1/products/by-sku/{sku}")
    available = await stock_of(sku)

    page = await get_json(http, f"{gateway.url}{API}/products/{from_catalog['id']}")

    assert available is not None
    assert {k: page[k] for k in from_catalog} == from_catalog  # id, sku, name, price, ...
    assert page["available_quantity"] == available
    assert page["availability"] == expected == label_for(available)


async def test_the_product_list_shows_availability_for_every_item(
    http: aiohttp.ClientSession,
    gateway: ServiceProcess,
    catalog: ServiceProcess,
    inventory: ServiceProcess,
    stock_of: Callable[[str], Awaitable[int | None]],
) -> None:
    listing = await get_json(http, f"{gateway.url}{API}/products", page_size=100)
    from_catalog = await get_json(http, f"{catalog.url}/v1/products", page_size=100)

    assert listing["total"] == from_catalog["total"] == len(listing["items"])
    assert [item["id"] for item in listing["items"]] == [p["id"] for p in from_catalog["items"]]
    seen = set()
    for item, product in zip(listing["items"], from_catalog["items"], strict=True):
        available = await stock_of(item["sku"])
        assert item["name"] == product["name"] and item["price"] == product["price"]
        assert item["available_quantity"] == (available or 0), item["sku"]
        assert item["availability"] == label_for(available or 0), item["sku"]
        seen.add(item["availability"])
    assert seen == {"in_stock", "low_stock", "out_of_stock"}


async def test_pages_of_the_list_are_catalog_pages(
    http: aiohttp.ClientSession, gateway: ServiceProcess, catalog: ServiceProcess
) -> None:
    first = await get_json(http, f"{gateway.url}{API}/products", page=1, page_size=5)
    second = await get_json(http, f"{gateway.url}{API}/products", page=2, page_size=5)
    from_catalog = await get_json(http, f"{catalog.url}/v1/products", page=2, page_size=5)

    assert (second["page"], second["page_size"], second["total"]) == (2, 5, from_catalog["total"])
    assert [p["id"] for p in second["items"]] == [p["id"] for p in from_catalog["items"]]
    assert len(first["items"]) == len(second["items"]) == 5
    assert not {p["id"] for p in first["items"]} & {p["id"] for p in second["items"]}


async def test_a_page_past_the_end_is_empty_with_the_true_total(
    http: aiohttp.ClientSession, gateway: ServiceProcess, catalog: ServiceProcess
) -> None:
    beyond = await get_json(http, f"{gateway.url}{API}/products", page=500, page_size=100)
    everything = await get_json(http, f"{catalog.url}/v1/products", page_size=1)

    assert beyond["items"] == []
    assert beyond["total"] == everything["total"] > 0


async def test_the_category_filter_passes_through_to_catalog(
    http: aiohttp.ClientSession, gateway: ServiceProcess, catalog: ServiceProcess
) -> None:
    outdoors = await get_json(
        http, f"{gateway.url}{API}/products", category="outdoors", page_size=100
    )
    from_catalog = await get_json(
        http, f"{catalog.url}/v1/products", category="outdoors", page_size=100
    )
    everything = await get_json(http, f"{catalog.url}/v1/products", page_size=1)

    assert {p["category"] for p in outdoors["items"]} == {"outdoors"}
    assert [p["id"] for p in outdoors["items"]] == [p["id"] for p in from_catalog["items"]]
    assert 0 < outdoors["total"] == from_catalog["total"] < everything["total"]


async def test_search_passes_through_to_catalog(
    http: aiohttp.ClientSession, gateway: ServiceProcess, catalog: ServiceProcess
) -> None:
    found = await get_json(http, f"{gateway.url}{API}/products", q="copper", page_size=100)
    from_catalog = await get_json(http, f"{catalog.url}/v1/products", q="copper", page_size=100)
    everything = await get_json(http, f"{catalog.url}/v1/products", page_size=1)

    assert [p["id"] for p in found["items"]] == [p["id"] for p in from_catalog["items"]]
    assert 0 < found["total"] == from_catalog["total"] < everything["total"]
    for product in found["items"]:
        assert "copper" in (product["name"] + product["description"]).lower()
        assert product["availability"] in {"in_stock", "low_stock", "out_of_stock"}


async def test_search_within_a_category_applies_both(
    http: aiohttp.ClientSession, gateway: ServiceProcess, catalog: ServiceProcess
) -> None:
    params = {"q": "copper", "category": "kitchen", "page_size": 100}
    found = await get_json(http, f"{gateway.url}{API}/products", **params)
    anywhere = await get_json(http, f"{gateway.url}{API}/products", q="copper", page_size=100)
    from_catalog = await get_json(http, f"{catalog.url}/v1/products", **params)

    assert [p["id"] for p in found["items"]] == [p["id"] for p in from_catalog["items"]]
    assert {p["category"] for p in found["items"]} == {"kitchen"}
    assert 0 < found["total"] < anywhere["total"]


async def test_a_search_nothing_matches_is_an_empty_page(
    http: aiohttp.ClientSession, gateway: ServiceProcess
) -> None:
    found = await get_json(http, f"{gateway.url}{API}/products", q="zzzyxxnothing")

    assert (found["items"], found["total"]) == ([], 0)


async def test_categories_are_catalogs_categories(
    http: aiohttp.ClientSession, gateway: ServiceProcess, catalog: ServiceProcess
) -> None:
    categories = await get_json(http, f"{gateway.url}{API}/categories")

    assert categories == await get_json(http, f"{catalog.url}/v1/categories")
    assert {"slug": "outdoors", "name": "Outdoors & Garden"} in categories


async def test_a_product_inventory_does_not_track_cannot_be_bought_until_restocked(
    http: aiohttp.ClientSession,
    gateway: ServiceProcess,
    inventory: ServiceProcess,
    issuer: TokenIssuer,
    stock_of: Callable[[str], Awaitable[int | None]],
) -> None:
    new = {
        "sku": "TST-UNTRACKED-1",
        "name": "Test Brass Bell",
        "description": "Rings.",
        "category": "home-decor",
        "price": {"amount_cents": 1234, "currency": "USD"},
    }
    admin = issuer.bearer("admin-1", ("admin",))
    create = f"{gateway.url}{API}/admin/products"
    async with http.post(create, json=new, headers=admin) as response:
        assert response.status == 201, await response.text()
        product_id = (await response.json())["id"]
    url = f"{gateway.url}{API}/products/{product_id}"

    untracked = await get_json(http, url)
    assert await stock_of(new["sku"]) is None
    assert (untracked["sku"], untracked["price"]) == (new["sku"], new["price"])
    assert (untracked["availability"], untracked["available_quantity"]) == ("out_of_stock", 0)

    restock = f"{gateway.url}{API}/admin/stock/{new['sku']}/restock"
    async with http.post(restock, json={"quantity": 5}, headers=admin) as response:
        assert response.status == 200, await response.text()
    low = await get_json(http, url)  # five units: the most that is still "low"
    async with http.post(restock, json={"quantity": 1}, headers=admin) as response:
        assert response.status == 200, await response.text()
    plenty = await get_json(http, url)

    assert (low["availability"], low["available_quantity"]) == ("low_stock", 5)
    assert (plenty["availability"], plenty["available_quantity"]) == ("in_stock", 6)


async def test_a_price_change_in_catalog_shows_on_the_next_page_view(
    http: aiohttp.ClientSession,
    gateway: ServiceProcess,
    catalog: ServiceProcess,
    issuer: TokenIssuer,
) -> None:
    product = await get_json(http, f"{catalog.url}/v1/products/by-sku/OUT-0011")
    new_price = {"amount_cents": product["price"]["amount_cents"] + 101, "currency": "USD"}
    before = await get_json(http, f"{gateway.url}{API}/products/{product['id']}")

    change = f"{gateway.url}{API}/admin/products/{product['id']}/price"
    async with http.put(change, json=new_price, headers=issuer.bearer("a", ("admin",))) as response:
        assert response.status == 200, await response.text()
    after = await get_json(http, f"{gateway.url}{API}/products/{product['id']}")

    assert before["price"] == product["price"]
    assert after["price"] == new_price
