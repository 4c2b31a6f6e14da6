"""Real catalog, inventory and gateway processes on free ports, each with its own data directory.

Fixtures start processes and always stop them. Test modules cannot import this file
(--import-mode=importlib), so what they need from it comes as fixtures.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from souq_chassis.testing import ServiceProcess, free_port

# No trace export from the processes under test, whatever the shell says.
QUIET = {"OTEL_EXPORTER_OTLP_ENDPOINT": ""}

GatewayFactory = Callable[..., ServiceProcess]
MetricReader = Callable[..., Awaitable[float]]


def _gateway(
    catalog_url: str,
    inventory_target: str,
    process: type[ServiceProcess] = ServiceProcess,
    **settings: object,
) -> ServiceProcess:
    """A gateway (not started); `settings` are GATEWAY_* variables by lower-case suffix."""
    http_port = free_port()
    env = {
        **QUIET,
        "GATEWAY_HTTP_PORT": str(http_port),
        "GATEWAY_CATALOG_URL": catalog_url,
        "GATEWAY_INVENTORY_TARGET": inventory_target,
        **{f"GATEWAY_{name.upper()}": str(value) for name, value in settings.items()},
    }
    return process("souq_gateway", http_port, env)


def _nothing_listens() -> str:
    """host:port where nothing listens."""
    return f"127.0.0.1:{free_port()}"


class _AliveProcess(ServiceProcess):
    """Up once /healthz answers: for a gateway whose catalog is down on purpose, whose
    /readyz rightly stays 503."""

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.module} exited ({self.proc.returncode}):\n{self.output()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"{self.module} not alive in {timeout_s}s:\n{self.output()}")


@dataclass(frozen=True)
class _System:
    catalog: ServiceProcess
    inventory: ServiceProcess
    inventory_target: str
    gateway: ServiceProcess


@pytest.fixture(scope="session")
def _system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_System]:
    """Catalog, inventory and a gateway in front of them: healthy, seeded with demo data.

    Booted side by side (each takes a second or two); the gateway is ready once catalog is.
    """
    catalog_port, inventory_port, inventory_grpc = free_port(), free_port(), free_port()
    catalog = ServiceProcess(
        "souq_catalog",
        catalog_port,
        {
            **QUIET,
            "CATALOG_HTTP_PORT": str(catalog_port),
            "CATALOG_GRPC_PORT": str(free_port()),
            "CATALOG_DATA_DIR": str(tmp_path_factory.mktemp("catalog")),
        },
    )
    inventory = ServiceProcess(
        "souq_inventory",
        inventory_port,
        {
            **QUIET,
            "INVENTORY_HTTP_PORT": str(inventory_port),
            "INVENTORY_GRPC_PORT": str(inventory_grpc),
            "INVENTORY_DATA_DIR": str(tmp_path_factory.mktemp("inventory")),
        },
    )
    target = f"127.0.0.1:{inventory_grpc}"
    system = _System(catalog, inventory, target, _gateway(catalog.url, target))
    processes = [system.catalog, system.inventory, system.gateway]
    with ExitStack() as stack:
        for process in processes:
            stack.push(process)  # its __exit__ stops it, if started, and removes its log
        with ThreadPoolExecutor(len(processes)) as pool:
            for started in [pool.submit(p.start) for p in processes]:
                started.result()
        yield system


@pytest.fixture(scope="session")
def catalog(_system: _System) -> ServiceProcess:
    return _system.catalog


@pytest.fixture(scope="session")
def inventory(_system: _System) -> ServiceProcess:
    return _system.inventory


@pytest.fixture(scope="session")
def gateway(_system: _System) -> ServiceProcess:
    return _system.gateway


@pytest.fixture(scope="session")
def new_gateway(catalog: ServiceProcess) -> GatewayFactory:
    """Build (not start) a gateway in front of the real catalog: new_gateway(inventory_target, **settings)."""

    def build(inventory_target: str, **settings: object) -> ServiceProcess:
        return _gateway(catalog.url, inventory_target, **settings)

    return build


@pytest.fixture(scope="session")
def gateway_without_inventory(new_gateway: GatewayFactory) -> Iterator[ServiceProcess]:
    """A gateway whose inventory target is a port where nothing listens."""
    with new_gateway(_nothing_listens()) as gateway:
        yield gateway


@pytest.fixture(scope="session")
def gateway_without_catalog(_system: _System) -> Iterator[ServiceProcess]:
    """A gateway whose catalog URL is a port where nothing listens (its inventory is real)."""
    url = f"http://{_nothing_listens()}"
    with _gateway(url, _system.inventory_target, _AliveProcess) as gateway:
        yield gateway


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


@pytest.fixture
def metric(http: aiohttp.ClientSession) -> MetricReader:
    """`await metric(base_url, name, **labels)`: the sum of a process's /metrics samples of that
    name whose labels include `labels` (0 when there are none)."""

    async def read(base_url: str, name: str, **labels: str) -> float:
        async with http.get(base_url + "/metrics") as response:
            assert response.status == 200
            text = await response.text()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    return read
