"""A real inventory process (HTTP + gRPC + SQLite) for the module, and clients for each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest
from souq.inventory.v1 import inventory_pb2_grpc
from souq_chassis.testing import ServiceProcess


@dataclass(frozen=True)
class RunningInventory:
    url: str
    grpc_target: str
    data_dir: Path


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningInventory]:
    data_dir = tmp_path_factory.mktemp("inventory-data")
    service = ServiceProcess.on_free_ports(
        "souq_inventory",
        "INVENTORY",
        data_dir,
        database_url="",
        seed_demo_data=True,
        environment="test",
    )
    with ExitStack() as stack:
        stack.push(service)  # stopped, and its log removed, however start() or the tests end
        service.start()
        yield RunningInventory(service.url, service.grpc_target, data_dir)
        assert service.stop() == 0, f"did not stop cleanly on SIGTERM:\n{service.output()}"


@pytest.fixture
async def http(inventory: RunningInventory) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(inventory.url) as session:
        yield session


@pytest.fixture
async def inventory_rpc(
    inventory: RunningInventory,
) -> AsyncIterator[inventory_pb2_grpc.InventoryServiceStub]:
    async with grpc.aio.insecure_channel(inventory.grpc_target) as channel:
        yield inventory_pb2_grpc.InventoryServiceStub(channel)


@pytest.fixture
def inventory_database(inventory: RunningInventory) -> Path:
    """The service's own SQLite file, for tests of what the database itself enforces."""
    return inventory.data_dir / "inventory.db"
