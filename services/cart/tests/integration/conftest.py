"""Real processes for the module: a JWKS issuer, NATS, catalog (seeded) and cart on free ports."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from souq_chassis.testing import EmbeddedNats, ServiceProcess, TokenIssuer

# Long enough that, within a test module, only an event can explain a fresh price.
LONG_PRICE_TTL_S = 3600


@pytest.fixture(scope="session")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(tmp_path_factory.mktemp("nats-store")) as server:
        yield server


@pytest.fixture(scope="module")
def broker_url(nats: EmbeddedNats) -> str:
    """The module's own namespace on the broker: its catalog and cart see only each other."""
    return f"{nats.url}?namespace=cart{os.urandom(4).hex()}"


@pytest.fixture(scope="module")
def issuer() -> Iterator[TokenIssuer]:
    """Identity's signing side: its JWKS over real HTTP, and tokens as identity mints them."""
    with TokenIssuer() as token_issuer:
        yield token_issuer


@pytest.fixture(scope="module")
def catalog(
    tmp_path_factory: pytest.TempPathFactory, issuer: TokenIssuer, broker_url: str
) -> Iterator[ServiceProcess]:
    """A real catalog process with the demo products, publishing on the module's broker."""
    service = ServiceProcess.on_free_ports(
        "souq_catalog",
        "CATALOG",
        tmp_path_factory.mktemp("catalog-data"),
        seed_demo_data=True,
        environment="test",
        env={"SOUQ_JWKS_URL": issuer.jwks_url, "SOUQ_BROKER_URL": broker_url},
    )
    with service.serving():
        yield service


@pytest.fixture(scope="module")
def cart_settings() -> dict[str, Any]:
    """More CART_* settings of the module's cart process (a module overrides this)."""
    return {"price_ttl_s": LONG_PRICE_TTL_S}


@pytest.fixture(scope="module")
def cart(
    tmp_path_factory: pytest.TempPathFactory,
    issuer: TokenIssuer,
    broker_url: str,
    catalog: ServiceProcess,
    cart_settings: dict[str, Any],
) -> Iterator[ServiceProcess]:
    """A real cart process (HTTP, its own SQLite) pricing from the module's catalog."""
    service = ServiceProcess.on_free_ports(
        "souq_cart",
        "CART",
        tmp_path_factory.mktemp("cart-data"),
        environment="test",
        catalog_target=catalog.grpc_target,
        env={"SOUQ_JWKS_URL": issuer.jwks_url, "SOUQ_BROKER_URL": broker_url},
        **cart_settings,
    )
    with service.serving():
        yield service


@pytest.fixture
async def http(cart: ServiceProcess) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cart.url) as session:
        yield session


@pytest.fixture
async def catalog_http(catalog: ServiceProcess) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(catalog.url) as session:
        yield session


@pytest.fixture
def cart_database(cart: ServiceProcess) -> Path:
    """The cart's own SQLite file, for what the database itself enforces and holds."""
    assert cart.data_dir is not None
    return cart.data_dir / "cart.db"


@pytest.fixture
def sign_in(issuer: TokenIssuer) -> Callable[[], dict[str, str]]:
    """`sign_in()`: the Authorization header of a new customer, whose cart starts empty."""

    def new_customer() -> dict[str, str]:
        return issuer.bearer(f"customer-{uuid.uuid4().hex[:12]}")

    return new_customer


@pytest.fixture
def catalog_calls(
    http: aiohttp.ClientSession, cart: ServiceProcess
) -> Callable[[], Awaitable[float]]:
    """`await catalog_calls()`: how many GetProducts calls the cart has made to catalog."""

    async def count() -> float:
        async with http.get(cart.internal_url + "/metrics") as response:
            text = await response.text()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "upstream_requests_total"
            and sample.labels.get("upstream") == "catalog"
            and sample.labels.get("operation") == "GetProducts"
        )

    return count
