"""The cart as its clients see it: a real process, signed-in users, a real catalog and broker."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from souq.events import ProductPriceChanged
from souq.events.topology import SUBSCRIPTIONS
from souq_chassis.messaging.broker import Outgoing, open_broker
from souq_chassis.messaging.envelope import encode, wrap
from souq_chassis.testing import Reply, TokenIssuer, assert_problem, call

SignIn = Callable[[], dict[str, str]]
MAX_QUANTITY = 99
MAX_LINES = 50
UNKNOWN_PRODUCT = 987_654
# Products whose price a test changes, each its own, so no other test sees the change.
PRICE_CHANGED_IN_CATALOG = 30
EVENTS_IN_DISORDER = (31, 32)
FORGED_FUTURE = 33
VERSIONS_IN_DISORDER = (34, 35)
EMPTY_CART = {"items": [], "totals": [], "item_count": 0}


def ok(reply: Reply, status: int = 200) -> Any:
    assert reply.status == status, reply.text
    assert reply.content_type == "application/json"
    return reply.json()


async def cart_of(http: aiohttp.ClientSession, user: dict[str, str]) -> dict[str, Any]:
    cart: dict[str, Any] = ok(await call(http, "GET", "/v1/cart", headers=user))
    return cart


async def add(
    http: aiohttp.ClientSession, user: dict[str, str], product_id: Any, quantity: Any
) -> Reply:
    body = {"product_id": product_id, "quantity": quantity}
    return await call(http, "POST", "/v1/cart/items", body=body, headers=user)


async def product(catalog_http: aiohttp.ClientSession, product_id: int) -> dict[str, Any]:
    found: dict[str, Any] = ok(await call(catalog_http, "GET", f"/v1/products/{product_id}"))
    return found


def quantities(cart: dict[str, Any]) -> dict[int, int]:
    return {item["product_id"]: item["quantity"] for item in cart["items"]}


def unit_prices(cart: dict[str, Any]) -> dict[int, int]:
    return {item["product_id"]: item["unit_price"]["amount_cents"] for item in cart["items"]}


async def eventually(
    read: Callable[[], Awaitable[dict[str, Any]]],
    done: Callable[[dict[str, Any]], bool],
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """Read until `done` holds (bounded); the last read either way."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await read()
        if done(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


# The round trip


async def test_a_new_users_cart_is_empty(http: aiohttp.ClientSession, sign_in: SignIn) -> None:
    assert await cart_of(http, sign_in()) == EMPTY_CART


async def test_added_products_show_with_catalogs_names_and_prices_and_their_totals(
    http: aiohttp.ClientSession, catalog_http: aiohttp.ClientSession, sign_in: SignIn
) -> None:
    user = sign_in()
    first, second = await product(catalog_http, 1), await product(catalog_http, 2)

    after_first = ok(await add(http, user, 1, 2), 201)
    after_second = ok(await add(http, user, 2, 1), 201)
    cart = await cart_of(http, user)

    def item(p: dict[str, Any], quantity: int) -> dict[str, Any]:
        total = {"amount_cents": p["price"]["amount_cents"] * quantity, "currency": "USD"}
        return {
            "product_id": p["id"],
            "sku": p["sku"],
            "name": p["name"],
            "unit_price": p["price"],
            "quantity": quantity,
            "line_total": total,
        }

    grand_total = first["price"]["amount_cents"] * 2 + second["price"]["amount_cents"]
    assert after_first["items"] == [item(first, 2)]
    assert cart == after_second
    assert cart == {
        "items": [item(first, 2), item(second, 1)],
        "totals": [{"amount_cents": grand_total, "currency": "USD"}],
        "item_count": 3,
    }


async def test_adding_a_product_already_in_the_cart_adds_to_its_quantity(
    http: aiohttp.ClientSession, sign_in: SignIn
) -> None:
    user = sign_in()
    ok(await add(http, user, 3, 2), 201)
    ok(await add(http, user, 4, 1), 201)

    cart = ok(await add(http, user, 3, 5), 201)

    assert [(i["product_id"], i["quantity"]) for i in cart["items"]] == [(3, 7), (4, 1)]
    assert cart["item_count"] == 8
    assert await cart_of(http, user) == cart


async def test_changing_a_quantity_sets_it_and_reprices_the_line(
    http: aiohttp.ClientSession, sign_in: SignIn
) -> None:
    user = sign_in()
    ok(await add(http, user, 5, 4), 201)
    ok(await add(http, user, 6, 1), 201)

    cart = ok(await call(http, "PATCH", "/v1/cart/items/5", body={"quantity": 2}, headers=user))

    line = cart["items"][0]
    assert quantities(cart) == {5: 2, 6: 1}
    assert line["line_total"]["amount_cents"] == line["unit_price"]["amount_cents"] * 2
    assert cart["item_count"] == 3
    assert await cart_of(http, user) == cart


async def test_removing_a_line_leaves_the_others(
    http: aiohttp.ClientSession, sign_in: SignIn
) -> None:
    user = sign_in()
    ok(await add(http, user, 7, 1), 201)
    ok(await add(http, user, 8, 3), 201)

    reply = await call(http, "DELETE", "/v1/cart/items/7", headers=user)

    assert (reply.status, reply.text) == (204, "")
    cart = await cart_of(http, user)
    assert quantities(cart) == {8: 3}
    assert cart["totals"] == [cart["items"][0]["line_total"]]


async def test_clearing_the_cart_empties_it(http: aiohttp.ClientSession, sign_in: SignIn) -> None:
    user = sign_in()
    ok(await add(http, user, 9, 1), 201)
    ok(await add(http, user, 10, 2), 201)

    reply = await call(http, "DELETE", "/v1/cart", headers=user)

    assert (reply.status, reply.text) == (204, "")
    assert await cart_of(http, user) == EMPTY_CART
    again = await call(http, "DELETE", "/v1/cart", headers=user)
    assert again.status == 204


# Limits


async def test_adding_up_to_the_maximum_quantity_is_accepted_and_beyond_it_is_refused(
    http: aiohttp.ClientSession, sign_in: SignIn
) -> None:
    user = sign_in()
    ok(await add(http, user, 11, 60), 201)

    problem = assert_problem(await add(http, user, 11, 40), 422)
    assert str(MAX_QUANTITY) in problem["detail"]
    assert quantities(await cart_of(http, user)) == {11: 60}

    assert quantities(ok(await add(http, user, 11, 39), 201)) == {11: MAX_QUANTITY}
    assert_problem(await add(http, user, 11, 1), 422)
    assert quantities(await cart_of(http, user)) == {11: MAX_QUANTITY}


async def test_concurrent_adds_of_one_product_all_count_up_to_the_maximum(
    http: aiohttp.ClientSession, sign_in: SignIn
) -> None:
    user = sign_in()

    replies = await asyncio.gather(*(add(http, user, 22, 9) for _ in range(12)))

    statuses = sorted(reply.status for reply in replies)
    assert statuses == [201] * 11 + [422]  # 11 x 9 = 99; a twelfth would make 108
    assert quantities(await cart_of(http, user)) == {22: MAX_QUANTITY}


async def test_a_cart_holds_at_most_fifty_different_products(
    http: aiohttp.ClientSession, sign_in: SignIn
) -> None:
    user = sign_in()
    for product_id in range(1, MAX_LINES + 1):
        assert (await add(http, user, product_id, 1)).status == 201

    problem = assert_problem(await add(http, user, MAX_LINES + 1, 1), 422)

    assert str(MAX_LINES) in problem["detail"]
    cart = ok(await add(http, user, 1, 1), 201)  # more of a product already there is fine
    assert len(cart["items"]) == MAX_LINES
    assert cart["item_count"] == MAX_LINES + 1
    assert MAX_LINES + 1 not in quantities(cart)


async def test_an_unknown_product_is_refused_naming_it(
    http: aiohttp.ClientSession, sign_in: SignIn
) -> None:
    user = sign_in()
    ok(await add(http, user, 12, 1), 201)

    problem = assert_problem(await add(http, user, UNKNOWN_PRODUCT, 1), 422)

    assert str(UNKNOWN_PRODUCT) in problem["detail"]
    assert quantities(await cart_of(http, user)) == {12: 1}


# Bad input

BAD_ADDS: list[Any] = [
    pytest.param({"product_id": 13, "quantity": 0}, None, id="quantity-zero"),
    pytest.param({"product_id": 13, "quantity": MAX_QUANTITY + 1}, None, id="quantity-100"),
    pytest.param({"product_id": 13, "quantity": -1}, None, id="quantity-negative"),
    pytest.param({"product_id": 13, "quantity": "3"}, None, id="quantity-string"),
    pytest.param({"product_id": 13, "quantity": 1.5}, None, id="quantity-fraction"),
    pytest.param({"product_id": 13, "quantity": 2.0}, None, id="quantity-whole-float"),
    pytest.param({"product_id": 13, "quantity": True}, None, id="quantity-boolean"),
    pytest.param({"product_id": 13, "quantity": None}, None, id="quantity-null"),
    pytest.param({"product_id": 13, "quantity": 2**70}, None, id="quantity-huge"),
    pytest.param({"product_id": 13}, None, id="quantity-missing"),
    pytest.param({"product_id": 0, "quantity": 1}, None, id="product-zero"),
    pytest.param({"product_id": -13, "quantity": 1}, None, id="product-negative"),
    pytest.param({"product_id": "13", "quantity": 1}, None, id="product-string"),
    pytest.param({"product_id": 2**70, "quantity": 1}, None, id="product-huge"),
    pytest.param({"quantity": 1}, None, id="product-missing"),
    pytest.param({"product_id": 13, "quantity": 1, "user_id": "x"}, None, id="extra-field"),
    pytest.param([{"product_id": 13, "quantity": 1}], None, id="list-body"),
    pytest.param(None, b"", id="no-body"),
    pytest.param(None, b'{"product_id": 13, "quantity": 1', id="malformed-json"),
    pytest.param(None, b"product_id=13&quantity=1", id="not-json"),
]


@pytest.mark.parametrize(("body", "raw"), BAD_ADDS)
async def test_a_bad_add_is_refused_and_changes_nothing(
    http: aiohttp.ClientSession, sign_in: SignIn, body: Any, raw: bytes | None
) -> None:
    user = sign_in()
    ok(await add(http, user, 13, 1), 201)

    reply = await call(http, "POST", "/v1/cart/items", body=body, raw=raw, headers=user)

    assert_problem(reply, 422)
    assert quantities(await cart_of(http, user)) == {13: 1}


BAD_CHANGES: list[Any] = [
    pytest.param({"quantity": 0}, id="zero"),
    pytest.param({"quantity": MAX_QUANTITY + 1}, id="over-maximum"),
    pytest.param({"quantity": -1}, id="negative"),
    pytest.param({"quantity": "3"}, id="string"),
    pytest.param({"quantity": 1.5}, id="fraction"),
    pytest.param({"quantity": False}, id="boolean"),
    pytest.param({"quantity": None}, id="null"),
    pytest.param({}, id="missing"),
    pytest.param({"quantity": 2, "product_id": 14}, id="extra-field"),
]


@pytest.mark.parametrize("body", BAD_CHANGES)
async def test_a_bad_quantity_change_is_refused_and_changes_nothing(
    http: aiohttp.ClientSession, sign_in: SignIn, body: Any
) -> None:
    user = sign_in()
    ok(await add(http, user, 14, 3), 201)

    reply = await call(http, "PATCH", "/v1/cart/items/14", body=body, headers=user)

    assert_problem(reply, 422)
    assert quantities(await cart_of(http, user)) == {14: 3}


@pytest.mark.parametrize("path_id", ["0", "-1", "abc", "1.5", str(2**70)])
async def test_a_malformed_product_id_in_the_path_is_refused(
    http: aiohttp.ClientSession, sign_in: SignIn, path_id: str
) -> None:
    user = sign_in()
    path = f"/v1/cart/items/{path_id}"

    assert_problem(await call(http, "PATCH", path, body={"quantity": 1}, headers=user), 422)
    assert_problem(await call(http, "DELETE", path, headers=user), 422)


async def test_changing_or_removing_a_product_not_in_the_cart_is_not_found(
    http: aiohttp.ClientSession, sign_in: SignIn
) -> None:
    user = sign_in()
    ok(await add(http, user, 15, 1), 201)

    changed = await call(http, "PATCH", "/v1/cart/items/16", body={"quantity": 2}, headers=user)
    removed = await call(http, "DELETE", "/v1/cart/items/16", headers=user)

    assert "16" in assert_problem(changed, 404)["detail"]
    assert "16" in assert_problem(removed, 404)["detail"]
    assert quantities(await cart_of(http, user)) == {15: 1}


# One user's cart is theirs alone


async def test_a_user_never_sees_nor_changes_another_users_cart(
    http: aiohttp.ClientSession, sign_in: SignIn
) -> None:
    alice, bob = sign_in(), sign_in()
    ok(await add(http, alice, 17, 2), 201)
    ok(await add(http, alice, 18, 1), 201)
    alices = await cart_of(http, alice)

    assert await cart_of(http, bob) == EMPTY_CART
    bob_changes = await call(http, "PATCH", "/v1/cart/items/17", body={"quantity": 9}, headers=bob)
    bob_removes = await call(http, "DELETE", "/v1/cart/items/18", headers=bob)
    bob_clears = await call(http, "DELETE", "/v1/cart", headers=bob)
    bobs = ok(await add(http, bob, 17, 1), 201)

    assert_problem(bob_changes, 404)
    assert_problem(bob_removes, 404)
    assert bob_clears.status == 204
    assert quantities(bobs) == {17: 1}
    assert await cart_of(http, alice) == alices


ROUTES: list[Any] = [
    pytest.param("GET", "/v1/cart", None, id="get-cart"),
    pytest.param("POST", "/v1/cart/items", {"product_id": 19, "quantity": 1}, id="add-item"),
    pytest.param("PATCH", "/v1/cart/items/19", {"quantity": 5}, id="change-quantity"),
    pytest.param("DELETE", "/v1/cart/items/19", None, id="remove-item"),
    pytest.param("DELETE", "/v1/cart", None, id="clear-cart"),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_every_route_refuses_a_caller_without_a_valid_token(
    http: aiohttp.ClientSession,
    issuer: TokenIssuer,
    sign_in: SignIn,
    method: str,
    path: str,
    body: Any,
) -> None:
    victim_id = "victim-of-forgery"
    victim = issuer.bearer(victim_id)
    await call(http, "DELETE", "/v1/cart", headers=victim)
    ok(await add(http, victim, 19, 2), 201)
    before = await cart_of(http, victim)
    attempts: dict[str, dict[str, str]] = {
        "no-token": {},
        "forged-user-header": {"X-User-Id": victim_id},
        "forged-user-header-and-bad-token": {
            "X-User-Id": victim_id,
            "Authorization": "Bearer not-a-jwt",
        },
        "not-bearer": {"Authorization": f"Basic {issuer.token(victim_id)}"},
        "empty-bearer": {"Authorization": "Bearer "},
        **{kind: {"Authorization": f"Bearer {t}"} for kind, t in issuer.forged().items()},
    }

    for kind, headers in attempts.items():
        reply = await call(http, method, path, body=body, headers=headers)
        assert reply.status == 401, (kind, reply.text)
        assert_problem(reply, 401)
        assert reply.headers["WWW-Authenticate"].startswith("Bearer"), kind

    assert await cart_of(http, victim) == before


# Prices stay current


async def test_reading_a_cart_with_fresh_prices_does_not_ask_catalog(
    http: aiohttp.ClientSession,
    sign_in: SignIn,
    catalog_calls: Callable[[], Awaitable[float]],
) -> None:
    user = sign_in()
    before_adding = await catalog_calls()
    ok(await add(http, user, 20, 1), 201)
    ok(await add(http, user, 21, 1), 201)
    added = await catalog_calls()

    for _ in range(5):
        assert len((await cart_of(http, user))["items"]) == 2

    assert added - before_adding == 2  # adding always asks catalog, once per add
    assert await catalog_calls() == added


async def test_a_price_change_in_catalog_reaches_the_cart_well_before_its_prices_expire(
    http: aiohttp.ClientSession,
    catalog_http: aiohttp.ClientSession,
    issuer: TokenIssuer,
    sign_in: SignIn,
) -> None:
    user = sign_in()
    product_id = PRICE_CHANGED_IN_CATALOG
    old = (await product(catalog_http, product_id))["price"]
    ok(await add(http, user, product_id, 3), 201)
    new = {"amount_cents": old["amount_cents"] + 1234, "currency": old["currency"]}

    admin = issuer.bearer("admin-1", ("admin",))
    path = f"/v1/admin/products/{product_id}/price"
    ok(await call(catalog_http, "PUT", path, body=new, headers=admin))

    cart = await eventually(
        lambda: cart_of(http, user), lambda c: unit_prices(c) == {product_id: new["amount_cents"]}
    )
    assert cart["items"][0]["unit_price"] == new
    assert cart["items"][0]["line_total"] == {
        "amount_cents": new["amount_cents"] * 3,
        "currency": new["currency"],
    }
    assert cart["totals"] == [cart["items"][0]["line_total"]]


async def test_a_price_change_older_than_what_the_cart_knows_is_ignored(
    http: aiohttp.ClientSession,
    catalog_http: aiohttp.ClientSession,
    broker_url: str,
    sign_in: SignIn,
) -> None:
    user = sign_in()
    first, second = [await product(catalog_http, i) for i in EVENTS_IN_DISORDER]
    ok(await add(http, user, first["id"], 1), 201)
    ok(await add(http, user, second["id"], 1), 201)
    now = datetime.now(UTC)

    def changed(p: dict[str, Any], amount_cents: int, at: datetime) -> ProductPriceChanged:
        return ProductPriceChanged.model_validate(
            {
                "product_id": p["id"],
                "sku": p["sku"],
                "name": p["name"],
                "price": {"amount_cents": amount_cents, "currency": "USD"},
                "previous_price": p["price"],
                "changed_at": at,
            }
        )

    # Published in this order: the newest change of `first`, then an older one that arrives
    # late, then a change of `second` that tells when both before it have been handled.
    events = [
        changed(first, 7_001, now + timedelta(seconds=1)),
        changed(first, 6_001, now - timedelta(hours=1)),
        changed(second, 5_001, now + timedelta(seconds=1)),
    ]
    broker = open_broker(broker_url)
    await broker.connect()
    try:
        await broker.declare(SUBSCRIPTIONS)
        envelopes = [wrap(event) for event in events]
        await broker.publish([Outgoing(e.id, e.type, encode(e)) for e in envelopes])
    finally:
        await broker.close()

    cart = await eventually(
        lambda: cart_of(http, user), lambda c: unit_prices(c)[second["id"]] == 5_001
    )
    assert unit_prices(cart) == {first["id"]: 7_001, second["id"]: 5_001}


def price_changed(
    p: dict[str, Any], amount_cents: int, at: datetime, version: int | None = None
) -> ProductPriceChanged:
    return ProductPriceChanged.model_validate(
        {
            "product_id": p["id"],
            "sku": p["sku"],
            "name": p["name"],
            "price": {"amount_cents": amount_cents, "currency": "USD"},
            "previous_price": p["price"],
            "changed_at": at,
            "price_version": version,
        }
    )


async def publish(broker_url: str, events: list[ProductPriceChanged]) -> list[str]:
    """Publish events as catalog would (or as anyone on the broker could); their ids."""
    broker = open_broker(broker_url)
    await broker.connect()
    try:
        await broker.declare(SUBSCRIPTIONS)
        envelopes = [wrap(event) for event in events]
        await broker.publish([Outgoing(e.id, e.type, encode(e)) for e in envelopes])
    finally:
        await broker.close()
    return [e.id for e in envelopes]


async def test_a_price_change_dated_in_the_future_is_dead_lettered_and_real_ones_still_apply(
    http: aiohttp.ClientSession,
    catalog_http: aiohttp.ClientSession,
    issuer: TokenIssuer,
    broker_url: str,
    sign_in: SignIn,
) -> None:
    user = sign_in()
    target = await product(catalog_http, FORGED_FUTURE)
    ok(await add(http, user, target["id"], 1), 201)
    forged = price_changed(target, 1, datetime.now(UTC) + timedelta(days=365))

    [forged_id] = await publish(broker_url, [forged])

    broker = open_broker(broker_url)
    await broker.connect()
    try:

        async def dead() -> list[Any]:
            return [d for d in await broker.dead_letters(["cart"]) if d.id == forged_id]

        [letter] = await eventually(dead, bool)
    finally:
        await broker.close()
    assert "changed_at" in letter.error and "future" in letter.error, letter.error
    assert unit_prices(await cart_of(http, user))[target["id"]] == target["price"]["amount_cents"]

    # A real change made afterwards reaches the cart: the forged date outranks nothing.
    new = {"amount_cents": target["price"]["amount_cents"] + 777, "currency": "USD"}
    admin = issuer.bearer("admin-1", ("admin",))
    path = f"/v1/admin/products/{target['id']}/price"
    ok(await call(catalog_http, "PUT", path, body=new, headers=admin))
    await eventually(
        lambda: cart_of(http, user),
        lambda c: unit_prices(c)[target["id"]] == new["amount_cents"],
    )


async def test_price_changes_are_ordered_by_catalogs_version_not_by_their_clocks(
    http: aiohttp.ClientSession,
    catalog_http: aiohttp.ClientSession,
    broker_url: str,
    sign_in: SignIn,
) -> None:
    user = sign_in()
    first, second = [await product(catalog_http, i) for i in VERSIONS_IN_DISORDER]
    ok(await add(http, user, first["id"], 1), 201)
    ok(await add(http, user, second["id"], 1), 201)
    now = datetime.now(UTC)

    # Version 7 is the newest change of `first`, but catalog's clock said 1 s after the cart
    # read its price; version 6 arrives late, dated 2 s after (a publisher clock running
    # ahead, within the tolerated skew). Then a change of `second` that tells when both
    # before it have been handled.
    await publish(
        broker_url,
        [
            price_changed(first, 7_007, now + timedelta(seconds=1), version=7),
            price_changed(first, 6_006, now + timedelta(seconds=2), version=6),
            price_changed(second, 5_005, now + timedelta(seconds=1), version=1),
        ],
    )

    cart = await eventually(
        lambda: cart_of(http, user), lambda c: unit_prices(c)[second["id"]] == 5_005
    )
    assert unit_prices(cart) == {first["id"]: 7_007, second["id"]: 5_005}


# The database itself


@pytest.mark.parametrize("quantity", [0, -1, 1000])
def test_the_database_itself_refuses_an_impossible_quantity(
    cart_database: Path, quantity: int
) -> None:
    with closing(sqlite3.connect(cart_database, timeout=5)) as db:
        with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
            db.execute(
                "INSERT INTO cart_items (user_id, product_id, quantity, added_at) "
                "VALUES ('database-check', 1, ?, '2026-01-01 00:00:00.000000')",
                (quantity,),
            )
        db.rollback()
