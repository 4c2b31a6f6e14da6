"""Inventory as its clients see it: a real process over real HTTP, real gRPC and its own SQLite."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from contextlib import closing
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from souq.inventory.v1 import inventory_pb2, inventory_pb2_grpc
from souq_chassis.testing import Reply, ServiceProcess, TokenIssuer, assert_problem, call

BODY_LIMIT = 64 * 1024
MAX_RESTOCK = 1_000_000
MAX_SKUS = 500

SEEDED: list[dict[str, Any]] = json.loads(
    resources.files("souq_inventory").joinpath("seed/stock.json").read_text()
)["stock"]
# Each test that changes stock uses SKUs of its own, so tests do not depend on their order.
LOOKED_AT, RESTOCKED, REJECTED, CHECKED_IN_DB = (SEEDED[i] for i in range(4))
UNTOUCHED = SEEDED[10:]


def ok(reply: Reply) -> Any:
    assert reply.status == 200, reply.text
    assert reply.content_type == "application/json"
    return reply.json()


async def stock_of(http: aiohttp.ClientSession, sku: str) -> dict[str, Any]:
    return ok(await call(http, "GET", f"/v1/stock/{sku}"))


async def restock(http: aiohttp.ClientSession, sku: str, quantity: Any) -> Reply:
    return await call(http, "POST", f"/v1/admin/stock/{sku}/restock", body={"quantity": quantity})


def new_sku() -> str:
    return f"NEW-{uuid.uuid4().hex[:12].upper()}"


# Stock over HTTP


async def test_the_stock_of_a_seeded_sku_is_what_was_seeded(http: aiohttp.ClientSession) -> None:
    level = await stock_of(http, LOOKED_AT["sku"])

    assert level == {
        "sku": LOOKED_AT["sku"],
        "on_hand": LOOKED_AT["on_hand"],
        "reserved": 0,
        "available": LOOKED_AT["on_hand"],
    }


async def test_the_stock_of_an_unknown_sku_is_not_found(http: aiohttp.ClientSession) -> None:
    sku = new_sku()

    problem = assert_problem(await call(http, "GET", f"/v1/stock/{sku}"), 404)

    assert sku in problem["detail"]


async def test_a_restock_adds_to_what_is_on_hand(http: aiohttp.ClientSession) -> None:
    before = await stock_of(http, RESTOCKED["sku"])

    after = ok(await restock(http, RESTOCKED["sku"], 7))

    assert after == {
        "sku": RESTOCKED["sku"],
        "on_hand": before["on_hand"] + 7,
        "reserved": before["reserved"],
        "available": before["available"] + 7,
    }
    assert await stock_of(http, RESTOCKED["sku"]) == after


async def test_restocking_an_unknown_sku_starts_tracking_it(http: aiohttp.ClientSession) -> None:
    sku = new_sku()
    assert_problem(await call(http, "GET", f"/v1/stock/{sku}"), 404)

    first = ok(await restock(http, sku, 5))
    second = ok(await restock(http, sku, 3))

    assert first == {"sku": sku, "on_hand": 5, "reserved": 0, "available": 5}
    assert second == {"sku": sku, "on_hand": 8, "reserved": 0, "available": 8}
    assert await stock_of(http, sku) == second


async def test_a_restock_of_the_maximum_quantity_is_accepted(http: aiohttp.ClientSession) -> None:
    sku = new_sku()

    level = ok(await restock(http, sku, MAX_RESTOCK))

    assert (level["on_hand"], level["available"]) == (MAX_RESTOCK, MAX_RESTOCK)


async def test_concurrent_first_restocks_of_a_new_sku_all_count(
    http: aiohttp.ClientSession,
) -> None:
    sku = new_sku()
    quantities = list(range(1, 13))

    replies = await asyncio.gather(*(restock(http, sku, q) for q in quantities))

    assert [r.status for r in replies] == [200] * len(quantities)
    assert (await stock_of(http, sku))["on_hand"] == sum(quantities)


# Bad input

BAD_RESTOCKS: list[Any] = [
    pytest.param({"quantity": 0}, None, 422, id="zero"),
    pytest.param({"quantity": -1}, None, 422, id="negative"),
    pytest.param({"quantity": 1.5}, None, 422, id="fraction"),
    pytest.param({"quantity": 3.0}, None, 422, id="whole-float"),
    pytest.param({"quantity": "3"}, None, 422, id="string"),
    pytest.param({"quantity": True}, None, 422, id="boolean"),
    pytest.param({"quantity": None}, None, 422, id="null"),
    pytest.param({"quantity": [3]}, None, 422, id="list"),
    pytest.param({"quantity": MAX_RESTOCK + 1}, None, 422, id="over-maximum"),
    pytest.param({"quantity": 2**70}, None, 422, id="huge"),
    pytest.param({}, None, 422, id="missing"),
    pytest.param({"quantity": 1, "reserved": 1}, None, 422, id="extra-field"),
    pytest.param({"qty": 1}, None, 422, id="misspelt-field"),
    pytest.param([{"quantity": 1}], None, 422, id="list-body"),
    pytest.param(None, b"", 422, id="no-body"),
    pytest.param(None, b"null", 422, id="null-body"),
    pytest.param(None, b'{"quantity": 1', 422, id="malformed-json"),
    pytest.param(None, b"quantity=1", 422, id="not-json"),
    pytest.param(None, b'{"quantity": 1e3}', 422, id="exponent"),
    pytest.param(None, b'{"quantity": NaN}', 422, id="nan"),
    pytest.param(
        None, b'{"quantity": 1, "pad": "' + b"x" * BODY_LIMIT + b'"}', 413, id="oversized"
    ),
]


@pytest.mark.parametrize(("body", "raw", "status"), BAD_RESTOCKS)
async def test_a_bad_restock_is_rejected_and_changes_nothing(
    http: aiohttp.ClientSession, body: Any, raw: bytes | None, status: int
) -> None:
    before = await stock_of(http, REJECTED["sku"])

    reply = await call(
        http, "POST", f"/v1/admin/stock/{REJECTED['sku']}/restock", body=body, raw=raw
    )

    assert_problem(reply, status)
    assert await stock_of(http, REJECTED["sku"]) == before


BAD_SKUS = [
    "kit-0001",
    "Kit-0001",
    "AB",
    "A" * 41,
    "-KIT-1",
    "KIT_0001",
    "KIT.0001",
    "KIT%200001",
    "KIT-0001%0A",
    "%C3%84BC-1",
    "KIT-0001%27%20OR%201=1",
]


@pytest.mark.parametrize("sku", BAD_SKUS)
async def test_a_malformed_sku_is_rejected_everywhere(
    http: aiohttp.ClientSession, sku: str
) -> None:
    assert_problem(await call(http, "GET", f"/v1/stock/{sku}"), 422)
    assert_problem(await restock(http, sku, 1), 422)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("DELETE", "/v1/stock/KIT-0001", 405),
        ("POST", "/v1/stock/KIT-0001", 405),
        ("GET", "/v1/admin/stock/KIT-0001/restock", 405),
        ("GET", "/v1/stock", 404),
        ("GET", "/v1/nowhere", 404),
    ],
)
async def test_an_unknown_route_or_method_is_a_problem(
    http: aiohttp.ClientSession, method: str, path: str, status: int
) -> None:
    assert_problem(await call(http, method, path), status)


# gRPC


async def test_availability_answers_every_sku_in_the_order_asked(
    http: aiohttp.ClientSession, inventory_rpc: inventory_pb2_grpc.InventoryServiceStub
) -> None:
    a, b = UNTOUCHED[0]["sku"], UNTOUCHED[7]["sku"]
    unknown = new_sku()

    response = await inventory_rpc.GetAvailability(
        inventory_pb2.GetAvailabilityRequest(skus=[b, unknown, a, b])
    )

    answers = [(i.sku, i.available, i.tracked) for i in response.items]
    assert answers == [
        (b, (await stock_of(http, b))["available"], True),
        (unknown, 0, False),
        (a, (await stock_of(http, a))["available"], True),
        (b, (await stock_of(http, b))["available"], True),
    ]


async def test_every_seeded_sku_is_tracked_with_its_seeded_stock(
    inventory_rpc: inventory_pb2_grpc.InventoryServiceStub,
) -> None:
    response = await inventory_rpc.GetAvailability(
        inventory_pb2.GetAvailabilityRequest(skus=[s["sku"] for s in UNTOUCHED])
    )

    assert [(i.sku, i.available, i.tracked) for i in response.items] == [
        (s["sku"], s["on_hand"], True) for s in UNTOUCHED
    ]


async def test_availability_follows_a_restock(
    http: aiohttp.ClientSession, inventory_rpc: inventory_pb2_grpc.InventoryServiceStub
) -> None:
    sku = new_sku()
    request = inventory_pb2.GetAvailabilityRequest(skus=[sku])
    untracked = await inventory_rpc.GetAvailability(request)

    ok(await restock(http, sku, 42))
    tracked = await inventory_rpc.GetAvailability(request)

    assert (untracked.items[0].tracked, untracked.items[0].available) == (False, 0)
    assert (tracked.items[0].tracked, tracked.items[0].available) == (True, 42)


async def test_availability_of_no_skus_is_empty(
    inventory_rpc: inventory_pb2_grpc.InventoryServiceStub,
) -> None:
    response = await inventory_rpc.GetAvailability(inventory_pb2.GetAvailabilityRequest(skus=[]))

    assert list(response.items) == []


async def test_availability_takes_up_to_five_hundred_skus(
    inventory_rpc: inventory_pb2_grpc.InventoryServiceStub,
) -> None:
    seeded = {s["sku"] for s in UNTOUCHED}
    skus = [s["sku"] for s in UNTOUCHED] + [f"NONE-{i:04d}" for i in range(MAX_SKUS - len(seeded))]

    response = await inventory_rpc.GetAvailability(inventory_pb2.GetAvailabilityRequest(skus=skus))

    assert [i.sku for i in response.items] == skus
    assert [i.tracked for i in response.items] == [sku in seeded for sku in skus]


async def test_availability_of_more_than_five_hundred_skus_is_an_invalid_argument(
    inventory_rpc: inventory_pb2_grpc.InventoryServiceStub,
) -> None:
    skus = [f"SKU-{i:04d}" for i in range(MAX_SKUS + 1)]
    request = inventory_pb2.GetAvailabilityRequest(skus=skus)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await inventory_rpc.GetAvailability(request)

    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(MAX_SKUS) in (raised.value.details() or "")


# The database itself


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE stock SET on_hand = -1",
        "UPDATE stock SET reserved = on_hand + 1",
        "UPDATE stock SET reserved = -1",
    ],
    ids=["negative-on-hand", "reserved-beyond-on-hand", "negative-reserved"],
)
async def test_the_database_itself_refuses_impossible_stock(
    http: aiohttp.ClientSession, inventory_database: Path, statement: str
) -> None:
    before = await stock_of(http, CHECKED_IN_DB["sku"])

    with closing(sqlite3.connect(inventory_database, timeout=5)) as db:
        assert db.execute("SELECT count(*) FROM stock").fetchone()[0] >= len(SEEDED)
        with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
            db.execute(statement)
        db.rollback()

    assert await stock_of(http, CHECKED_IN_DB["sku"]) == before


async def test_restock_is_for_administrators_only(
    http: aiohttp.ClientSession, anonymous: aiohttp.ClientSession, issuer: TokenIssuer
) -> None:
    path = "/v1/admin/stock/KIT-0001/restock"
    before = await stock_of(http, "KIT-0001")

    assert_problem(await call(anonymous, "POST", path, body={"quantity": 5}), 401)
    for kind, token in issuer.forged().items():
        headers = {"Authorization": f"Bearer {token}"}
        reply = await call(anonymous, "POST", path, body={"quantity": 5}, headers=headers)
        assert reply.status == 401, (kind, reply.text)
    customer = issuer.bearer("customer-1", ("customer",))
    reply = await call(anonymous, "POST", path, body={"quantity": 5}, headers=customer)
    assert_problem(reply, 403)

    assert await stock_of(http, "KIT-0001") == before


async def test_stock_levels_are_for_administrators_only(
    anonymous: aiohttp.ClientSession, issuer: TokenIssuer
) -> None:
    path = "/v1/stock/KIT-0001"

    assert_problem(await call(anonymous, "GET", path), 401)
    for kind, token in issuer.forged().items():
        headers = {"Authorization": f"Bearer {token}"}
        assert (await call(anonymous, "GET", path, headers=headers)).status == 401, kind
    customer = issuer.bearer("customer-1", ("customer",))
    assert_problem(await call(anonymous, "GET", path, headers=customer), 403)


async def test_grpc_reflection_is_off_by_default(inventory: ServiceProcess) -> None:
    async with grpc.aio.insecure_channel(inventory.grpc_target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in stub.ServerReflectionInfo(iter([ask]), timeout=5):
                pass

    assert refused.value.code() is grpc.StatusCode.UNIMPLEMENTED
