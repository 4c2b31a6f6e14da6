"""Identity as its clients see it: a real process over real HTTP, publishing to a real NATS."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiohttp
import jwt
import pytest
from souq.events import UserRegistered
from souq_chassis.messaging.broker import Ack, Delivery, Verdict, open_broker
from souq_chassis.messaging.envelope import Envelope, decode
from souq_chassis.testing import Reply, ServiceProcess, assert_problem, call

ADMIN_EMAIL = "admin@souq.local"


def ok(reply: Reply, status: int = 200) -> Any:
    assert reply.status == status, reply.text
    assert reply.content_type == "application/json"
    return reply.json()


def new_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"


def new_password() -> str:
    return f"pw-{uuid.uuid4().hex}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Secrets:
    """Every password the module's tests sent and every reply body they received, so that the
    last test can prove that none of the passwords (or refresh tokens) leaked anywhere."""

    passwords: set[str] = field(default_factory=set)
    bodies: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def seen(admin_password: str) -> Secrets:
    return Secrets(passwords={admin_password})


@dataclass
class Api:
    """Calls to identity that remember every password sent and every body received."""

    http: aiohttp.ClientSession
    seen: Secrets

    async def __call__(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        sent = {**(bearer(token) if token else {}), **(headers or {})}
        if isinstance(body, dict) and isinstance(body.get("password"), str):
            self.seen.passwords.add(body["password"])
        reply = await call(self.http, method, path, body=body, headers=sent)
        self.seen.bodies.append(reply.text)
        return reply

    async def register(
        self, email: str | None = None, password: str | None = None
    ) -> tuple[str, str]:
        """Sign up; the answer is the same whether or not the email had an account."""
        email, password = email or new_email(), password or new_password()
        accepted = ok(
            await self("POST", "/v1/register", {"email": email, "password": password}), 202
        )
        assert accepted["status"] == "accepted"
        return email, password

    async def me(self, tokens: Mapping[str, Any]) -> dict[str, Any]:
        user: dict[str, Any] = ok(await self("GET", "/v1/me", token=tokens["access_token"]))
        return user

    async def login(self, email: str, password: str) -> dict[str, Any]:
        reply = await self("POST", "/v1/login", {"email": email, "password": password})
        tokens: dict[str, Any] = ok(reply)
        assert reply.headers["Cache-Control"] == "no-store"
        return tokens

    async def customer(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """A new customer and their first tokens."""
        email, password = await self.register()
        tokens = await self.login(email, password)
        return await self.me(tokens), tokens

    async def refresh(self, refresh_token: str) -> Reply:
        return await self("POST", "/v1/refresh", {"refresh_token": refresh_token})

    async def jwks(self) -> dict[str, Any]:
        document: dict[str, Any] = ok(await self("GET", "/v1/jwks"))
        return document


@pytest.fixture
def api(http: aiohttp.ClientSession, seen: Secrets) -> Api:
    return Api(http, seen)


def verify(token: str, jwks: Mapping[str, Any]) -> dict[str, Any]:
    """Check a token as any other service would: PyJWT, the kid's key from the JWKS, EdDSA only."""
    kid = jwt.get_unverified_header(token)["kid"]
    [jwk] = [k for k in jwks["keys"] if k["kid"] == kid]
    claims: dict[str, Any] = jwt.decode(
        token,
        jwt.PyJWK(jwk, algorithm="EdDSA").key,
        algorithms=["EdDSA"],
        audience="souq",
        issuer="souq-identity",
        options={"require": ["exp", "iat", "sub", "aud", "iss", "jti"]},
    )
    return claims


# --- registration ---------------------------------------------------------------------------


async def test_registering_makes_a_customer_with_a_normalized_email(api: Api) -> None:
    email = new_email("Amina").replace("example.com", "Example.COM")
    password = new_password()
    await api.register(f"  {email} ", password)
    user = await api.me(await api.login(email.lower(), password))
    assert user["email"] == email.lower()
    assert user["roles"] == ["customer"]
    assert uuid.UUID(user["id"]).version == 4
    datetime.fromisoformat(user["created_at"])
    assert set(user) == {"id", "email", "roles", "created_at"}


