"""The run state file `souq up` keeps in its data directory, read by `status` and `down`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from souq_chassis.private_files import write_private

STATE_FILE = "souq-state.json"


@dataclass
class ServiceState:
    pid: int | None = None
    url: str = ""
    state: str = "starting"
    restarts: int = 0
    exit_code: int | None = None


@dataclass
class RunState:
    supervisor_pid: int
    ports: dict[str, int]
    services: dict[str, ServiceState] = field(default_factory=dict)
    broker_url: str = ""

    def save(self, data_dir: Path) -> None:
        write_private(data_dir / STATE_FILE, json.dumps(asdict(self), indent=2).encode())

    @classmethod
    def load(cls, data_dir: Path) -> RunState | None:
        try:
            raw: dict[str, Any] = json.loads((data_dir / STATE_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return None
        services = {name: ServiceState(**s) for name, s in raw.get("services", {}).items()}
        return cls(raw["supervisor_pid"], raw["ports"], services, raw.get("broker_url", ""))

    def supervisor_alive(self) -> bool:
        return alive(self.supervisor_pid)


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
