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
from souq_chassis.testing import ServiceProcess, free_port


@dataclass(frozen=True)
class RunningCatalog:
    url: str
    grpc_target: str
    data_dir: Path


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCatalog]:
    http_port, grpc_port = free_port(), free_port()
    data_dir = tmp_path_factory.mktemp("catalog-data")
    service = ServiceProcess(
        "souq_catalog",
        http_port,
        {
            "CATALOG_HTTP_HOST": "127.0.0.1",
            "CATALOG_HTTP_PORT": str(http_port),
            "CATALOG_GRPC_HOST": "127.0.0.1",
            "CATALOG_GRPC_PORT": str(grpc_port),
            "CATALOG_DATA_DIR": str(data_dir),
            "CATALOG_DATABASE_URL": "",
            "CATALOG_SEED_DEMO_DATA": "true",
            "CATALOG_ENVIRONMENT": "test",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "",
        },
    )
    with ExitStack() as stack:
        stack.push(service)  # stopped, and its log removed, however start() or the tests end
        service.start()
        yield RunningCatalog(service.url, f"127.0.0.1:{grpc_port}", data_dir)
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