@pytest.mark.parametrize(
    "body",
    [
        {"email": "not-an-email", "password": "long enough password"},
        {"email": "a@b", "password": "long enough password"},
        {"email": "x" * 250 + "@example.com", "password": "long enough password"},
        {"email": "fine@example.com", "password": "Sh0rt!x"},
        {"email": "fine@example.com", "password": "p" * 129},
        {"email": "fine@example.com"},
        {"email": "fine@example.com", "password": 12345678},
        {"email": "fine@example.com", "password": "long enough password", "roles": ["admin"]},
    ],
)
async def test_invalid_registrations_are_422_problems(api: Api, body: dict[str, Any]) -> None:
    reply = await api("POST", "/v1/register", body)
    assert_problem(reply, 422)
    password = body.get("password")
    if isinstance(password, str):
        assert password not in reply.text


async def test_nobody_can_register_as_admin_through_extra_fields(api: Api) -> None:
    email = new_email()
    body = {"email": email, "password": new_password(), "roles": ["admin"]}
    assert_problem(await api("POST", "/v1/register", body), 422)
    # The email was not taken by the refused attempt.
    _, password = await api.register(email)
    assert (await api.me(await api.login(email, password)))["roles"] == ["customer"]


# --- login and tokens -----------------------------------------------------------------------


async def test_login_issues_an_eddsa_access_token_that_verifies_against_the_jwks(
    api: Api, access_token_ttl_s: int
) -> None:
    email, password = await api.register()
    tokens = await api.login(email.upper(), password)  # emails compare normalized
    user = await api.me(tokens)
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == access_token_ttl_s
    assert len(tokens["refresh_token"]) >= 43  # 256 random bits
    header = jwt.get_unverified_header(tokens["access_token"])
    assert header["alg"] == "EdDSA" and header["typ"] == "JWT"
    jwks = await api.jwks()
    assert header["kid"] in {k["kid"] for k in jwks["keys"]}
    claims = verify(tokens["access_token"], jwks)
    assert claims["sub"] == user["id"]
    assert claims["roles"] == ["customer"]
    assert claims["exp"] - claims["iat"] == access_token_ttl_s
    assert email not in json.dumps(claims)  # no personal data in the token


async def test_the_jwks_is_public_keys_only_and_cacheable(api: Api) -> None:
    reply = await api("GET", "/v1/jwks")
    document = ok(reply)
    assert reply.headers["Cache-Control"] == "public, max-age=60"
    assert document["keys"]
    for jwk in document["keys"]:
        assert set(jwk) == {"kty", "crv", "x", "kid", "use", "alg"}  # no private "d"
        assert (jwk["kty"], jwk["crv"], jwk["use"], jwk["alg"]) == (
            "OKP",
            "Ed25519",
            "sig",
            "EdDSA",
        )
        assert len(b64url_decode(jwk["x"])) == 32


async def test_a_wrong_password_and_an_unknown_email_get_the_same_401(api: Api) -> None:
    email, password = await api.register()
    wrong = await api("POST", "/v1/login", {"email": email, "password": password + "x"})
    unknown = await api("POST", "/v1/login", {"email": new_email(), "password": password})
    a, b = assert_problem(wrong, 401), assert_problem(unknown, 401)
    del a["request_id"], b["request_id"]
    assert a == b
    assert a["detail"] == "Wrong email or password."
    assert wrong.headers["WWW-Authenticate"] == unknown.headers["WWW-Authenticate"]
    assert "access_token" not in wrong.text + unknown.text


