"""The gateway as a gate: who gets in (access tokens verified locally), how often (token
buckets per client, per user, and stricter for sign-in), from where (CORS) and how much (body
limits). The processes are real; tokens are signed by the session's TokenIssuer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
from souq_chassis.testing import ServiceProcess, TokenIssuer, assert_problem, call

API = "/api/v1"
GatewayFactory = Callable[..., ServiceProcess]

SIGNED_IN_ROUTES = [
    ("GET", f"{API}/me", None),
    ("POST", f"{API}/auth/logout", None),
    ("GET", f"{API}/cart", None),
    ("POST", f"{API}/cart/items", {"product_id": 1, "quantity": 1}),
    ("PATCH", f"{API}/cart/items/1", {"quantity": 2}),
    ("DELETE", f"{API}/cart/items/1", None),
    ("DELETE", f"{API}/cart", None),
]
ADMIN_ROUTES = [
    ("POST", f"{API}/admin/products", {"sku": "X"}),
    ("PUT", f"{API}/admin/products/1/price", {"amount_cents": 1, "currency": "USD"}),
    ("POST", f"{API}/admin/stock/KIT-0001/restock", {"quantity": 1}),
]


@pytest.fixture
async def client(gateway: ServiceProcess) -> Any:
    async with aiohttp.ClientSession(gateway.url) as session:
        yield session


@pytest.mark.parametrize(("method", "path", "body"), SIGNED_IN_ROUTES + ADMIN_ROUTES)
async def test_protected_routes_refuse_missing_and_forged_tokens(
    client: aiohttp.ClientSession,
    issuer: TokenIssuer,
    method: str,
    path: str,
    body: Any,
) -> None:
    missing = await call(client, method, path, body=body)
    assert assert_problem(missing, 401)["detail"]
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    for kind, token in issuer.forged().items():
        reply = await call(client, method, path, body=body, headers=bearer(token))
        assert reply.status == 401, (kind, reply.text)
        assert_problem(reply, 401)


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
async def test_admin_routes_refuse_customers(
    client: aiohttp.ClientSession, issuer: TokenIssuer, method: str, path: str, body: Any
) -> None:
    reply = await call(client, method, path, body=body, headers=issuer.bearer("c", ("customer",)))

    assert_problem(reply, 403)


async def test_a_bad_token_is_refused_on_public_routes_too(
    client: aiohttp.ClientSession, issuer: TokenIssuer
) -> None:
    good = await call(client, "GET", f"{API}/categories", headers=issuer.bearer())
    assert good.status == 200

    assert_problem(
        await call(client, "GET", f"{API}/categories", headers=bearer(issuer.forged()["expired"])),
        401,
    )


async def test_a_verified_caller_reaches_the_service_behind(
    client: aiohttp.ClientSession, issuer: TokenIssuer
) -> None:
    # This session's cart URL is a closed port: past the gate, the outage shows.
    reply = await call(client, "GET", f"{API}/cart", headers=issuer.bearer())

    assert_problem(reply, 503)


async def test_an_oversized_body_is_refused_before_anything_else(
    client: aiohttp.ClientSession, issuer: TokenIssuer
) -> None:
    raw = b'{"product_id": 1, "quantity": 1, "pad": "' + b"x" * (64 * 1024) + b'"}'

    reply = await call(client, "POST", f"{API}/cart/items", raw=raw, headers=issuer.bearer())

    assert_problem(reply, 413)


# CORS


async def test_the_storefront_origin_may_call_the_api_from_a_browser(
    client: aiohttp.ClientSession,
) -> None:
    origin = "http://localhost:5173"
    preflight = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    async with client.options(f"{API}/cart/items", headers=preflight) as response:
        assert response.status == 200
        assert response.headers["Access-Control-Allow-Origin"] == origin
        assert "authorization" in response.headers["Access-Control-Allow-Headers"].lower()

    async with client.get(f"{API}/categories", headers={"Origin": origin}) as response:
        assert response.headers["Access-Control-Allow-Origin"] == origin


async def test_other_origins_get_no_cors_grant(client: aiohttp.ClientSession) -> None:
    evil = "https://evil.example"
    preflight = {"Origin": evil, "Access-Control-Request-Method": "POST"}
    async with client.options(f"{API}/cart/items", headers=preflight) as response:
        assert response.status == 400
        assert "Access-Control-Allow-Origin" not in response.headers

    async with client.get(f"{API}/categories", headers={"Origin": evil}) as response:
        assert response.status == 200
        assert "Access-Control-Allow-Origin" not in response.headers


# Rate limits


@pytest.fixture(scope="module")
def metered_gateway(new_gateway: GatewayFactory, inventory_target: str) -> Iterator[str]:
    """A gateway with small buckets: 6 requests per client, 3 per user, 2 sign-ins, each
    refilling at 2 a second."""
    with new_gateway(
        inventory_target,
        client_rate_per_s=2,
        client_burst=6,
        user_rate_per_s=2,
        user_burst=3,
        sign_in_rate_per_s=2,
        sign_in_burst=2,
    ) as gateway:
        yield gateway.url


async def spend(http: aiohttp.ClientSession, n: int, path: str, **kwargs: Any) -> list[int]:
    statuses = []
    method = kwargs.pop("method", "GET")
    for _ in range(n):
        async with http.request(method, path, **kwargs) as response:
            statuses.append(response.status)
            if response.status == 429:
                assert int(response.headers["Retry-After"]) >= 1
                assert response.content_type == "application/problem+json"
    return statuses


async def test_a_client_over_its_rate_gets_429_then_recovers(metered_gateway: str) -> None:
    async with aiohttp.ClientSession(metered_gateway) as http:
        await asyncio.sleep(3)  # a full bucket, whatever ran before
        statuses = await spend(http, 8, f"{API}/categories")
        assert statuses[:6] == [200] * 6
        assert statuses[6:] == [429, 429]

        async with http.get(f"{API}/categories") as response:
            wait = int(response.headers["Retry-After"])
        await asyncio.sleep(wait)

        assert await spend(http, 1, f"{API}/categories") == [200]


async def test_a_user_is_metered_apart_from_other_users(
    metered_gateway: str, issuer: TokenIssuer
) -> None:
    async with aiohttp.ClientSession(metered_gateway) as http:
        await asyncio.sleep(3)
        alice = issuer.bearer("alice")
        assert await spend(http, 4, f"{API}/categories", headers=alice) == [200, 200, 200, 429]
        assert await spend(http, 1, f"{API}/categories", headers=issuer.bearer("bob")) == [200]


async def test_sign_in_is_metered_more_strictly(metered_gateway: str) -> None:
    async with aiohttp.ClientSession(metered_gateway) as http:
        await asyncio.sleep(3)
        login = {"email": "someone@example.com", "password": "guess-guess"}
        statuses = await spend(http, 3, f"{API}/auth/login", method="POST", json=login)

        # identity is not reachable from this gateway: the first two pass the meter (503)
        assert statuses == [503, 503, 429]
        assert await spend(http, 1, f"{API}/categories") == [200]  # browsing is not affected


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_sign_ins_in_flight_are_bounded_so_a_flood_never_reaches_identity(
    new_gateway: GatewayFactory, inventory_target: str
) -> None:
    """identity here accepts connections and never answers (hashing forever): two sign-ins
    wait on it, the others are refused at once."""
    arrived: list[asyncio.StreamWriter] = []
    done = asyncio.Event()

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        arrived.append(writer)
        await reader.read(65536)
        await done.wait()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    gateway = new_gateway(
        inventory_target,
        identity_url=f"http://127.0.0.1:{port}",
        identity_timeout_s=3,
        sign_in_concurrency=2,
        sign_in_burst=100,
        account_sign_in_burst=100,
    )
    login = {"email": "flood@example.com", "password": "guess-guess"}
    try:
        await asyncio.to_thread(gateway.start)
        async with aiohttp.ClientSession(gateway.url) as http:

            async def attempt() -> tuple[int, float]:
                started = asyncio.get_running_loop().time()
                reply = await call(http, "POST", f"{API}/auth/login", body=login)
                return reply.status, asyncio.get_running_loop().time() - started

            results = await asyncio.gather(*(attempt() for _ in range(6)))
    finally:
        await asyncio.to_thread(gateway.stop)
        gateway.__exit__(None, None, None)
        done.set()
        server.close()
        await server.wait_closed()

    statuses = sorted(status for status, _ in results)
    assert statuses == [429, 429, 429, 429, 503, 503], results
    assert all(elapsed < 1.0 for status, elapsed in results if status == 429), results
    assert len(arrived) == 2


async def test_a_client_cannot_pick_its_own_ip_with_x_forwarded_for(metered_gateway: str) -> None:
    async with aiohttp.ClientSession(metered_gateway) as http:
        await asyncio.sleep(3)
        statuses = []
        for i in range(8):
            spoof = {"X-Forwarded-For": f"203.0.113.{i}"}
            async with http.get(f"{API}/categories", headers=spoof) as response:
                statuses.append(response.status)

    assert statuses[6:] == [429, 429]  # one bucket: the socket's peer


@pytest.fixture(scope="module")
def gateway_behind_proxy(new_gateway: GatewayFactory, inventory_target: str) -> Iterator[str]:
    """A gateway that believes X-Forwarded-For from 127.0.0.1 (as behind a reverse proxy), so
    one test machine can be many clients; 2 sign-ins per account and client."""
    with new_gateway(
        inventory_target,
        trusted_proxies="127.0.0.1",
        account_sign_in_rate_per_s=0.01,
        account_sign_in_burst=2,
    ) as gateway:
        yield gateway.url


async def test_failing_to_sign_in_as_someone_does_not_lock_them_out(
    gateway_behind_proxy: str,
) -> None:
    login = {"email": "victim@example.com", "password": "not their password"}
    attacker, victim = {"X-Forwarded-For": "203.0.113.66"}, {"X-Forwarded-For": "198.51.100.7"}
    async with aiohttp.ClientSession(gateway_behind_proxy) as http:
        tries = [await call(http, "POST", f"{API}/auth/login", body=login, headers=attacker)]
        tries += [await call(http, "POST", f"{API}/auth/login", body=login, headers=attacker)]
        tries += [await call(http, "POST", f"{API}/auth/login", body=login, headers=attacker)]
        theirs = await call(http, "POST", f"{API}/auth/login", body=login, headers=victim)

    # identity is not reachable from this gateway: past the meter means 503
    assert [t.status for t in tries] == [503, 503, 429]
    assert theirs.status == 503


@pytest.fixture
async def stand_in_identity() -> Any:
    """An identity that answers sign-up with 202 and sign-in with 401, and keeps the headers
    of every request it received."""
    from aiohttp import web

    received: list[dict[str, str]] = []
    accepted = {"status": "accepted", "detail": "the same for every email"}

    async def register(request: web.Request) -> web.Response:
        received.append(dict(request.headers))
        return web.json_response(accepted, status=202)

    async def login(request: web.Request) -> web.Response:
        received.append(dict(request.headers))
        problem = {"type": "about:blank", "title": "Unauthorized", "status": 401}
        return web.json_response(problem, status=401, content_type="application/problem+json")

    app = web.Application()
    app.router.add_post("/v1/register", register)
    app.router.add_post("/v1/login", login)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", received, accepted
    finally:
        await runner.cleanup()


async def test_sign_up_and_sign_in_pass_identity_the_client_and_its_202(
    new_gateway: GatewayFactory, inventory_target: str, stand_in_identity: Any
) -> None:
    identity_url, received, accepted = stand_in_identity
    gateway = new_gateway(
        inventory_target,
        identity_url=identity_url,
        trusted_proxies="127.0.0.1",
        account_sign_in_rate_per_s=0.01,
        account_sign_in_burst=2,
        forwarding_secret="the secret gateway and identity share",
    )
    client = {"X-Forwarded-For": "203.0.113.66"}
    body = {"email": "someone@example.com", "password": "a long passphrase"}
    try:
        await asyncio.to_thread(gateway.start)
        async with aiohttp.ClientSession(gateway.url) as http:
            signed_up = await call(http, "POST", f"{API}/auth/register", body=body, headers=client)
            logins = [
                await call(http, "POST", f"{API}/auth/login", body=login, headers=client)
                for login in (
                    {"email": "victim@example.com", "password": "guess-guess"},
                    {"email": "Victim@Example.com", "password": "guess-guess"},
                    # Full-width letters: the same account to identity, so the same bucket.
                    {"email": "\uff56\uff49\uff43\uff54\uff49\uff4d@example.com", "password": "x"},
                )
            ]
    finally:
        await asyncio.to_thread(gateway.stop)
        gateway.__exit__(None, None, None)

    assert signed_up.status == 202 and signed_up.json() == accepted
    assert [r.status for r in logins] == [401, 401, 429]
    # Identity is told who the client is, with the secret that makes it believe so.
    assert [h.get("X-Souq-Client") for h in received] == ["203.0.113.66"] * 3
    assert {h.get("X-Souq-Forwarding-Secret") for h in received} == {
        "the secret gateway and identity share"
    }
