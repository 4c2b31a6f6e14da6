"""What a process that reaches identity's own port (not through the gateway) can get away
with: password guessing, learning who has an account, lookalike emails, and filling the
database with refresh tokens."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from souq.events import RegistrationAttempted, UserRegistered
from souq_chassis.messaging.broker import Ack, Delivery, Verdict, open_broker
from souq_chassis.messaging.envelope import Envelope, decode
from souq_chassis.testing import Reply, ServiceProcess, assert_problem, call

ADMIN_EMAIL = "admin@souq.local"
FULL_WIDTH_ADMIN = "\uff41\uff44\uff4d\uff49\uff4e@souq.local"  # full-width; NFKC: admin
MAX_SESSIONS_PER_USER = 10  # identity's
ACCOUNT_BURST = 5  # identity's default: 5 attempts per account and client, then one every 10 s


def vouched_for(client: str, secret: str) -> dict[str, str]:
    """The headers with which the gateway names the client it forwards for."""
    return {"X-Souq-Client": client, "X-Souq-Forwarding-Secret": secret}


def new_email() -> str:
    return f"user-{uuid.uuid4().hex[:10]}@example.com"


def new_password() -> str:
    return f"pw-{uuid.uuid4().hex}"


async def post(http: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> Reply:
    return await call(http, "POST", path, body=body)


async def sign_up(http: aiohttp.ClientSession, email: str, password: str) -> Reply:
    return await post(http, "/v1/register", {"email": email, "password": password})


async def login(
    http: aiohttp.ClientSession, email: str, password: str, headers: dict[str, str] | None = None
) -> Reply:
    return await call(
        http, "POST", "/v1/login", body={"email": email, "password": password}, headers=headers
    )


async def signed_up(http: aiohttp.ClientSession) -> tuple[str, str, dict[str, Any]]:
    """A new customer: email, password and profile."""
    email, password = new_email(), new_password()
    assert (await sign_up(http, email, password)).status in (201, 202)  # (201 before item 13)
    tokens = (await login(http, email, password)).json()
    me = await call(
        http, "GET", "/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    return email, password, me.json()


@pytest.fixture
async def events(broker_url: str) -> AsyncIterator[list[Envelope]]:
    """Identity's sign-up events as a consumer receives them."""
    received: list[Envelope] = []
    broker = open_broker(broker_url, client_name="identity-abuse-tests")
    await broker.connect()
    consumer = f"identity-abuse-{uuid.uuid4().hex[:8]}"
    types = [UserRegistered.type_name(), RegistrationAttempted.type_name()]
    await broker.declare({consumer: types})

    async def handle(deliveries: Any) -> list[Verdict]:
        batch: list[Delivery] = list(deliveries)
        received.extend(decode(d.body) for d in batch)
        return [Ack()] * len(batch)

    task = asyncio.create_task(broker.consume(consumer, types, handle))
    try:
        yield received
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await broker.close()


async def eventually_one(events: list[Envelope], type_: str, user_id: str) -> Envelope:
    """The one event of `type_` about `user_id`, waiting up to 15 s for it."""
    deadline = asyncio.get_running_loop().time() + 15
    while asyncio.get_running_loop().time() < deadline:
        found = [e for e in events if e.type == type_ and e.data.get("user_id") == user_id]
        if found:
            await asyncio.sleep(0.3)  # a second one, if any, would be right behind
            [event] = [e for e in events if e.type == type_ and e.data.get("user_id") == user_id]
            return event
        await asyncio.sleep(0.05)
    pytest.fail(f"no {type_} for {user_id} in 15 s")


def user_count(identity: ServiceProcess) -> int:
    with sqlite3.connect(identity.data_dir / "identity.db") as db:
        (count,) = db.execute("SELECT count(*) FROM users").fetchone()
    return int(count)


# --- password guessing (item 11) -----------------------------------------------------------


async def test_the_sixth_rapid_wrong_password_for_one_account_is_429_and_others_are_unaffected(
    http: aiohttp.ClientSession,
) -> None:
    victim, _, _ = await signed_up(http)
    other, other_password, _ = await signed_up(http)
    # signed_up spent two of the victim's attempts (sign-up and login): spend the rest wrong.
    guesses = [await login(http, victim, new_password()) for _ in range(ACCOUNT_BURST - 2)]
    assert [r.status for r in guesses] == [401] * (ACCOUNT_BURST - 2)

    refused = await login(http, victim, new_password())
    assert_problem(refused, 429)
    assert 1 <= int(refused.headers["Retry-After"]) <= 10
    # However the account is spelled, it is the same account.
    assert_problem(await login(http, victim.upper(), new_password()), 429)
    # Another account, from the same client, signs in as usual.
    assert (await login(http, other, other_password)).status == 200