async def test_a_burst_of_logins_beyond_the_hashing_bound_gets_429_retry_after(
    identity: ServiceProcess, seen: Secrets
) -> None:
    # One hash at a time and two waiting (conftest): a burst of 16 must see refusals.
    password = new_password()
    seen.passwords.add(password)
    async with aiohttp.ClientSession(identity.url) as http:
        replies = await asyncio.gather(
            *(
                call(http, "POST", "/v1/login", body={"email": new_email(), "password": password})
                for _ in range(16)
            )
        )
    seen.bodies += [r.text for r in replies]
    statuses = sorted(r.status for r in replies)
    assert 401 in statuses and 429 in statuses, statuses
    assert set(statuses) == {401, 429}, statuses
    for reply in replies:
        if reply.status == 429:
            assert_problem(reply, 429)
            assert reply.headers["Retry-After"] == "1"


# --- refresh-token rotation -----------------------------------------------------------------


async def test_refreshing_rotates_the_refresh_token(api: Api) -> None:
    user, first = await api.customer()
    reply = await api.refresh(first["refresh_token"])
    second = ok(reply)
    assert reply.headers["Cache-Control"] == "no-store"
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert verify(second["access_token"], await api.jwks())["sub"] == user["id"]
    third = ok(await api.refresh(second["refresh_token"]))  # the successor works in turn
    assert third["refresh_token"] not in {first["refresh_token"], second["refresh_token"]}


async def test_reusing_a_refresh_token_revokes_its_whole_family(
    api: Api, identity: ServiceProcess
) -> None:
    user, first = await api.customer()
    second = ok(await api.refresh(first["refresh_token"]))
    reused = await api.refresh(first["refresh_token"])  # a thief's copy, or a replay
    assert_problem(reused, 401)
    # The family is gone: the legitimate newest token is refused too, and so is any retry.
    assert_problem(await api.refresh(second["refresh_token"]), 401)
    assert_problem(await api.refresh(first["refresh_token"]), 401)
    # Other sessions of the same user (other families) are untouched.
    _, other = await api.customer()
    assert ok(await api.refresh(other["refresh_token"]))
    warnings = [
        json.loads(line)
        for line in identity.log_path.read_text().splitlines()
        if '"refresh_token_reuse"' in line
    ]
    [warning] = [w for w in warnings if w["user_id"] == user["id"]]
    assert warning["level"] == "warning"
    assert warning["family_id"]
    assert first["refresh_token"] not in json.dumps(warning)


@pytest.mark.parametrize(
    ("token", "status"),
    [("x" * 43, 401), ("not a token at all", 401), ("", 422), ("x" * 513, 422)],
)
async def test_unknown_or_malformed_refresh_tokens_are_refused(
    api: Api, token: str, status: int
) -> None:
    assert_problem(await api.refresh(token), status)


async def test_an_access_token_is_not_a_refresh_token(api: Api) -> None:
    _, tokens = await api.customer()
    assert_problem(await api.refresh(tokens["access_token"]), 401)


# --- logout ---------------------------------------------------------------------------------


async def test_logout_revokes_the_family_of_the_given_refresh_token(api: Api) -> None:
    email, password = await api.register()
    here, elsewhere = await api.login(email, password), await api.login(email, password)
    body = {"refresh_token": here["refresh_token"]}
    reply = await api("POST", "/v1/logout", body, token=here["access_token"])
    assert reply.status == 204, reply.text
    assert reply.text == ""
    assert_problem(await api.refresh(here["refresh_token"]), 401)
    assert ok(await api.refresh(elsewhere["refresh_token"]))  # another device stays signed in


async def test_logout_without_a_body_signs_out_everywhere(api: Api) -> None:
    email, password = await api.register()
    one, two = await api.login(email, password), await api.login(email, password)
    rotated = ok(await api.refresh(two["refresh_token"]))
    reply = await api("POST", "/v1/logout", token=one["access_token"])
    assert reply.status == 204, reply.text
    assert_problem(await api.refresh(one["refresh_token"]), 401)
    assert_problem(await api.refresh(rotated["refresh_token"]), 401)


