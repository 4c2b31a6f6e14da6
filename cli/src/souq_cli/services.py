"""What `souq up` runs: the embedded NATS and each service as its own process, configured by
environment only. The CLI never imports a service; it knows their names, modules, ports and
settings variables.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from souq_chassis.messaging.embedded import nats_ready, nats_server_command
from souq_chassis.private_files import write_private

from souq_cli import broker_users

# Named ports and their defaults. HTTP ports also serve /healthz and /readyz (a status only);
# each service's internal port (127.0.0.1) serves /metrics and /readyz with its checks.
DEFAULT_PORTS: dict[str, int] = {
    "gateway": 8080,
    "catalog": 8081,
    "inventory": 8082,
    "identity": 8083,
    "cart": 8084,
    **{"gateway-internal": 8090, "catalog-internal": 8091, "inventory-internal": 8092},
    **{"identity-internal": 8093, "cart-internal": 8094},
    "catalog-grpc": 50061,
    "inventory-grpc": 50062,
    "nats": 14222,  # not 4222: a machine may run its own NATS there (no monitoring port)
}
FORWARDING_SECRET_FILE = "forwarding-secret"
INFRASTRUCTURE, SERVICE, EDGE = 0, 1, 2  # started together; stopped edge first, then inward

Ports = Mapping[str, int]


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    http_port: str  # key into the ports map
    environment: Callable[[Ports, Path], dict[str, str]]
    module: str = ""  # run as `python -m module`, unless `command` is given
    command: Callable[[Ports, Path], list[str]] | None = None
    ready_path: str = "/readyz"
    tier: int = SERVICE
    # Readiness other than HTTP GET ready_path answering 200 (NATS has no HTTP port).
    probe: Callable[[Ports, Path], Awaitable[bool]] | None = None

    def http_url(self, ports: Ports) -> str:
        return f"http://127.0.0.1:{ports[self.http_port]}"

    def internal_url(self, ports: Ports) -> str:
        """Its internal listener (metrics, readiness details), if it has one."""
        port = ports.get(f"{self.http_port}-internal")
        return f"http://127.0.0.1:{port}" if port else ""

    def argv(self, ports: Ports, data_dir: Path) -> list[str]:
        if self.command is not None:
            return self.command(ports, data_dir)
        return [sys.executable, "-m", self.module]


def external_broker() -> str:
    """The broker the user chose with SOUQ_BROKER_URL, if any (then no embedded NATS runs)."""
    return os.environ.get("SOUQ_BROKER_URL", "")


def broker_url(ports: Ports) -> str:
    return external_broker() or f"nats://127.0.0.1:{ports['nats']}"


def jwks_url(ports: Ports) -> str:
    return f"http://127.0.0.1:{ports['identity']}/v1/jwks"


def _service_env(
    prefix: str, name: str, **urls: Callable[[Ports], str]
) -> Callable[[Ports, Path], dict[str, str]]:
    """A service's variables: its ports, data dir, broker, identity's keys, and `urls` of the
    services it calls (CATALOG_TARGET=...)."""

    def env(ports: Ports, data_dir: Path) -> dict[str, str]:
        grpc = (
            {f"{prefix}_GRPC_PORT": str(ports[f"{name}-grpc"])} if f"{name}-grpc" in ports else {}
        )
        return {
            f"{prefix}_HTTP_PORT": str(ports[name]),
            f"{prefix}_INTERNAL_PORT": str(ports[f"{name}-internal"]),
            **grpc,
            f"{prefix}_DATA_DIR": str(data_dir),
            "SOUQ_BROKER_URL": _service_broker_url(name, ports, data_dir),
            "SOUQ_JWKS_URL": jwks_url(ports),
            **{f"{prefix}_{key.upper()}": url(ports) for key, url in urls.items()},
            **(
                {"SOUQ_FORWARDING_SECRET": forwarding_secret(data_dir)}
                if name == "identity"
                else {}
            ),
        }

    return env


def forwarding_secret(data_dir: Path) -> str:
    """The secret with which the gateway vouches to identity for its client's address
    (`souq_chassis.forwarding`): made once per data directory, kept in a 0600 file."""
    path = data_dir / FORWARDING_SECRET_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        secret = secrets.token_urlsafe(32)
        write_private(path, secret.encode())
        return secret


def _gateway_env(ports: Ports, data_dir: Path) -> dict[str, str]:
    return {
        "GATEWAY_HTTP_PORT": str(ports["gateway"]),
        "GATEWAY_INTERNAL_PORT": str(ports["gateway-internal"]),
        "GATEWAY_CATALOG_URL": f"http://127.0.0.1:{ports['catalog']}",
        "GATEWAY_INVENTORY_TARGET": f"127.0.0.1:{ports['inventory-grpc']}",
        "GATEWAY_INVENTORY_URL": f"http://127.0.0.1:{ports['inventory']}",
        "GATEWAY_IDENTITY_URL": f"http://127.0.0.1:{ports['identity']}",
        "GATEWAY_CART_URL": f"http://127.0.0.1:{ports['cart']}",
        "SOUQ_JWKS_URL": jwks_url(ports),
        "SOUQ_FORWARDING_SECRET": forwarding_secret(data_dir),
    }


def _service_broker_url(name: str, ports: Ports, data_dir: Path) -> str:
    """The user's broker as given, or the embedded NATS signed in as the service."""
    if external_broker():
        return external_broker()
    return broker_users.as_service(broker_url(ports), data_dir, name)


def _nats(ports: Ports, data_dir: Path) -> list[str]:
    users = [spec.name for spec in APPLICATION]
    return nats_server_command(broker_users.server_config(ports["nats"], data_dir, users))


async def _nats_ready(ports: Ports, data_dir: Path) -> bool:
    """Ready once it admits the administrator and the administrator has declared the topology
    (the services, started meanwhile, only check it and wait for it)."""
    admin = broker_users.as_admin(broker_url(ports), data_dir)
    return await nats_ready(admin) and await broker_users.declare_topology(admin)


EMBEDDED_NATS = ServiceSpec(
    "nats",
    "nats",
    lambda ports, data_dir: {},
    command=_nats,
    tier=INFRASTRUCTURE,
    probe=_nats_ready,
)

APPLICATION: tuple[ServiceSpec, ...] = (
    ServiceSpec("catalog", "catalog", _service_env("CATALOG", "catalog"), "souq_catalog"),
    ServiceSpec("inventory", "inventory", _service_env("INVENTORY", "inventory"), "souq_inventory"),
    ServiceSpec("identity", "identity", _service_env("IDENTITY", "identity"), "souq_identity"),
    ServiceSpec(
        "cart",
        "cart",
        _service_env("CART", "cart", catalog_target=lambda p: f"127.0.0.1:{p['catalog-grpc']}"),
        "souq_cart",
    ),
    ServiceSpec("gateway", "gateway", _gateway_env, "souq_gateway", tier=EDGE),
)


def services() -> tuple[ServiceSpec, ...]:
    """What to run: the embedded NATS unless SOUQ_BROKER_URL names another broker."""
    return APPLICATION if external_broker() else (EMBEDDED_NATS, *APPLICATION)
