"""A real catalog process (HTTP + gRPC + SQLite) for the module, and clients for each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest
from souq.catalog.v1 import catalog_pb2_grpc
from souq_chassis.testing import ServiceProcess


@dataclass(frozen=True)
class RunningCatalog:
    url: str
    grpc_target: str
    data_dir: Path


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCatalog]:
    data_dir = tmp_path_factory.mktemp("catalog-data")
    service = ServiceProcess.on_free_ports(
        "souq_catalog",
        "CATALOG",
        data_dir,
        database_url="",
        seed_demo_data=True,
        environment="test",
    )
    with ExitStack() as stack:
        stack.push(service)  # stopped, and its log removed, however start() or the tests end
        service.start()
        yield RunningCatalog(service.url, service.grpc_target, data_dir)
        assert service.stop() == 0, f"did not stop cleanly on SIGTERM:\n{service.output()}"


@pytest.fixture
async def http(catalog: RunningCatalog) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(catalog.url) as session:
        yield session


@pytest.fixture
async def catalog_rpc(
    catalog: RunningCatalog,
) -> AsyncIterator[catalog_pb2_grpc.CatalogServiceStub]:
    async with grpc.aio.insecure_channel(catalog.grpc_target) as channel:
        yield catalog_pb2_grpc.CatalogServiceStub(channel)