async def test_logout_cannot_revoke_someone_elses_refresh_token(api: Api) -> None:
    _, mine = await api.customer()
    _, theirs = await api.customer()
    body = {"refresh_token": theirs["refresh_token"]}
    assert (await api("POST", "/v1/logout", body, token=mine["access_token"])).status == 204
    assert ok(await api.refresh(theirs["refresh_token"]))


async def test_logout_needs_an_access_token(api: Api) -> None:
    _, tokens = await api.customer()
    reply = await api("POST", "/v1/logout", {"refresh_token": tokens["refresh_token"]})
    assert_problem(reply, 401)
    assert ok(await api.refresh(tokens["refresh_token"]))


# --- /me and bad access tokens ------------------------------------------------------------


async def test_me_returns_the_callers_own_profile(api: Api) -> None:
    user, tokens = await api.customer()
    assert ok(await api("GET", "/v1/me", token=tokens["access_token"])) == user


async def test_me_without_a_token_is_401(api: Api) -> None:
    reply = await api("GET", "/v1/me")
    assert_problem(reply, 401)
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_token_with_alg_none_is_refused(api: Api) -> None:
    _, tokens = await api.customer()
    header = jwt.get_unverified_header(tokens["access_token"])
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    unsigned = ".".join(
        [
            b64url(json.dumps({"alg": "none", "typ": "JWT", "kid": header["kid"]}).encode()),
            b64url(json.dumps({**claims, "roles": ["admin", "customer"]}).encode()),
            "",
        ]
    )
    assert_problem(await api("GET", "/v1/me", token=unsigned), 401)
    assert_problem(await api("POST", "/v1/admin/keys/rotate", token=unsigned), 401)


async def test_a_token_with_a_tampered_signature_is_refused(api: Api) -> None:
    _, tokens = await api.customer()
    head, payload, signature = tokens["access_token"].split(".")
    raw = bytearray(b64url_decode(signature))
    raw[10] ^= 0x01
    forged = f"{head}.{payload}.{b64url(bytes(raw))}"
    assert_problem(await api("GET", "/v1/me", token=forged), 401)


async def test_a_token_with_tampered_claims_is_refused(api: Api) -> None:
    _, tokens = await api.customer()
    head, payload, signature = tokens["access_token"].split(".")
    claims = json.loads(b64url_decode(payload))
    promoted = b64url(json.dumps({**claims, "roles": ["admin", "customer"]}).encode())
    forged = f"{head}.{promoted}.{signature}"
    assert_problem(await api("GET", "/v1/me", token=forged), 401)
    assert_problem(await api("POST", "/v1/admin/keys/rotate", token=forged), 401)


# --- administration and key rotation ------------------------------------------------------


async def test_the_seeded_admin_signs_in_with_the_configured_password(
    api: Api, admin_password: str
) -> None:
    tokens = await api.login(ADMIN_EMAIL, admin_password)
    claims = verify(tokens["access_token"], await api.jwks())
    assert claims["roles"] == ["admin", "customer"]
    me = ok(await api("GET", "/v1/me", token=tokens["access_token"]))
    assert me["email"] == ADMIN_EMAIL and me["roles"] == ["admin", "customer"]


async def test_a_customer_cannot_rotate_keys(api: Api) -> None:
    _, tokens = await api.customer()
    before = await api.jwks()
    assert_problem(await api("POST", "/v1/admin/keys/rotate", token=tokens["access_token"]), 403)
    assert_problem(await api("POST", "/v1/admin/keys/rotate"), 401)
    assert await api.jwks() == before


