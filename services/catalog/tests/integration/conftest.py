"""A real catalog process (HTTP + gRPC + SQLite) for the module, and clients for each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import grpc
import pytest
from souq.catalog.v1 import catalog_pb2_grpc
from souq_chassis.testing import ServiceProcess, TokenIssuer


@pytest.fixture(scope="module")
def issuer() -> Iterator[TokenIssuer]:
    """Signs access tokens as identity would; the service fetches its JWKS over HTTP."""
    with TokenIssuer() as issuer:
        yield issuer


@pytest.fixture(scope="module")
def catalog(
    tmp_path_factory: pytest.TempPathFactory, issuer: TokenIssuer
) -> Iterator[ServiceProcess]:
    """A real catalog process (HTTP, gRPC, its own SQLite) for the module; `.data_dir` holds
    its database."""
    data_dir = tmp_path_factory.mktemp("catalog-data")
    service = ServiceProcess.on_free_ports(
        "souq_catalog",
        "CATALOG",
        data_dir,
        seed_demo_data=True,
        environment="test",
        env={"SOUQ_JWKS_URL": issuer.jwks_url},
    )
    with service.serving():
        yield service


@pytest.fixture
async def http(
    catalog: ServiceProcess, issuer: TokenIssuer
) -> AsyncIterator[aiohttp.ClientSession]:
    """A client signed in as an administrator (public routes ignore the token)."""
    admin = issuer.bearer("admin-1", ("admin",))
    async with aiohttp.ClientSession(catalog.url, headers=admin) as session:
        yield session


@pytest.fixture
async def anonymous(catalog: ServiceProcess) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(catalog.url) as session:
        yield session


@pytest.fixture
async def catalog_rpc(
    catalog: ServiceProcess,
) -> AsyncIterator[catalog_pb2_grpc.CatalogServiceStub]:
    async with grpc.aio.insecure_channel(catalog.grpc_target) as channel:
        yield catalog_pb2_grpc.CatalogServiceStub(channel)
