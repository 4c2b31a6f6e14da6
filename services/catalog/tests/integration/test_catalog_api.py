"""The catalog as its clients see it: a real process over real HTTP and real gRPC."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import grpc
import pytest
from souq.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from souq_chassis.testing import Reply, ServiceProcess, TokenIssuer, assert_problem, call

BODY_LIMIT = 64 * 1024
MAX_PRICE_CENTS = 100_000_000
MAX_IDS = 500
MAX_TERMS = 8


def ok(reply: Reply, status: int = 200) -> Any:
    assert reply.status == status, reply.text
    assert reply.content_type == "application/json"
    return reply.json()


async def all_products(http: aiohttp.ClientSession, **params: str) -> list[dict[str, Any]]:
    """Every product, page by page (the largest page size allowed)."""
    products: list[dict[str, Any]] = []
    page = 1
    while True:
        body = ok(
            await call(
                http,
                "GET",
                "/v1/products",
                params={**params, "page": str(page), "page_size": "100"},
            )
        )
        products += body["items"]
        if not body["items"] or len(products) >= body["total"]:
            assert len(products) == body["total"]
            return products
        page += 1


def words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+", text.lower())


def matches(product: Mapping[str, Any], query: str) -> bool:
    """Our own oracle: every word of the query starts some word of the name or description."""
    found = words(product["name"] + " " + product["description"])
    return all(any(w.startswith(term) for w in found) for term in words(query)[:MAX_TERMS])


async def search_ids(http: aiohttp.ClientSession, query: str, **params: str) -> list[int]:
    return [p["id"] for p in await all_products(http, q=query, **params)]


def unique_sku(prefix: str = "TST") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12].upper()}"


def product_body(sku: str, **changes: Any) -> dict[str, Any]:
    return {
        "sku": sku,
        "name": "Brass Lantern",
        "description": "A pierced brass lantern.",
        "category": "home-decor",
        "price": {"amount_cents": 3450, "currency": "USD"},
        "image_url": "/images/products/lantern.jpg",
        **changes,
    }


@pytest.fixture
async def created(http: aiohttp.ClientSession) -> AsyncIterator[dict[str, Any]]:
    """A product this test made through the admin API, with a word no other product has."""
    marker = f"zorblat{uuid.uuid4().hex[:10]}"
    body = product_body(unique_sku(), name=f"Copper {marker} Tray", description="Engraved.")
    product = ok(await call(http, "POST", "/v1/admin/products", body=body), 201)
    yield {**product, "marker": marker}


# Browsing


async def test_the_seeded_catalog_has_at_least_sixty_products_in_six_categories(
    http: aiohttp.ClientSession,
) -> None:
    products = await all_products(http)
    categories = ok(await call(http, "GET", "/v1/categories"))

    assert len(products) >= 60
    assert len({p["id"] for p in products}) == len(products)
    slugs = {c["slug"] for c in categories}
    assert len(slugs) >= 6
    used = {p["category"] for p in products}
    assert len(used) >= 6
    assert used <= slugs


async def test_categories_are_listed_by_name(http: aiohttp.ClientSession) -> None:
    categories = ok(await call(http, "GET", "/v1/categories"))

    names = [c["name"] for c in categories]
    assert names == sorted(names)
    assert all(c["name"].strip() and c["slug"] for c in categories)


async def test_a_page_reports_its_number_size_and_the_total(http: aiohttp.ClientSession) -> None:
    everything = await all_products(http)

    body = ok(await call(http, "GET", "/v1/products", params={"page": "3", "page_size": "7"}))

    assert (body["page"], body["page_size"], body["total"]) == (3, 7, len(everything))
    assert body["items"] == everything[14:21]


async def test_the_default_page_is_the_first_twenty_products(http: aiohttp.ClientSession) -> None:
    everything = await all_products(http)

    body = ok(await call(http, "GET", "/v1/products"))

    assert (body["page"], body["page_size"]) == (1, 20)
    assert body["items"] == everything[:20]


async def test_pages_do_not_overlap_and_together_cover_the_total(
    http: aiohttp.ClientSession,
) -> None:
    first = ok(await call(http, "GET", "/v1/products", params={"page_size": "9"}))
    pages = [first["items"]]
    for page in range(2, -(-first["total"] // 9) + 1):
        body = ok(
            await call(http, "GET", "/v1/products", params={"page": str(page), "page_size": "9"})
        )
        assert body["total"] == first["total"]
        pages.append(body["items"])

    ids = [p["id"] for items in pages for p in items]
    assert all(len(items) == 9 for items in pages[:-1])
    assert 1 <= len(pages[-1]) <= 9
    assert len(ids) == len(set(ids)) == first["total"]
    assert ids == sorted(ids)


async def test_a_page_past_the_end_is_empty_but_keeps_the_total(
    http: aiohttp.ClientSession,
) -> None:
    total = len(await all_products(http))

    body = ok(await call(http, "GET", "/v1/products", params={"page": "10000", "page_size": "100"}))

    assert body["items"] == []
    assert (body["page"], body["total"]) == (10000, total)


async def test_filtering_by_category_returns_exactly_that_category(
    http: aiohttp.ClientSession,
) -> None:
    everything = await all_products(http)
    for category in {p["category"] for p in everything}:
        in_category = await all_products(http, category=category)

        assert in_category == [p for p in everything if p["category"] == category]


async def test_an_unknown_category_filter_finds_nothing(http: aiohttp.ClientSession) -> None:
    body = ok(await call(http, "GET", "/v1/products", params={"category": "no-such-category"}))

    assert (body["items"], body["total"]) == ([], 0)


# Full-text search


async def test_searching_copper_finds_every_copper_product_and_nothing_else(
    http: aiohttp.ClientSession,
) -> None:
    everything = await all_products(http)
    expected = [p["id"] for p in everything if matches(p, "copper")]

    found = await search_ids(http, "copper")

    assert len(expected) >= 5
    assert found == expected


async def test_search_matches_the_start_of_words(http: aiohttp.ClientSession) -> None:
    everything = await all_products(http)
    copper = await search_ids(http, "copper")

    found = await search_ids(http, "copp")

    assert found == [p["id"] for p in everything if matches(p, "copp")]
    assert set(copper) <= set(found)


async def test_search_does_not_match_the_middle_of_words(http: aiohttp.ClientSession) -> None:
    everything = await all_products(http)

    found = await search_ids(http, "opper")

    assert any("opper" in p["name"].lower() for p in everything)
    assert found == [p["id"] for p in everything if matches(p, "opper")]


async def test_every_word_of_a_search_must_match(http: aiohttp.ClientSession) -> None:
    everything = await all_products(http)
    copper = await search_ids(http, "copper")

    found = await search_ids(http, "copper hammered")

    assert found == [p["id"] for p in everything if matches(p, "copper hammered")]
    assert 0 < len(found) < len(copper)
    assert set(found) <= set(copper)


async def test_search_ignores_case_and_punctuation(http: aiohttp.ClientSession) -> None:
    plain = await search_ids(http, "copper hammered")

    assert await search_ids(http, 'COPPER!!! "(Hammered)"...') == plain
    assert await search_ids(http, "copper_hammered") == plain


async def test_search_within_a_category_narrows_the_results(http: aiohttp.ClientSession) -> None:
    everything = await all_products(http)

    found = await search_ids(http, "copper", category="kitchen")

    expected = [p["id"] for p in everything if p["category"] == "kitchen" and matches(p, "copper")]
    assert found == expected
    assert 0 < len(found) < len(await search_ids(http, "copper"))


async def test_search_results_are_paged_with_their_own_total(http: aiohttp.ClientSession) -> None:
    copper = await search_ids(http, "copper")

    first = ok(await call(http, "GET", "/v1/products", params={"q": "copper", "page_size": "2"}))
    second = ok(
        await call(
            http, "GET", "/v1/products", params={"q": "copper", "page": "2", "page_size": "2"}
        )
    )

    assert first["total"] == second["total"] == len(copper)
    assert [p["id"] for p in first["items"] + second["items"]] == copper[:4]


async def test_a_search_matching_nothing_is_an_empty_page(http: aiohttp.ClientSession) -> None:
    body = ok(await call(http, "GET", "/v1/products", params={"q": "xylophonequartz"}))

    assert (body["items"], body["total"]) == ([], 0)


FTS_INJECTIONS = [
    '"',
    '""',
    '"copper',
    'copper"',
    "copper OR",
    "OR copper",
    "copper OR brass",
    "copper AND",
    "AND",
    "NOT copper",
    "copper NOT brass",
    "NEAR(",
    "NEAR(copper brass, 2)",
    "NEAR/2",
    "*",
    "copper*",
    "*copper",
    "copp*er",
    "(",
    ")",
    "copper) OR (brass",
    "name:copper",
    "description : copper",
    "{name description}: copper",
    "^copper",
    "-copper",
    "+copper",
    "copper + brass",
    "'",
    "%",
    "%%",
    "_",
    "\\",
    "\x00",
    "copper\x00",
    "\u202e",
    "😀",
    '" OR 1=1 --',
    "'; DROP TABLE products; --",
    "products_fts",
    "rank",
    "ROWID:1",
    "a " * 100,
    "copper " * 28,
]


@pytest.mark.parametrize("query", FTS_INJECTIONS, ids=[repr(q)[:24] for q in FTS_INJECTIONS])
async def test_search_syntax_is_never_interpreted_and_never_breaks_the_service(
    http: aiohttp.ClientSession, query: str
) -> None:
    reply = await call(http, "GET", "/v1/products", params={"q": query})

    if reply.status == 422:
        assert words(query) == []
        assert_problem(reply, 422)
        return
    page = ok(reply)
    assert words(query)
    everything = await all_products(http)
    expected = [p for p in everything if matches(p, query)]
    assert page["total"] == len(expected)
    assert page["items"] == expected[:20]


async def test_an_injected_search_leaves_the_catalog_intact(http: aiohttp.ClientSession) -> None:
    before = await all_products(http)

    for query in ["'; DROP TABLE products; --", '"); DELETE FROM products; --', "x' OR '1'='1"]:
        assert (await call(http, "GET", "/v1/products", params={"q": query})).status in (200, 422)

    assert await all_products(http) == before


# Single products


async def test_a_product_is_found_by_its_id_and_by_its_sku(http: aiohttp.ClientSession) -> None:
    listed = (await all_products(http))[17]

    by_id = ok(await call(http, "GET", f"/v1/products/{listed['id']}"))
    by_sku = ok(await call(http, "GET", f"/v1/products/by-sku/{listed['sku']}"))

    assert by_id == by_sku == listed


async def test_an_unknown_product_id_is_not_found(http: aiohttp.ClientSession) -> None:
    unknown = max(p["id"] for p in await all_products(http)) + 1000

    problem = assert_problem(await call(http, "GET", f"/v1/products/{unknown}"), 404)

    assert str(unknown) in problem["detail"]


async def test_an_unknown_sku_is_not_found(http: aiohttp.ClientSession) -> None:
    sku = unique_sku("NOPE")

    problem = assert_problem(await call(http, "GET", f"/v1/products/by-sku/{sku}"), 404)

    assert sku in problem["detail"]


# Admin: creating products and changing prices


async def test_a_created_product_is_returned_with_its_location(http: aiohttp.ClientSession) -> None:
    body = product_body(unique_sku())

    reply = await call(http, "POST", "/v1/admin/products", body=body)

    product = ok(reply, 201)
    assert isinstance(product["id"], int) and product["id"] > 0
    assert {k: product[k] for k in body} == body
    assert reply.headers["Location"] == f"/v1/products/{product['id']}"
    assert ok(await call(http, "GET", reply.headers["Location"])) == product
    assert ok(await call(http, "GET", f"/v1/products/by-sku/{body['sku']}")) == product


async def test_a_created_product_is_found_by_search_and_in_its_category(
    http: aiohttp.ClientSession, created: dict[str, Any]
) -> None:
    assert await search_ids(http, created["marker"]) == [created["id"]]
    assert await search_ids(http, created["marker"][:9]) == [created["id"]]
    assert created["id"] in await search_ids(http, f"copper {created['marker']}")
    assert created["id"] in [p["id"] for p in await all_products(http, category="home-decor")]


async def test_creating_a_product_with_a_taken_sku_is_a_conflict(
    http: aiohttp.ClientSession, created: dict[str, Any]
) -> None:
    seeded = (await all_products(http))[0]

    for sku in (created["sku"], seeded["sku"]):
        reply = await call(
            http, "POST", "/v1/admin/products", body=product_body(sku, name="Impostor")
        )
        problem = assert_problem(reply, 409)
        assert sku in problem["detail"]

    assert (
        ok(await call(http, "GET", f"/v1/products/by-sku/{created['sku']}"))["name"]
        == (created["name"])
    )
    assert ok(await call(http, "GET", f"/v1/products/by-sku/{seeded['sku']}")) == seeded


async def test_creating_the_same_sku_twice_at_once_creates_it_once(
    http: aiohttp.ClientSession,
) -> None:
    body = product_body(unique_sku())

    replies = await asyncio.gather(
        *(call(http, "POST", "/v1/admin/products", body=body) for _ in range(6))
    )

    assert sorted(r.status for r in replies) == [201] + [409] * 5
    for reply in replies:
        if reply.status == 409:
            assert_problem(reply, 409)


async def test_creating_a_product_in_an_unknown_category_is_rejected(
    http: aiohttp.ClientSession,
) -> None:
    sku = unique_sku()

    reply = await call(
        http, "POST", "/v1/admin/products", body=product_body(sku, category="no-such-category")
    )

    problem = assert_problem(reply, 422)
    assert "no-such-category" in problem["detail"]
    assert_problem(await call(http, "GET", f"/v1/products/by-sku/{sku}"), 404)


async def test_changing_a_price_is_seen_by_every_reader(
    http: aiohttp.ClientSession,
    catalog_rpc: catalog_pb2_grpc.CatalogServiceStub,
    created: dict[str, Any],
) -> None:
    new_price = {"amount_cents": created["price"]["amount_cents"] + 1234, "currency": "EUR"}

    changed = ok(
        await call(http, "PUT", f"/v1/admin/products/{created['id']}/price", body=new_price)
    )

    assert changed["price"] == new_price
    assert {k: v for k, v in changed.items() if k != "price"} == {
        k: v for k, v in created.items() if k not in ("price", "marker")
    }
    assert ok(await call(http, "GET", f"/v1/products/{created['id']}"))["price"] == new_price
    rpc = await catalog_rpc.GetProducts(catalog_pb2.GetProductsRequest(ids=[created["id"]]))
    assert (rpc.products[0].price.amount_cents, rpc.products[0].price.currency) == (
        new_price["amount_cents"],
        "EUR",
    )


async def test_changing_the_price_of_an_unknown_product_is_not_found(
    http: aiohttp.ClientSession,
) -> None:
    unknown = max(p["id"] for p in await all_products(http)) + 1000

    reply = await call(
        http,
        "PUT",
        f"/v1/admin/products/{unknown}/price",
        body={"amount_cents": 100, "currency": "USD"},
    )

    assert_problem(reply, 404)
    assert_problem(await call(http, "GET", f"/v1/products/{unknown}"), 404)


async def test_an_error_carries_the_callers_request_id(http: aiohttp.ClientSession) -> None:
    reply = await call(http, "GET", "/v1/products/abc", headers={"X-Request-ID": "req-catalog-1"})

    assert assert_problem(reply, 422)["request_id"] == "req-catalog-1"


# gRPC


async def test_get_products_answers_in_the_order_asked_and_lists_the_missing_ids(
    http: aiohttp.ClientSession, catalog_rpc: catalog_pb2_grpc.CatalogServiceStub
) -> None:
    everything = await all_products(http)
    by_id = {p["id"]: p for p in everything}
    a, b, c = everything[40]["id"], everything[3]["id"], everything[25]["id"]
    absent = max(by_id) + 1000

    response = await catalog_rpc.GetProducts(
        catalog_pb2.GetProductsRequest(ids=[a, absent, b, 2**62, c, -7])
    )

    assert [p.id for p in response.products] == [a, b, c]
    assert list(response.missing_ids) == [absent, 2**62, -7]
    for message in response.products:
        http_view = by_id[message.id]
        assert (
            message.sku,
            message.name,
            message.description,
            message.category,
            message.image_url,
        ) == (
            http_view["sku"],
            http_view["name"],
            http_view["description"],
            http_view["category"],
            http_view["image_url"],
        )
        assert {
            "amount_cents": message.price.amount_cents,
            "currency": message.price.currency,
        } == http_view["price"]


async def test_get_products_with_no_ids_returns_nothing(
    catalog_rpc: catalog_pb2_grpc.CatalogServiceStub,
) -> None:
    response = await catalog_rpc.GetProducts(catalog_pb2.GetProductsRequest(ids=[]))

    assert (list(response.products), list(response.missing_ids)) == ([], [])


async def test_get_products_takes_up_to_five_hundred_ids(
    http: aiohttp.ClientSession, catalog_rpc: catalog_pb2_grpc.CatalogServiceStub
) -> None:
    known = {p["id"] for p in await all_products(http)}
    ids = list(range(MAX_IDS, 0, -1))

    response = await catalog_rpc.GetProducts(catalog_pb2.GetProductsRequest(ids=ids))

    assert [p.id for p in response.products] == [i for i in ids if i in known]
    assert list(response.missing_ids) == [i for i in ids if i not in known]
    assert response.products and response.missing_ids


async def test_get_products_with_more_than_five_hundred_ids_is_an_invalid_argument(
    catalog_rpc: catalog_pb2_grpc.CatalogServiceStub,
) -> None:
    request = catalog_pb2.GetProductsRequest(ids=list(range(1, MAX_IDS + 2)))

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await catalog_rpc.GetProducts(request)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(MAX_IDS) in (raised.value.details() or "")


# Bad input, for every endpoint


def new(**changes: Any) -> dict[str, Any]:
    return {**product_body(unique_sku("BAD")), **changes}


def price(**changes: Any) -> dict[str, Any]:
    return {"amount_cents": 1500, "currency": "USD", **changes}


OVERSIZED = json.dumps(new(description="x" * (BODY_LIMIT + 10))).encode()
NESTED = b'{"a":' * 5000 + b"1" + b"}" * 5000

# (method, path, params, JSON body, raw body, status)
BAD_REQUESTS: list[Any] = [
    # GET /v1/products
    pytest.param("GET", "/v1/products", {"page": "abc"}, None, None, 422, id="list-page-abc"),
    pytest.param("GET", "/v1/products", {"page": "1.5"}, None, None, 422, id="list-page-float"),
    pytest.param("GET", "/v1/products", {"page": "0"}, None, None, 422, id="list-page-0"),
    pytest.param("GET", "/v1/products", {"page": "-1"}, None, None, 422, id="list-page-negative"),
    pytest.param("GET", "/v1/products", {"page": str(10**9)}, None, None, 422, id="list-page-1e9"),
    pytest.param("GET", "/v1/products", {"page": str(2**70)}, None, None, 422, id="list-page-2e70"),
    pytest.param(
        "GET", "/v1/products", {"page_size": "1000"}, None, None, 422, id="list-page-size-1000"
    ),
    pytest.param(
        "GET", "/v1/products", {"page_size": "101"}, None, None, 422, id="list-page-size-101"
    ),
    pytest.param("GET", "/v1/products", {"page_size": "0"}, None, None, 422, id="list-page-size-0"),
    pytest.param(
        "GET", "/v1/products", {"page_size": "ten"}, None, None, 422, id="list-page-size-word"
    ),
    pytest.param(
        "GET", "/v1/products", {"category": "Kitchen"}, None, None, 422, id="list-category-capitals"
    ),
    pytest.param(
        "GET", "/v1/products", {"category": "../kitchen"}, None, None, 422, id="list-category-path"
    ),
    pytest.param(
        "GET",
        "/v1/products",
        {"category": "kitchen' OR '1'='1"},
        None,
        None,
        422,
        id="list-category-sql",
    ),
    pytest.param("GET", "/v1/products", {"q": ""}, None, None, 422, id="list-q-empty"),
    pytest.param("GET", "/v1/products", {"q": "x" * 201}, None, None, 422, id="list-q-too-long"),
    pytest.param("GET", "/v1/products", {"q": '"*()'}, None, None, 422, id="list-q-no-words"),
    pytest.param("DELETE", "/v1/products", None, None, None, 405, id="list-delete"),
    # GET /v1/products/{id}
    pytest.param("GET", "/v1/products/x", None, None, None, 422, id="get-id-word"),
    pytest.param("GET", "/v1/products/1.5", None, None, None, 422, id="get-id-float"),
    pytest.param("GET", "/v1/products/1e3", None, None, None, 422, id="get-id-exponent"),
    pytest.param("GET", "/v1/products/0", None, None, None, 422, id="get-id-zero"),
    pytest.param("GET", "/v1/products/-1", None, None, None, 422, id="get-id-negative"),
    pytest.param("GET", f"/v1/products/{2**63}", None, None, None, 422, id="get-id-too-big"),
    pytest.param("GET", "/v1/products/987654321", None, None, None, 404, id="get-id-unknown"),
    pytest.param("DELETE", "/v1/products/1", None, None, None, 405, id="get-id-delete"),
    # GET /v1/products/by-sku/{sku}
    pytest.param("GET", "/v1/products/by-sku/kit-0001", None, None, None, 422, id="sku-lower"),
    pytest.param("GET", "/v1/products/by-sku/AB", None, None, None, 422, id="sku-short"),
    pytest.param("GET", "/v1/products/by-sku/" + "A" * 41, None, None, None, 422, id="sku-long"),
    pytest.param("GET", "/v1/products/by-sku/KIT_0001", None, None, None, 422, id="sku-underscore"),
    pytest.param("GET", "/v1/products/by-sku/KIT-0001%0A", None, None, None, 422, id="sku-newline"),
    pytest.param(
        "GET", "/v1/products/by-sku/KIT-0001%27%20OR%201=1", None, None, None, 422, id="sku-sql"
    ),
    pytest.param("GET", "/v1/products/by-sku/NOPE-000000", None, None, None, 404, id="sku-unknown"),
    # GET /v1/categories
    pytest.param(
        "POST", "/v1/categories", None, {"slug": "x", "name": "X"}, None, 405, id="categories-post"
    ),
    # POST /v1/admin/products
    pytest.param(
        "POST", "/v1/admin/products", None, new(sku="lower-1"), None, 422, id="create-sku-lower"
    ),
    pytest.param(
        "POST", "/v1/admin/products", None, new(sku="A" * 41), None, 422, id="create-sku-long"
    ),
    pytest.param(
        "POST", "/v1/admin/products", None, new(sku=1234), None, 422, id="create-sku-number"
    ),
    pytest.param(
        "POST", "/v1/admin/products", None, new(name=""), None, 422, id="create-name-empty"
    ),
    pytest.param(
        "POST", "/v1/admin/products", None, new(name="n" * 201), None, 422, id="create-name-long"
    ),
    pytest.param(
        "POST", "/v1/admin/products", None, new(name=5), None, 422, id="create-name-number"
    ),
    pytest.param(
        "POST", "/v1/admin/products", None, new(name=None), None, 422, id="create-name-null"
    ),
    pytest.param(
        "POST",
        "/v1/admin/products",
        None,
        new(description="d" * 4001),
        None,
        422,
        id="create-description-long",
    ),
    pytest.param(
        "POST",
        "/v1/admin/products",
        None,
        new(category="Home Decor"),
        None,
        422,
        id="create-category-malformed",
    ),
    pytest.param(
        "POST",
        "/v1/admin/products",
        None,
        new(category="no-such-category"),
        None,
        422,
        id="create-category-unknown",
    ),
    pytest.param(
        "POST",
        "/v1/admin/products",
        None,
        new(image_url="u" * 501),
        None,
        422,
        id="create-image-url-long",
    ),
    pytest.param(
        "POST",
        "/v1/admin/products",
        None,
        new(price=price(amount_cents=12.5)),
        None,
        422,
        id="create-amount-float",
    ),
    pytest.param(
        "POST",
        "/v1/admin/products",
        None,
        new(price=price(amount_cents="12")),
        None,
        422,
        id="create-amount-string",
    ),
    pytest.param(
        "POST",
        "/v1/admin/products",
        None,
        new(price=price(amount_cents=True)),
        None,
        422,
        id="create-amount-bool",
    ),
    pytest.param(
        "POST",
        "/v1/admin/products",
        None,
        new(price=price(amount_cents=0)),
        None,
        422,
        id="create-amount-zero",
    ),
    pytest.param(
        "POST",
        "/v1/admin/products",
        None,
        new(price=price(amount_cents=-100)),
        None,
        422,
        id="create-amount-negative",
    ),
    pytest.param(
        "POST",
        "/v1/admin/products",
        None,
        new(price=price(amount_cents=MAX_PRICE_CENTS + 1)),
        None,
        422,
        id="create-amount-over-max",
    ),
    pytest.param(
        "POST",
        "/v1/admin/products",
        None,
        new(price=price(amount_cents=10**30)),
        None,
        422,
        id="create-amount-huge",
    ),
    pytest.param(
        "POST",
        "/v1/admin/products",
        None,
        new(price=price(currency="usd")),
        None,
        422,
        id="create-currency-lower",
    ),
    pytest.param(
        "POST",
        "/v1/admin/products",
        None,
        new(price=price(currency="USD\n")),
        None,
        422,
        id="create-currency-newline",
    ),
    pytest.param(
        "POST", "/v1/admin/products", None, new(price=1500), None, 422, id="create-price-number"
    ),
    pytest.param(
        "POST",
        "/v1/admin/products",
        None,
        new(price=price(tax=1)),
        None,
        422,
        id="create-price-extra-field",
    ),
    pytest.param(
        "POST", "/v1/admin/products", None, new(featured=True), None, 422, id="create-extra-field"
    ),
    pytest.param("POST", "/v1/admin/products", None, new(id=1), None, 422, id="create-id-given"),
    pytest.param(
        "POST",
        "/v1/admin/products",
        None,
        {"sku": "BAD-MISSING"},
        None,
        422,
        id="create-fields-missing",
    ),
    pytest.param("POST", "/v1/admin/products", None, [new()], None, 422, id="create-list"),
    pytest.param("POST", "/v1/admin/products", None, None, b"", 422, id="create-no-body"),
    pytest.param("POST", "/v1/admin/products", None, None, b"null", 422, id="create-null"),
    pytest.param(
        "POST",
        "/v1/admin/products",
        None,
        None,
        b'{"sku": "BAD-1", ',
        422,
        id="create-malformed-json",
    ),
    pytest.param(
        "POST", "/v1/admin/products", None, None, b"\xff\xfe\x00", 400, id="create-not-utf8"
    ),
    pytest.param(
        "POST",
        "/v1/admin/products",
        None,
        None,
        b'{"sku":"BAD-NAN","name":"x","category":"kitchen",'
        b'"price":{"amount_cents":NaN,"currency":"USD"}}',
        422,
        id="create-nan",
    ),
    pytest.param(
        "POST",
        "/v1/admin/products",
        None,
        None,
        b'{"sku":"BAD-SUR","name":"\\ud800","category":"kitchen",'
        b'"price":{"amount_cents":1,"currency":"USD"}}',
        422,
        id="create-lone-surrogate",
    ),
    pytest.param("POST", "/v1/admin/products", None, None, NESTED, 400, id="create-deep-json"),
    pytest.param("POST", "/v1/admin/products", None, None, OVERSIZED, 413, id="create-oversized"),
    pytest.param("GET", "/v1/admin/products", None, None, None, 405, id="create-get"),
    # PUT /v1/admin/products/{id}/price
    pytest.param("PUT", "/v1/admin/products/x/price", None, price(), None, 422, id="price-id-word"),
    pytest.param("PUT", "/v1/admin/products/0/price", None, price(), None, 422, id="price-id-zero"),
    pytest.param(
        "PUT", "/v1/admin/products/987654321/price", None, price(), None, 404, id="price-id-unknown"
    ),
    pytest.param(
        "PUT",
        "/v1/admin/products/1/price",
        None,
        price(amount_cents=12.5),
        None,
        422,
        id="price-amount-float",
    ),
    pytest.param(
        "PUT",
        "/v1/admin/products/1/price",
        None,
        price(amount_cents="12"),
        None,
        422,
        id="price-amount-string",
    ),
    pytest.param(
        "PUT",
        "/v1/admin/products/1/price",
        None,
        price(amount_cents=0),
        None,
        422,
        id="price-amount-zero",
    ),
    pytest.param(
        "PUT",
        "/v1/admin/products/1/price",
        None,
        price(amount_cents=-1),
        None,
        422,
        id="price-amount-negative",
    ),
    pytest.param(
        "PUT",
        "/v1/admin/products/1/price",
        None,
        price(amount_cents=MAX_PRICE_CENTS + 1),
        None,
        422,
        id="price-amount-over-max",
    ),
    pytest.param(
        "PUT",
        "/v1/admin/products/1/price",
        None,
        price(currency="usd"),
        None,
        422,
        id="price-currency-lower",
    ),
    pytest.param(
        "PUT",
        "/v1/admin/products/1/price",
        None,
        price(currency="EURO"),
        None,
        422,
        id="price-currency-four-letters",
    ),
    pytest.param(
        "PUT",
        "/v1/admin/products/1/price",
        None,
        price(currency=None),
        None,
        422,
        id="price-currency-null",
    ),
    pytest.param(
        "PUT",
        "/v1/admin/products/1/price",
        None,
        {"amount_cents": 100},
        None,
        422,
        id="price-currency-missing",
    ),
    pytest.param(
        "PUT",
        "/v1/admin/products/1/price",
        None,
        price(note="sale"),
        None,
        422,
        id="price-extra-field",
    ),
    pytest.param(
        "PUT",
        "/v1/admin/products/1/price",
        None,
        None,
        b"{amount_cents: 5}",
        422,
        id="price-malformed-json",
    ),
    pytest.param("PUT", "/v1/admin/products/1/price", None, None, b"", 422, id="price-no-body"),
    pytest.param(
        "PUT",
        "/v1/admin/products/1/price",
        None,
        None,
        json.dumps(price(note="n" * (BODY_LIMIT + 10))).encode(),
        413,
        id="price-oversized",
    ),
    pytest.param("POST", "/v1/admin/products/1/price", None, price(), None, 405, id="price-post"),
    # Nowhere
    pytest.param("GET", "/v1/nowhere", None, None, None, 404, id="unknown-route"),
]


@pytest.mark.parametrize(("method", "path", "params", "body", "raw", "status"), BAD_REQUESTS)
async def test_bad_input_is_a_problem_never_a_server_error(
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    params: dict[str, str] | None,
    body: Any,
    raw: bytes | None,
    status: int,
) -> None:
    reply = await call(http, method, path, params=params, body=body, raw=raw)

    assert_problem(reply, status)


async def test_bad_input_changes_nothing(http: aiohttp.ClientSession) -> None:
    before = await all_products(http)
    target = before[5]

    for body in (price(amount_cents=0), price(currency="usd"), price(amount_cents=12.5)):
        assert_problem(
            await call(http, "PUT", f"/v1/admin/products/{target['id']}/price", body=body), 422
        )
    for bad in (new(price=price(amount_cents=-1)), new(category="Nope"), new(extra=1)):
        assert_problem(await call(http, "POST", "/v1/admin/products", body=bad), 422)
        assert_problem(await call(http, "GET", f"/v1/products/by-sku/{bad['sku']}"), 404)
    assert_problem(await call(http, "POST", "/v1/admin/products", raw=OVERSIZED), 413)

    assert await all_products(http) == before


async def test_a_streamed_body_over_the_limit_is_refused(http: aiohttp.ClientSession) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(BODY_LIMIT // 1024 + 8):
            yield b" " * 1024

    async with http.post(
        "/v1/admin/products", data=chunks(), headers={"content-type": "application/json"}
    ) as r:
        assert "Content-Length" not in r.request_info.headers
        reply = Reply(r.status, r.content_type, r.headers.copy(), await r.text())

    assert "Traceback" not in reply.text
    assert_problem(reply, 413)


async def test_a_form_body_is_refused_as_invalid(http: aiohttp.ClientSession) -> None:
    async with http.post("/v1/admin/products", data={"sku": "FORM-0001", "name": "x"}) as r:
        reply = Reply(r.status, r.content_type, r.headers.copy(), await r.text())

    assert_problem(reply, 422)
    assert_problem(await call(http, "GET", "/v1/products/by-sku/FORM-0001"), 404)


# Who may change the catalog


ADMIN_ROUTES = [
    ("POST", "/v1/admin/products"),
    ("PUT", "/v1/admin/products/1/price"),
    ("GET", "/v1/admin/outbox"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
async def test_admin_routes_refuse_anyone_without_a_valid_admin_token(
    anonymous: aiohttp.ClientSession, issuer: TokenIssuer, method: str, path: str
) -> None:
    body = {"amount_cents": 100, "currency": "USD"}
    unsigned = await call(anonymous, method, path, body=body)
    assert assert_problem(unsigned, 401)["detail"]
    assert unsigned.headers["WWW-Authenticate"].startswith("Bearer")
    for kind, token in issuer.forged().items():
        reply = await call(anonymous, method, path, body=body, headers=bearer(token))
        assert reply.status == 401, (kind, reply.text)
    customer = issuer.bearer("customer-1", ("customer",))
    assert_problem(await call(anonymous, method, path, body=body, headers=customer), 403)


async def test_a_price_change_commits_a_product_price_changed_event(
    http: aiohttp.ClientSession, catalog: ServiceProcess, created: dict[str, Any]
) -> None:
    new_price = {"amount_cents": created["price"]["amount_cents"] + 1, "currency": "USD"}

    ok(await call(http, "PUT", f"/v1/admin/products/{created['id']}/price", body=new_price))
    ok(await call(http, "PUT", f"/v1/admin/products/{created['id']}/price", body=new_price))

    assert catalog.data_dir is not None
    with sqlite3.connect(catalog.data_dir / "catalog.db") as db:  # its own outbox table
        bodies = db.execute(
            "SELECT body FROM outbox WHERE type = 'catalog.ProductPriceChanged.v1'"
        ).fetchall()
    events = [json.loads(body)["data"] for (body,) in bodies]
    changes = [e for e in events if e["product_id"] == created["id"]]
    assert len(changes) == 1  # setting the same price again is no change
    assert changes[0]["price"] == new_price
    assert changes[0]["previous_price"] == created["price"]
    assert changes[0]["sku"] == created["sku"]


async def test_each_price_change_carries_the_next_price_version_of_its_product(
    http: aiohttp.ClientSession, catalog: ServiceProcess, created: dict[str, Any]
) -> None:
    path = f"/v1/admin/products/{created['id']}/price"
    for cents in (101, 102, 103):
        ok(await call(http, "PUT", path, body={"amount_cents": cents, "currency": "USD"}))

    assert catalog.data_dir is not None
    with sqlite3.connect(catalog.data_dir / "catalog.db") as db:
        bodies = db.execute(
            "SELECT body FROM outbox WHERE type = 'catalog.ProductPriceChanged.v1' ORDER BY seq"
        ).fetchall()
    events = [json.loads(body)["data"] for (body,) in bodies]
    changes = [e for e in events if e["product_id"] == created["id"]]
    assert [(e["price"]["amount_cents"], e["price_version"]) for e in changes] == [
        (101, 1),
        (102, 2),
        (103, 3),
    ]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# Content a storefront would show: refused when it could run or mislead there

UNSAFE_PRODUCTS = [
    pytest.param({"image_url": "javascript:alert(document.cookie)"}, "image_url", id="js-url"),
    pytest.param({"image_url": "JaVaScRiPt:alert(1)"}, "image_url", id="js-url-mixed-case"),
    pytest.param({"image_url": " javascript:alert(1)"}, "image_url", id="js-url-space"),
    pytest.param({"image_url": "java\tscript:alert(1)"}, "image_url", id="js-url-tab"),
    pytest.param({"image_url": "data:text/html,<script>x</script>"}, "image_url", id="data-url"),
    pytest.param({"image_url": "vbscript:msgbox(1)"}, "image_url", id="vbscript-url"),
    pytest.param({"image_url": "//evil.example/x.jpg"}, "image_url", id="protocol-relative"),
    pytest.param({"image_url": "/\\evil.example/x.jpg"}, "image_url", id="backslash-host"),
    pytest.param({"image_url": "https:///x.jpg"}, "image_url", id="https-no-host"),
    pytest.param({"image_url": "images/x.jpg"}, "image_url", id="relative-path"),
    pytest.param({"name": "<img src=x onerror=alert(1)>"}, "name", id="html-name"),
    pytest.param({"name": "Lamp\u202egnp.exe"}, "name", id="bidi-override-name"),
    pytest.param({"name": "Lamp\x00"}, "name", id="nul-name"),
    pytest.param({"description": "<script>alert(1)</script>"}, "description", id="html-desc"),
    pytest.param({"description": "a\x1b[31m"}, "description", id="escape-desc"),
    pytest.param({"price": {"amount_cents": 100, "currency": "ABC"}}, "currency", id="not-iso"),
    pytest.param({"price": {"amount_cents": 100, "currency": "XTS"}}, "currency", id="test-code"),
]


@pytest.mark.parametrize(("changes", "field"), UNSAFE_PRODUCTS)
async def test_content_a_storefront_could_execute_is_refused_with_a_clear_problem(
    http: aiohttp.ClientSession, changes: dict[str, Any], field: str
) -> None:
    body = new(**changes)

    problem = assert_problem(await call(http, "POST", "/v1/admin/products", body=body), 422)

    assert field in json.dumps(problem)
    assert_problem(await call(http, "GET", f"/v1/products/by-sku/{body['sku']}"), 404)


async def test_a_price_in_a_currency_that_is_not_iso_4217_is_refused(
    http: aiohttp.ClientSession, created: dict[str, Any]
) -> None:
    path = f"/v1/admin/products/{created['id']}/price"

    problem = assert_problem(await call(http, "PUT", path, body=price(currency="QQQ")), 422)

    assert "ISO 4217" in json.dumps(problem)
    assert ok(await call(http, "PUT", path, body=price(currency="EUR")))["price"]["currency"] == (
        "EUR"
    )


@pytest.mark.parametrize(
    "image_url",
    ["", "/images/products/lantern.jpg", "https://cdn.example/a.jpg", "http://img.example/b.png"],
)
async def test_plain_text_and_real_image_urls_are_accepted(
    http: aiohttp.ClientSession, image_url: str
) -> None:
    body = new(name='Brass & Copper "Moon" Lantern', description="Line one.\nLine two.")
    body["image_url"] = image_url

    product = ok(await call(http, "POST", "/v1/admin/products", body=body), 201)

    assert (product["name"], product["image_url"]) == (body["name"], image_url)