async def test_failed_sign_ins_from_one_client_behind_the_gateway_do_not_lock_out_another(
    http: aiohttp.ClientSession, forwarding_secret: str
) -> None:
    """Every client behind the gateway reaches identity from the gateway's address; with the
    shared forwarding secret the gateway names the real client, and identity meters that."""
    victim, password, _ = await signed_up(http)
    attacker = vouched_for("203.0.113.7", forwarding_secret)
    guesses = [await login(http, victim, new_password(), attacker) for _ in range(ACCOUNT_BURST)]
    assert [r.status for r in guesses] == [401] * ACCOUNT_BURST
    assert_problem(await login(http, victim, new_password(), attacker), 429)

    # The victim, from elsewhere, signs in as usual.
    victim_elsewhere = vouched_for("198.51.100.20", forwarding_secret)
    assert (await login(http, victim, password, victim_elsewhere)).status == 200
    # Naming another client without the secret (any local process can send headers) is
    # ignored: the attempt is the socket peer's, like the ones signed_up made.
    forged = {"X-Souq-Client": "198.51.100.99", "X-Souq-Forwarding-Secret": "a guess"}
    spent = [await login(http, victim, new_password(), forged) for _ in range(ACCOUNT_BURST)]
    assert spent[-1].status == 429, [r.status for r in spent]


async def test_a_local_process_cannot_dodge_the_limit_by_picking_loopback_source_addresses(
    identity: ServiceProcess,
) -> None:
    """Every address of 127.0.0.0/8 reaches 127.0.0.1, and any local process may bind one."""
    async with aiohttp.ClientSession(identity.url) as http:
        victim, _, _ = await signed_up(http)  # two of its attempts, from 127.0.0.1
    statuses = []
    for i in range(ACCOUNT_BURST):
        connector = aiohttp.TCPConnector(local_addr=(f"127.0.{i + 1}.{i + 2}", 0))
        async with aiohttp.ClientSession(identity.url, connector=connector) as http:
            statuses.append((await login(http, victim, new_password())).status)
    assert statuses[-1] == 429, statuses
    assert statuses.count(401) == ACCOUNT_BURST - 2


async def test_sign_up_is_limited_per_account_too(http: aiohttp.ClientSession) -> None:
    email = new_email()
    replies = [await sign_up(http, email, new_password()) for _ in range(ACCOUNT_BURST + 1)]
    assert [r.status for r in replies[:ACCOUNT_BURST]] == [202] * ACCOUNT_BURST
    assert_problem(replies[-1], 429)
    assert replies[-1].headers["Retry-After"]


# --- account enumeration (item 13b) ---------------------------------------------------------


async def test_sign_up_answers_alike_whether_or_not_the_email_has_an_account_and_tells_the_owner(
    http: aiohttp.ClientSession, identity: ServiceProcess, events: list[Envelope]
) -> None:
    email, password, owner = await signed_up(http)
    users_before = user_count(identity)

    fresh = await sign_up(http, new_email(), new_password())
    taken = await sign_up(http, email, new_password())
    shouted = await sign_up(http, f"  {email.upper()} ", new_password())

    assert fresh.status == taken.status == shouted.status == 202
    assert fresh.json() == taken.json() == shouted.json()
    assert fresh.content_type == taken.content_type == "application/json"
    assert user_count(identity) == users_before + 1  # only the fresh email made an account
    # The owner keeps their password, and is told (twice) that someone tried.
    assert (await login(http, email, password)).status == 200
    attempts = [
        e
        for e in await _all(events, RegistrationAttempted.type_name(), owner["id"], count=2)
        if e.data["user_id"] == owner["id"]
    ]
    assert [e.data for e in attempts] == [{"user_id": owner["id"], "email": email}] * 2
    assert all("password" not in str(e.data) for e in attempts)


async def _all(events: list[Envelope], type_: str, user_id: str, count: int) -> list[Envelope]:
    deadline = asyncio.get_running_loop().time() + 15
    while asyncio.get_running_loop().time() < deadline:
        found = [e for e in events if e.type == type_ and e.data.get("user_id") == user_id]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    pytest.fail(f"fewer than {count} {type_} for {user_id} in 15 s")


# --- lookalike emails (item 13c) ------------------------------------------------------------


