"""What `souq up` runs: each service as `python -m <module>`, configured by environment only.

The CLI never imports a service; it knows their names, modules, ports and settings variables.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

# Named ports and their defaults. HTTP ports also serve /healthz, /readyz and /metrics.
DEFAULT_PORTS: dict[str, int] = {
    "gateway": 8080,
    "catalog": 8081,
    "inventory": 8082,
    "catalog-grpc": 50061,
    "inventory-grpc": 50062,
}

Ports = Mapping[str, int]


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    module: str
    http_port: str  # key into the ports map
    environment: Callable[[Ports, Path], dict[str, str]]

    def http_url(self, ports: Ports) -> str:
        return f"http://127.0.0.1:{ports[self.http_port]}"


def _service_env(prefix: str, name: str) -> Callable[[Ports, Path], dict[str, str]]:
    def env(ports: Ports, data_dir: Path) -> dict[str, str]:
        return {
            f"{prefix}_HTTP_PORT": str(ports[name]),
            f"{prefix}_GRPC_PORT": str(ports[f"{name}-grpc"]),
            f"{prefix}_DATA_DIR": str(data_dir),
        }

    return env


def _gateway_env(ports: Ports, _: Path) -> dict[str, str]:
    return {
        "GATEWAY_HTTP_PORT": str(ports["gateway"]),
        "GATEWAY_CATALOG_URL": f"http://127.0.0.1:{ports['catalog']}",
        "GATEWAY_INVENTORY_TARGET": f"127.0.0.1:{ports['inventory-grpc']}",
    }


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("catalog", "souq_catalog", "catalog", _service_env("CATALOG", "catalog")),
    ServiceSpec("inventory", "souq_inventory", "inventory", _service_env("INVENTORY", "inventory")),
    ServiceSpec("gateway", "souq_gateway", "gateway", _gateway_env),
)