async def test_after_key_rotation_old_tokens_still_work_and_new_ones_use_the_new_key(
    api: Api, admin_password: str
) -> None:
    email, password = await api.register()
    old = await api.login(email, password)
    user = await api.me(old)
    old_kid = jwt.get_unverified_header(old["access_token"])["kid"]
    admin = await api.login(ADMIN_EMAIL, admin_password)

    reply = await api("POST", "/v1/admin/keys/rotate", token=admin["access_token"])
    new_kid = ok(reply, 201)["kid"]
    assert new_kid != old_kid

    assert {old_kid, new_kid} <= {k["kid"] for k in (await api.jwks())["keys"]}
    assert ok(await api("GET", "/v1/me", token=old["access_token"]))["id"] == user["id"]
    new = await api.login(email, password)
    assert jwt.get_unverified_header(new["access_token"])["kid"] == new_kid
    assert ok(await api("GET", "/v1/me", token=new["access_token"]))["id"] == user["id"]
    refreshed = ok(await api.refresh(old["refresh_token"]))  # refresh tokens are not keyed
    assert jwt.get_unverified_header(refreshed["access_token"])["kid"] == new_kid
    # An admin token signed by the old key still authorizes, until it expires.
    assert ok(await api("POST", "/v1/admin/keys/rotate", token=admin["access_token"]), 201)


# --- events and secrecy ---------------------------------------------------------------------


@pytest.fixture
async def registrations(broker_url: str) -> AsyncIterator[list[tuple[bytes, Envelope]]]:
    """UserRegistered events as a consumer of the broker receives them (raw body, envelope)."""
    received: list[tuple[bytes, Envelope]] = []
    broker = open_broker(broker_url, client_name="identity-tests")
    await broker.connect()
    consumer = f"identity-test-{uuid.uuid4().hex[:8]}"
    types = [UserRegistered.type_name()]
    await broker.declare({consumer: types})

    async def handle(deliveries: Any) -> list[Verdict]:
        batch: list[Delivery] = list(deliveries)
        received.extend((d.body, decode(d.body)) for d in batch)
        return [Ack()] * len(batch)

    task = asyncio.create_task(broker.consume(consumer, types, handle))
    try:
        yield received
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await broker.close()


async def test_registration_publishes_user_registered_without_credentials(
    api: Api, registrations: list[tuple[bytes, Envelope]]
) -> None:
    email, password = await api.register()
    user = await api.me(await api.login(email, password))
    deadline = asyncio.get_running_loop().time() + 15
    while asyncio.get_running_loop().time() < deadline:
        mine = [(b, e) for b, e in registrations if e.data.get("user_id") == user["id"]]
        if mine:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail(f"no UserRegistered for {user['id']} in 15 s")
    [(body, envelope)] = mine
    assert envelope.type == "identity.UserRegistered.v1"
    assert envelope.data == {"user_id": user["id"], "email": email}
    assert password.encode() not in body
    assert b"argon2" not in body and b"password" not in body


async def test_no_password_hash_or_refresh_token_leaks_into_logs_or_replies(
    api: Api, identity: ServiceProcess, seen: Secrets, admin_password: str
) -> None:
    """Runs last: besides its own flows, it checks every password and body of the module."""
    email, password = await api.register()
    first = await api.login(email, password)
    second = ok(await api.refresh(first["refresh_token"]))
    assert_problem(await api.refresh(first["refresh_token"]), 401)  # reuse: logged warning
    assert_problem(await api("POST", "/v1/login", {"email": email, "password": "nope-nope"}), 401)
    third = await api.login(email, password)
    await api(
        "POST", "/v1/logout", {"refresh_token": third["refresh_token"]}, token=third["access_token"]
    )
    issued = [first["refresh_token"], second["refresh_token"], third["refresh_token"]]
    for body in seen.bodies:
        if '"refresh_token"' in body:
            issued.append(json.loads(body).get("refresh_token") or "")

    log = identity.log_path.read_text()
    assert '"http_request"' in log  # the log is the process's, and it logged requests
    assert {admin_password, password} <= seen.passwords
    everything_returned = "\n".join(seen.bodies)
    for secret in filter(None, seen.passwords):
        assert secret not in log, "a password reached the log"
        assert secret not in everything_returned, "a password came back in a reply"
    for token in filter(None, issued):
        assert token not in log, "a refresh token reached the log"
        # Only the reply that issued it carries it (and the logout above, which sent it).
        assert sum(token in body for body in seen.bodies) == 1, "a refresh token came back"
    assert "$argon2" not in log and "$argon2" not in everything_returned
