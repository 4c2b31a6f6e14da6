"""Identity's use cases with fakes of their ports: what a refused attempt costs, and what
sign-up does for an email that has an account."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from souq.events import RegistrationAttempted, UserRegistered
from souq_chassis.ratelimit import RateLimited, RateLimiter
from souq_identity.domain import EmailTaken, InvalidCredentials, User
from souq_identity.service import IdentityService, SignInLimits


class CountingPasswords:
    """Stands in for Argon2id: counts every hash and verification."""

    def __init__(self) -> None:
        self.spent = 0

    async def hash(self, password: str) -> str:
        self.spent += 1
        return f"hash:{password}"

    async def verify(self, password_hash: str, password: str) -> bool:
        self.spent += 1
        return password_hash == f"hash:{password}"

    async def verify_nobody(self, password: str) -> None:
        self.spent += 1

    def needs_rehash(self, password_hash: str) -> bool:
        return False


class FakeDatabase:
    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[object]:
        yield object()


class FakeUsers:
    def __init__(self) -> None:
        self.by_email: dict[str, User] = {}

    async def add(self, tx: object, user: User, password_hash: str) -> None:
        if user.email in self.by_email:
            raise EmailTaken()
        self.by_email[user.email] = user

    async def id_of_email(self, tx: object, email: str) -> str | None:
        user = self.by_email.get(email)
        return user.id if user else None

    async def credentials(self, email: str) -> None:
        return None


class FakeOutbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def add(self, tx: object, message: Any) -> None:
        self.messages.append(message)


def limits(per_account_burst: int = 5) -> SignInLimits:
    return SignInLimits(
        per_client=RateLimiter(rate_per_s=1.0, burst=20),
        per_account=RateLimiter(rate_per_s=0.1, burst=per_account_burst),
    )


@pytest.fixture
def parts() -> dict[str, Any]:
    return {
        "passwords": CountingPasswords(),
        "users": FakeUsers(),
        "outbox": FakeOutbox(),
        "now": [1000.0],
    }


def service(parts: dict[str, Any], sign_in: SignInLimits) -> IdentityService:
    unused: Any = None
    return IdentityService(
        FakeDatabase(),  # type: ignore[arg-type]
        parts["users"],
        unused,
        unused,
        unused,
        parts["passwords"],
        parts["outbox"],
        access_token_ttl_s=300,
        refresh_token_ttl_s=3600,
        limits=sign_in,
        monotonic=lambda: parts["now"][0],
    )


async def test_a_refused_sign_in_spends_no_password_hash(parts: dict[str, Any]) -> None:
    identity = service(parts, limits(per_account_burst=2))
    for _ in range(2):
        with pytest.raises(InvalidCredentials):
            await identity.login("amina@example.com", "a wrong password", "10.0.0.1")
    assert parts["passwords"].spent == 2

    with pytest.raises(RateLimited) as refused:
        await identity.login("amina@example.com", "a wrong password", "10.0.0.1")
    assert refused.value.retry_after == 10
    assert parts["passwords"].spent == 2  # refused before Argon2 is asked anything


async def test_an_account_limited_from_one_client_still_signs_in_from_another(
    parts: dict[str, Any],
) -> None:
    identity = service(parts, limits(per_account_burst=1))
    with pytest.raises(InvalidCredentials):
        await identity.login("amina@example.com", "guess one", "10.6.6.6")
    with pytest.raises(RateLimited):
        await identity.login("Amina@Example.com", "guess two", "10.6.6.6")
    # The owner, elsewhere: the guesser's bucket is not theirs (no lockout from elsewhere).
    with pytest.raises(InvalidCredentials):  # (the fake knows no account: 401, not 429)
        await identity.login("amina@example.com", "the owner's try", "192.0.2.7")


async def test_signing_up_with_a_taken_email_costs_a_hash_and_tells_the_owner(
    parts: dict[str, Any],
) -> None:
    identity = service(parts, limits())
    await identity.register("amina@example.com", "first password", "10.0.0.1")
    assert parts["passwords"].spent == 1
    owner = parts["users"].by_email["amina@example.com"]

    await identity.register(" AMINA@example.com", "another password", "10.0.0.2")
    assert parts["passwords"].spent == 2  # as long as a real sign-up
    assert len(parts["users"].by_email) == 1
    registered, attempted = parts["outbox"].messages
    assert isinstance(registered, UserRegistered)
    assert attempted == RegistrationAttempted(user_id=owner.id, email="amina@example.com")
