"""A real identity process (HTTP, its own SQLite, a real NATS JetStream) for the module."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from souq_chassis.testing import EmbeddedNats, ServiceProcess

ACCESS_TOKEN_TTL_S = 120
MAX_WAITING_HASHES = 2
# Every test sends from 127.0.0.1: the per-client sign-in bucket is lifted so that a module's
# tests do not meter each other; the per-account one keeps identity's defaults.
CLIENT_SIGN_IN_BURST = 1_000_000
REFRESH_TOKEN_PRUNE_S = 0.5  # expired refresh tokens are deleted this often
FORWARDING_SECRET = secrets.token_urlsafe(32)  # the gateway's, with which it names a client


@pytest.fixture(scope="module")
def access_token_ttl_s() -> int:
    return ACCESS_TOKEN_TTL_S


@pytest.fixture(scope="module")
def forwarding_secret() -> str:
    """The secret the gateway shares with identity, to name the client it forwards for."""
    return FORWARDING_SECRET


@pytest.fixture(scope="module")
def admin_password() -> str:
    return secrets.token_urlsafe(18)


@pytest.fixture(scope="module")
def embedded_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(tmp_path_factory.mktemp("nats-store")) as server:
        yield server


@pytest.fixture(scope="module")
def broker_url(embedded_nats: EmbeddedNats) -> str:
    """The embedded NATS, in a namespace of this module's own."""
    return f"{embedded_nats.url}?namespace=identity{os.urandom(4).hex()}"


@pytest.fixture(scope="module")
def identity(
    tmp_path_factory: pytest.TempPathFactory, broker_url: str, admin_password: str
) -> Iterator[ServiceProcess]:
    """A real identity process with a seeded administrator; `.data_dir` holds its database."""
    data_dir = tmp_path_factory.mktemp("identity-data")
    service = ServiceProcess.on_free_ports(
        "souq_identity",
        "IDENTITY",
        data_dir,
        environment="test",
        admin_password=admin_password,
        access_token_ttl_s=ACCESS_TOKEN_TTL_S,
        max_waiting_hashes=MAX_WAITING_HASHES,
        sign_in_burst=CLIENT_SIGN_IN_BURST,
        refresh_token_prune_s=REFRESH_TOKEN_PRUNE_S,
        env={"SOUQ_BROKER_URL": broker_url, "SOUQ_FORWARDING_SECRET": FORWARDING_SECRET},
    )
    with service.serving():
        yield service


@pytest.fixture
async def http(identity: ServiceProcess) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(identity.url) as session:
        yield session
