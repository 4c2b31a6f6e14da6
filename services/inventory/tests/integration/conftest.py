"""A real inventory process (HTTP + gRPC + SQLite) for the module, and clients for each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from souq.inventory.v1 import inventory_pb2_grpc
from souq_chassis.testing import ServiceProcess, TokenIssuer


@pytest.fixture(scope="module")
def issuer() -> Iterator[TokenIssuer]:
    """Signs access tokens as identity would; the service fetches its JWKS over HTTP."""
    with TokenIssuer() as issuer:
        yield issuer


@pytest.fixture(scope="module")
def inventory(
    tmp_path_factory: pytest.TempPathFactory, issuer: TokenIssuer
) -> Iterator[ServiceProcess]:
    """A real inventory process (HTTP, gRPC, its own SQLite) for the module; `.data_dir` holds
    its database."""
    data_dir = tmp_path_factory.mktemp("inventory-data")
    service = ServiceProcess.on_free_ports(
        "souq_inventory",
        "INVENTORY",
        data_dir,
        seed_demo_data=True,
        environment="test",
        env={"SOUQ_JWKS_URL": issuer.jwks_url},
    )
    with service.serving():
        yield service


@pytest.fixture
async def http(
    inventory: ServiceProcess, issuer: TokenIssuer
) -> AsyncIterator[aiohttp.ClientSession]:
    """A client signed in as an administrator (public routes ignore the token)."""
    admin = issuer.bearer("admin-1", ("admin",))
    async with aiohttp.ClientSession(inventory.url, headers=admin) as session:
        yield session


@pytest.fixture
async def anonymous(inventory: ServiceProcess) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(inventory.url) as session:
        yield session


@pytest.fixture
async def inventory_rpc(
    inventory: ServiceProcess,
) -> AsyncIterator[inventory_pb2_grpc.InventoryServiceStub]:
    async with grpc.aio.insecure_channel(inventory.grpc_target) as channel:
        yield inventory_pb2_grpc.InventoryServiceStub(channel)


@pytest.fixture
def inventory_database(inventory: ServiceProcess) -> Path:
    """The service's own SQLite file, for tests of what the database itself enforces."""
    return inventory.data_dir / "inventory.db"
