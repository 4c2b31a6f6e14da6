"""The cart's copy of catalog's prices: it expires, and it serves while catalog is away."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from souq_chassis.testing import Reply, ServiceProcess, assert_problem, call

SHORT_PRICE_TTL_S = 1.0
SignIn = Callable[[], dict[str, str]]


@pytest.fixture(scope="module")
def cart_settings() -> dict[str, Any]:
    """Prices that expire within a test; a breaker that soon lets a call try catalog again."""
    return {"price_ttl_s": SHORT_PRICE_TTL_S, "breaker_reset_s": 0.5}


@pytest.fixture
async def stop_catalog(
    catalog: ServiceProcess, http: aiohttp.ClientSession, sign_in: SignIn
) -> AsyncIterator[Callable[[], None]]:
    """`stop_catalog()`: catalog is down for the rest of the test; after it, catalog is up and
    the cart reaches it again (its circuit breaker closed), so the next test starts whole."""

    def stop() -> None:
        assert catalog.stop() == 0, catalog.output()

    yield stop
    if catalog.proc is not None and catalog.proc.poll() is not None:
        catalog.start()
    await until_added(http, sign_in(), 1, timeout_s=15)


def ok(reply: Reply, status: int = 200) -> Any:
    assert reply.status == status, reply.text
    return reply.json()


async def cart_of(http: aiohttp.ClientSession, user: dict[str, str]) -> Reply:
    return await call(http, "GET", "/v1/cart", headers=user)


async def add(
    http: aiohttp.ClientSession, user: dict[str, str], product_id: int, quantity: int = 1
) -> Reply:
    body = {"product_id": product_id, "quantity": quantity}
    return await call(http, "POST", "/v1/cart/items", body=body, headers=user)


async def until_added(
    http: aiohttp.ClientSession, user: dict[str, str], product_id: int, *, timeout_s: float
) -> None:
    """Add until the cart answers 201: catalog and the cart's breaker may still be coming back,
    and on a busy machine a server may drop a kept-alive connection meanwhile."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while True:
        try:
            reply = await add(http, user, product_id)
            if reply.status == 201:
                return
            last = f"{reply.status} {reply.text[:200]}"
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        assert time.monotonic() < deadline, f"the cart did not reach catalog again: {last}"
        await asyncio.sleep(0.2)


async def expire_prices() -> None:
    await asyncio.sleep(SHORT_PRICE_TTL_S + 0.2)


async def test_prices_older_than_their_ttl_are_asked_of_catalog_again_in_one_call(
    http: aiohttp.ClientSession,
    sign_in: SignIn,
    catalog_calls: Callable[[], Awaitable[float]],
) -> None:
    user = sign_in()
    for product_id in (40, 41, 42):
        ok(await add(http, user, product_id), 201)
    fresh = ok(await cart_of(http, user))
    await expire_prices()
    before = await catalog_calls()

    expired = ok(await cart_of(http, user))
    refreshed = await catalog_calls()
    again = ok(await cart_of(http, user))

    assert refreshed - before == 1
    assert await catalog_calls() == refreshed  # fresh again: no second call
    assert expired == again == fresh


async def test_while_catalog_is_down_a_cart_shows_its_last_known_prices(
    http: aiohttp.ClientSession, sign_in: SignIn, stop_catalog: Callable[[], None]
) -> None:
    user = sign_in()
    ok(await add(http, user, 43, 2), 201)
    ok(await add(http, user, 44, 1), 201)
    before = ok(await cart_of(http, user))

    stop_catalog()
    await expire_prices()
    replies = [await cart_of(http, user) for _ in range(3)]

    assert [ok(reply) for reply in replies] == [before] * 3


async def test_adding_a_product_while_catalog_is_down_is_unavailable_and_changes_nothing(
    http: aiohttp.ClientSession, sign_in: SignIn, stop_catalog: Callable[[], None]
) -> None:
    user = sign_in()
    ok(await add(http, user, 45), 201)
    before = ok(await cart_of(http, user))

    stop_catalog()
    unknown_to_the_cart = await add(http, user, 46)
    known_to_the_cart = await add(http, user, 45)

    for reply in (unknown_to_the_cart, known_to_the_cart):
        assert_problem(reply, 503)
        assert int(reply.headers["Retry-After"]) >= 1
    assert ok(await cart_of(http, user)) == before


async def test_a_line_without_any_known_price_is_unavailable_until_catalog_is_back(
    http: aiohttp.ClientSession,
    catalog: ServiceProcess,
    cart_database: Path,
    sign_in: SignIn,
    stop_catalog: Callable[[], None],
) -> None:
    user = sign_in()
    ok(await add(http, user, 47, 3), 201)
    before = ok(await cart_of(http, user))

    stop_catalog()
    with closing(sqlite3.connect(cart_database, timeout=5)) as db:
        db.execute("DELETE FROM product_prices WHERE product_id = 47")
        db.commit()
    unavailable = await cart_of(http, user)

    assert_problem(unavailable, 503)
    assert int(unavailable.headers["Retry-After"]) >= 1

    catalog.start()
    deadline = time.monotonic() + 10
    reply = None
    for _ in range(100):  # the breaker may hold catalog off for a few seconds more
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            reply = await cart_of(http, user)  # a busy machine may drop a kept-alive connection
        if (reply is not None and reply.status == 200) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert reply is not None, "the cart never answered"
    assert ok(reply) == before
