"""Who may use the embedded NATS: a user per service, allowed only the subjects it needs (it
publishes its own message types, consumes through its own consumer, reads the topology's
settings but may not change them), and an administrator who declares the topology and serves
`souq events` and `souq dlq`. Their passwords are made once per data directory and kept in it,
in a file only its owner may read; a client without them is refused."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from pathlib import Path

from souq.events.topology import SUBSCRIPTIONS
from souq_chassis.messaging.embedded import nats_passwords, with_user, write_nats_config
from souq_chassis.messaging.nats_broker import NatsBroker, service_permissions

CREDENTIALS_FILE = "nats-users.json"
CONFIG_FILE = "nats.conf"
ADMIN = "souq-admin"


def _passwords(data_dir: Path, services: Sequence[str]) -> dict[str, str]:
    return nats_passwords(data_dir / CREDENTIALS_FILE, [ADMIN, *services])


def server_config(port: int, data_dir: Path, services: Sequence[str]) -> Path:
    """Write nats-server's config for this data directory (its store in `nats/`)."""
    permissions = {
        name: service_permissions(
            name,
            publishes=[name],  # a service's message types are named `<service>.<Event>.v1`
            consumes=[name] if name in SUBSCRIPTIONS else [],
            checks=list(SUBSCRIPTIONS),  # every service checks the whole topology is declared
        )
        for name in services
    }
    return write_nats_config(
        data_dir / CONFIG_FILE,
        port,
        data_dir / "nats",
        _passwords(data_dir, services),
        permissions,
    )


def as_service(url: str, data_dir: Path, service: str) -> str:
    """The embedded NATS's URL with this service's user and password."""
    return with_user(url, service, _passwords(data_dir, [service])[service])


def as_admin(url: str, data_dir: Path) -> str:
    """The URL with the administrator's credentials, if this data directory has them (a run
    on another broker has none: its URL is the user's own)."""
    path = data_dir / CREDENTIALS_FILE
    if not path.exists() or "@" in url or not url.startswith("nats://"):
        return url
    return with_user(url, ADMIN, _passwords(data_dir, [])[ADMIN])


async def declare_topology(admin_url: str, timeout_s: float = 10.0) -> bool:
    """Declare the streams and every consumer of the topology as the administrator (the
    services' users may only check them); False if NATS did not let it within timeout_s."""
    broker = NatsBroker(admin_url, client_name="souq-up")
    try:
        async with asyncio.timeout(timeout_s):
            await broker.connect()
            await broker.declare(SUBSCRIPTIONS)
        return True
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            await broker.close()
