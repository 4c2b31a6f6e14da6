"""Real catalog, inventory and gateway processes on free ports, each with its own data directory.

Fixtures start processes and always stop them. Test modules cannot import this file
(--import-mode=importlib), so what they need from it comes as fixtures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from souq_chassis.testing import ServiceProcess, TokenIssuer, free_port

# No trace export from the processes under test, whatever the shell says.
QUIET = {"OTEL_EXPORTER_OTLP_ENDPOINT": ""}

GatewayFactory = Callable[..., ServiceProcess]
MetricReader = Callable[..., Awaitable[float]]


def _gateway(
    catalog_url: str,
    inventory_target: str,
    jwks_url: str,
    ready_path: str = "/readyz",
    **settings: object,
) -> ServiceProcess:
    """A gateway (not started); `settings` are GATEWAY_* variables by lower-case suffix."""
    http_port = free_port()
    env = {
        **QUIET,
        "SOUQ_JWKS_URL": jwks_url,
        "GATEWAY_IDENTITY_URL": f"http://{_nothing_listens()}",
        "GATEWAY_CART_URL": f"http://{_nothing_listens()}",
        "GATEWAY_HTTP_PORT": str(http_port),
        # The whole suite is one client: rate limits are lifted unless a test sets its own.
        **{f"GATEWAY_{name}": "100000" for name in _LIMITS},
        "GATEWAY_CATALOG_URL": catalog_url,
        "GATEWAY_INVENTORY_TARGET": inventory_target,
        **{f"GATEWAY_{name.upper()}": str(value) for name, value in settings.items()},
    }
    return ServiceProcess("souq_gateway", http_port, env, ready_path)


_LIMITS = (
    "CLIENT_RATE_PER_S",
    "CLIENT_BURST",
    "USER_RATE_PER_S",
    "USER_BURST",
    "SIGN_IN_RATE_PER_S",
    "SIGN_IN_BURST",
)


def _nothing_listens() -> str:
    """host:port where nothing listens."""
    return f"127.0.0.1:{free_port()}"


@dataclass(frozen=True)
class _System:
    catalog: ServiceProcess
    inventory: ServiceProcess
    inventory_target: str
    gateway: ServiceProcess


@pytest.fixture(scope="session")
def issuer() -> Iterator[TokenIssuer]:
    """Signs access tokens as identity would; every process of the session fetches its JWKS."""
    with TokenIssuer() as issuer:
        yield issuer


@pytest.fixture(scope="session")
def _system(tmp_path_factory: pytest.TempPathFactory, issuer: TokenIssuer) -> Iterator[_System]:
    """Catalog, inventory and a gateway in front of them: healthy, seeded with demo data.

    Booted side by side (each takes a second or two); the gateway is ready once catalog is.
    """
    auth = {"SOUQ_JWKS_URL": issuer.jwks_url}
    catalog_port, inventory_port, inventory_grpc = free_port(), free_port(), free_port()
    catalog = ServiceProcess(
        "souq_catalog",
        catalog_port,
        {
            **QUIET,
            **auth,
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
            **auth,
            "INVENTORY_HTTP_PORT": str(inventory_port),
            "INVENTORY_GRPC_PORT": str(inventory_grpc),
            "INVENTORY_DATA_DIR": str(tmp_path_factory.mktemp("inventory")),
        },
    )
    target = f"127.0.0.1:{inventory_grpc}"
    # Generous deadlines: on a busy machine a slow answer must not pass for a missing one here.
    gateway = _gateway(
        catalog.url,
        target,
        issuer.jwks_url,
        inventory_timeout_s=2,
        catalog_timeout_s=5,
        inventory_url=inventory.url,
    )
    system = _System(catalog, inventory, target, gateway)
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
def inventory_target(_system: _System) -> str:
    """The inventory's gRPC address."""
    return _system.inventory_target


@pytest.fixture(scope="session")
def gateway(_system: _System) -> ServiceProcess:
    return _system.gateway


@pytest.fixture(scope="session")
def new_gateway(catalog: ServiceProcess, issuer: TokenIssuer) -> GatewayFactory:
    """`new_gateway(inventory_target, jwks_url=..., **settings)`: an unstarted gateway before
    the catalog, fetching keys from the session's issuer unless `jwks_url` says otherwise."""

    def build(inventory_target: str, jwks_url: str = "", **settings: object) -> ServiceProcess:
        return _gateway(catalog.url, inventory_target, jwks_url or issuer.jwks_url, **settings)

    return build


@pytest.fixture(scope="session")
def gateway_without_inventory(new_gateway: GatewayFactory) -> Iterator[ServiceProcess]:
    """A gateway whose inventory target is a port where nothing listens."""
    with new_gateway(_nothing_listens()) as gateway:
        yield gateway


@pytest.fixture(scope="session")
def gateway_without_catalog(_system: _System, issuer: TokenIssuer) -> Iterator[ServiceProcess]:
    """A gateway whose catalog URL is a port where nothing listens (its inventory is real)."""
    url = f"http://{_nothing_listens()}"
    # Its /readyz rightly stays 503, so it counts as up once it is alive.
    with _gateway(url, _system.inventory_target, issuer.jwks_url, "/healthz") as gateway:
        yield gateway


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


@pytest.fixture
def metric(http: aiohttp.ClientSession) -> MetricReader:
    """`await metric(internal_url, name, **labels)`: the sum of a process's /metrics samples of that
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
