"""Access-token verification: what is accepted, what is refused, and how keys are fetched."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import aiohttp
import pytest
from fastapi import FastAPI
from souq_chassis.app import create_app, lifespan
from souq_chassis.auth import (
    Admin,
    AuthSettings,
    CurrentUser,
    InvalidToken,
    KeysUnavailable,
    TokenVerifier,
    install_auth,
    jwks_verifier,
)
from souq_chassis.metrics import Metrics
from souq_chassis.testing import TokenIssuer, assert_problem, call, serving


@pytest.fixture
def issuer() -> Iterator[TokenIssuer]:
    with TokenIssuer() as issuer:
        yield issuer


def verifier_of(issuer: TokenIssuer, **options: float) -> TokenVerifier:
    async def fetch() -> bytes:
        return json.dumps(issuer.jwks()).encode()

    return TokenVerifier(fetch, **options)


async def test_a_token_from_identity_gives_its_subject_and_known_roles(
    issuer: TokenIssuer,
) -> None:
    verifier = verifier_of(issuer)

    principal = await verifier.verify(issuer.token("u-42", ("customer", "admin", "root")))

    assert principal.user_id == "u-42"
    assert principal.roles == {"customer", "admin"}  # unknown roles are dropped
    assert principal.is_admin
    assert principal.expires_at > time.time()


@pytest.mark.parametrize(
    "kind",
    [
        "expired",
        "tampered",
        "other-user",
        "alg-none",
        "hs256-with-public-key",
        "wrong-audience",
        "wrong-issuer",
        "unknown-key",
        "known-kid-other-key",
        "garbage",
    ],
)
async def test_forged_tokens_are_refused(issuer: TokenIssuer, kind: str) -> None:
    verifier = verifier_of(issuer)
    await verifier.verify(issuer.token())  # keys are known: only the forgery is at fault

    with pytest.raises(InvalidToken):
        await verifier.verify(issuer.forged()[kind])


async def test_a_new_key_is_fetched_once_and_the_old_key_still_verifies(
    issuer: TokenIssuer,
) -> None:
    verifier = verifier_of(issuer, min_refresh_interval_s=0)
    before = issuer.token("old")
    await verifier.verify(before)
    assert verifier.fetches == 1

    issuer.rotate()
    after = issuer.token("new")

    assert (await verifier.verify(after)).user_id == "new"
    assert (await verifier.verify(before)).user_id == "old"
    assert verifier.fetches == 2


async def test_with_keys_known_a_token_naming_another_waits_a_slow_fetch_out(
    issuer: TokenIssuer,
) -> None:
    """A rotated key on a busy identity: the request waits the fetch (up to its deadline)
    instead of a spurious 503 after the short wait meant for an identity that is away."""
    slow = False

    async def fetch() -> bytes:
        if slow:
            await asyncio.sleep(0.3)
        return json.dumps(issuer.jwks()).encode()

    verifier = TokenVerifier(fetch, min_refresh_interval_s=0, wait_s=0.05, fetch_timeout_s=2.0)
    await verifier.verify(issuer.token("old"))
    issuer.rotate()
    slow = True

    assert (await verifier.verify(issuer.token("new"))).user_id == "new"
    assert verifier.fetches == 2


@pytest.mark.parametrize("interval_s", [60.0, 0.0])
async def test_unknown_key_ids_cannot_flood_identity_with_jwks_requests(
    issuer: TokenIssuer, interval_s: float
) -> None:
    verifier = verifier_of(issuer, min_refresh_interval_s=interval_s)
    await verifier.verify(issuer.token())
    forged = [issuer.forged()["unknown-key"] for _ in range(20)]  # 20 key ids never seen

    results = [await _outcome(verifier, t) for t in forged]  # one after the other

    assert all(isinstance(r, InvalidToken) for r in results)
    if interval_s:
        assert verifier.fetches == 1  # the first fetch was for the good token; none since
    else:  # without the back-off, each unknown key id costs a fetch: the bound is what saves
        assert verifier.fetches == 21


async def _outcome(verifier: TokenVerifier, token: str) -> object:
    try:
        return await verifier.verify(token)
    except Exception as exc:
        return exc


async def test_requests_that_need_keys_share_one_fetch(issuer: TokenIssuer) -> None:
    in_flight, most = 0, 0

    async def fetch() -> bytes:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return json.dumps(issuer.jwks()).encode()

    verifier = TokenVerifier(fetch, min_refresh_interval_s=0, wait_s=1.0)
    tokens = [issuer.token(f"u-{i}") for i in range(30)]

    principals = await asyncio.gather(*(verifier.verify(t) for t in tokens))

    assert [p.user_id for p in principals] == [f"u-{i}" for i in range(30)]
    assert (verifier.fetches, most) == (1, 1)


async def test_a_hung_identity_costs_a_request_its_short_wait_then_503s_at_once(
    issuer: TokenIssuer,
) -> None:
    """One fetch in flight, abandoned at its deadline; waiters give up after their own bound;
    the back-off starts when the fetch ends, and meanwhile the answer is an outage at once."""
    calls = 0

    async def hung() -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    verifier = TokenVerifier(hung, fetch_timeout_s=0.3, wait_s=0.05, min_refresh_interval_s=1)
    loop = asyncio.get_running_loop()

    async def timed() -> tuple[object, float]:
        started = loop.time()
        outcome = await _outcome(verifier, issuer.token())
        return outcome, loop.time() - started

    first = await asyncio.gather(*(timed() for _ in range(20)))
    assert all(isinstance(o, KeysUnavailable) and t < 0.25 for o, t in first), first
    assert verifier.fetching and calls == 1
    await asyncio.sleep(0.4)  # the fetch has hit its deadline: backing off from now
    assert not verifier.fetching
    later = await asyncio.gather(*(timed() for _ in range(20)))
    assert all(isinstance(o, KeysUnavailable) and t < 0.05 for o, t in later), later
    assert calls == 1
    await verifier.close()


async def test_a_remembered_token_still_expires(issuer: TokenIssuer) -> None:
    verifier = verifier_of(issuer, leeway_s=0)
    token = issuer.token(ttl_s=1)
    await verifier.verify(token)

    await asyncio.sleep(1.2)

    with pytest.raises(InvalidToken, match="expired"):
        await verifier.verify(token)


async def test_a_withdrawn_key_stops_working_at_once(issuer: TokenIssuer) -> None:
    verifier = verifier_of(issuer)
    token = issuer.token()
    await verifier.verify(token)

    verifier.load({"keys": []})

    with pytest.raises(InvalidToken):
        await verifier.verify(token)


async def test_keys_that_cannot_be_fetched_are_an_outage_not_a_bad_token(
    issuer: TokenIssuer,
) -> None:
    async def down() -> bytes:
        raise ConnectionRefusedError("identity is down")

    verifier = TokenVerifier(down, min_refresh_interval_s=60)
    outcomes = await asyncio.gather(
        *(verifier.verify(issuer.token()) for _ in range(4)), return_exceptions=True
    )

    assert all(isinstance(o, KeysUnavailable) for o in outcomes), outcomes  # 503, never 401
    assert verifier.fetches == 1


@pytest.mark.parametrize("document", [b"<html>not found</html>", b"[]", b'{"keys": 3}'])
async def test_a_document_that_is_not_a_jwks_is_an_outage_too(
    issuer: TokenIssuer, document: bytes
) -> None:
    async def wrong() -> bytes:
        return document

    with pytest.raises(KeysUnavailable):
        await TokenVerifier(wrong).verify(issuer.token())


async def test_a_key_identity_stops_publishing_stops_verifying_once_the_copy_is_old(
    issuer: TokenIssuer,
) -> None:
    verifier = verifier_of(issuer, max_age_s=0.3, min_refresh_interval_s=0)
    old_kid = issuer.kid
    leaked = issuer.token("attacker", ("admin",))
    await verifier.verify(leaked)
    issuer.rotate()
    await verifier.verify(issuer.token("new"))  # the new key is fetched; the old is still listed

    issuer.withdraw(old_kid)
    await asyncio.sleep(0.4)
    await verifier.verify(issuer.token("current"))  # the copy is old: renewed in the background
    await asyncio.sleep(0.05)

    with pytest.raises(InvalidToken):
        await verifier.verify(leaked)  # remembered before, forgotten with its key
    assert (await verifier.verify(issuer.token("current"))).user_id == "current"


async def test_an_old_copy_is_kept_while_identity_is_away(issuer: TokenIssuer) -> None:
    up = True

    async def fetch() -> bytes:
        if not up:
            raise ConnectionRefusedError("identity is down")
        return json.dumps(issuer.jwks()).encode()

    verifier = TokenVerifier(fetch, max_age_s=0.2, min_refresh_interval_s=0)
    await verifier.verify(issuer.token("before"))
    up = False
    await asyncio.sleep(0.3)

    assert (await verifier.verify(issuer.token("during"))).user_id == "during"


def app_with_auth(issuer: TokenIssuer) -> FastAPI:
    metrics = Metrics()
    verifier, identity = jwks_verifier(AuthSettings(jwks_url=issuer.jwks_url), metrics)
    app = create_app(
        title="t",
        version="0",
        metrics=metrics,
        lifespan=lifespan(on_start=[identity.start], on_stop=[identity.close]),
    )
    install_auth(app, verifier)

    @app.get("/mine")
    async def mine(user: CurrentUser) -> dict[str, str]:
        return {"user": user.user_id}

    @app.get("/admin")
    async def admin(user: Admin) -> dict[str, str]:
        return {"admin": user.user_id}

    return app


async def test_routes_answer_401_403_or_200_by_the_token(issuer: TokenIssuer) -> None:
    async with serving(app_with_auth(issuer)) as url, aiohttp.ClientSession(url) as http:
        missing = await call(http, "GET", "/mine")
        assert_problem(missing, 401)
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        assert_problem(await call(http, "GET", "/mine", headers={"Authorization": "Basic x"}), 401)
        forged = {"Authorization": f"Bearer {issuer.forged()['alg-none']}"}
        assert_problem(await call(http, "GET", "/mine", headers=forged), 401)

        customer = issuer.bearer("c-1", ("customer",))
        assert (await call(http, "GET", "/mine", headers=customer)).json() == {"user": "c-1"}
        assert_problem(await call(http, "GET", "/admin", headers=customer), 403)

        admin = issuer.bearer("a-1", ("admin",))
        assert (await call(http, "GET", "/admin", headers=admin)).json() == {"admin": "a-1"}