async def test_a_full_width_lookalike_of_the_administrator_is_the_administrator(
    http: aiohttp.ClientSession,
    identity: ServiceProcess,
    admin_password: str,
    events: list[Envelope],
) -> None:
    users_before = user_count(identity)
    assert (await sign_up(http, FULL_WIDTH_ADMIN, new_password())).status == 202
    assert user_count(identity) == users_before  # no second "admin"

    # Sign-in folds the same way: it is the administrator's account, with their password.
    tokens = (await login(http, FULL_WIDTH_ADMIN, admin_password)).json()
    me = await call(
        http, "GET", "/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.json()["email"] == ADMIN_EMAIL
    attempt = await eventually_one(events, RegistrationAttempted.type_name(), me.json()["id"])
    assert attempt.data["email"] == ADMIN_EMAIL


@pytest.mark.parametrize(
    "hidden",
    [
        "\u202e",  # right-to-left override (bidi, Cf)
        "\u2066",  # left-to-right isolate (bidi, Cf)
        "\u200b",  # zero-width space (Cf)
        "\u200d",  # zero-width joiner (Cf)
        "\ufeff",  # zero-width no-break space (Cf)
        "\x07",  # bell (Cc)
        "\x85",  # next line (Cc)
    ],
)
async def test_emails_with_control_format_or_invisible_characters_are_422(
    http: aiohttp.ClientSession, identity: ServiceProcess, hidden: str
) -> None:
    users_before = user_count(identity)
    email = f"ad{hidden}min@souq.local"
    for path in ("/v1/register", "/v1/login"):
        reply = await post(http, path, {"email": email, "password": new_password()})
        problem = assert_problem(reply, 422)
        assert "control, format or invisible" in problem["detail"]
    assert user_count(identity) == users_before


# --- refresh-token rows (item 13a) ----------------------------------------------------------


def refresh_rows(identity: ServiceProcess, user_id: str) -> int:
    with sqlite3.connect(identity.data_dir / "identity.db") as db:
        query = "SELECT count(*) FROM refresh_tokens WHERE user_id = ?"
        (count,) = db.execute(query, (user_id,)).fetchone()
    return int(count)


async def test_300_refreshes_keep_a_few_rows_and_a_recently_used_token_still_burns_its_family(
    http: aiohttp.ClientSession, identity: ServiceProcess
) -> None:
    email, password, user = await signed_up(http)  # one session (its login): one family
    issued = [(await login(http, email, password)).json()["refresh_token"]]
    for _ in range(300):
        reply = await post(http, "/v1/refresh", {"refresh_token": issued[-1]})
        assert reply.status == 200, reply.text
        issued.append(reply.json()["refresh_token"])

    # The session of signed_up, plus this one's last used tokens and its live token.
    assert refresh_rows(identity, user["id"]) <= 1 + 4 + 1
    # A copy used long ago is refused, as an unknown token is; the session lives on.
    assert_problem(await post(http, "/v1/refresh", {"refresh_token": issued[0]}), 401)
    assert_problem(await post(http, "/v1/refresh", {"refresh_token": issued[-6]}), 401)
    # One of the last four used comes back: reuse, and the whole family is revoked.
    assert_problem(await post(http, "/v1/refresh", {"refresh_token": issued[-5]}), 401)
    assert_problem(await post(http, "/v1/refresh", {"refresh_token": issued[-1]}), 401)
    assert refresh_rows(identity, user["id"]) == 1  # only signed_up's session is left


async def test_signing_in_again_and_again_keeps_only_the_newest_sessions(
    http: aiohttp.ClientSession, identity: ServiceProcess, forwarding_secret: str
) -> None:
    email, password, user = await signed_up(http)
    sessions = []
    for i in range(MAX_SESSIONS_PER_USER + 5):  # from clients of their own: no limit is hit
        client = vouched_for(f"198.51.100.{i + 1}", forwarding_secret)
        reply = await login(http, email, password, client)
        assert reply.status == 200, reply.text
        sessions.append(reply.json()["refresh_token"])

    assert refresh_rows(identity, user["id"]) == MAX_SESSIONS_PER_USER
    # The oldest sessions are over; the newest still refresh.
    assert_problem(await post(http, "/v1/refresh", {"refresh_token": sessions[0]}), 401)
    newest = await post(http, "/v1/refresh", {"refresh_token": sessions[-1]})
    assert newest.status == 200, newest.text


async def test_expired_refresh_tokens_are_deleted_while_live_ones_stay(
    http: aiohttp.ClientSession, identity: ServiceProcess
) -> None:
    email, password, user = await signed_up(http)
    live = (await login(http, email, password)).json()["refresh_token"]
    assert refresh_rows(identity, user["id"]) == 2
    with sqlite3.connect(identity.data_dir / "identity.db") as db:  # one session ages 14 days
        db.execute(
            "UPDATE refresh_tokens SET expires_at = '2000-01-01 00:00:00.000000' "
            "WHERE id = (SELECT min(id) FROM refresh_tokens WHERE user_id = ?)",
            (user["id"],),
        )

    deadline = asyncio.get_running_loop().time() + 15
    while refresh_rows(identity, user["id"]) > 1:
        assert asyncio.get_running_loop().time() < deadline, "the expired token was kept"
        await asyncio.sleep(0.1)
    assert (await post(http, "/v1/refresh", {"refresh_token": live})).status == 200
