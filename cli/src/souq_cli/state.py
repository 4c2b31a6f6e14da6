"""The run state file `souq up` keeps in its data directory, read by `status` and `down`.

A pid alone names no process for long: after a crash, a power cut or a reboot, the pids a dead
run recorded belong to whoever got them next. So each process is recorded with its start time
and command line, and is taken for Souq's only while both still match (`ours`); anything else
is a stranger that `status` does not call running and `down` never signals.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import psutil
from souq_chassis.private_files import write_private

STATE_FILE = "souq-state.json"
_SAME_START_S = 0.05  # start times are in clock ticks (10 ms); this much apart is another process


@dataclass
class ServiceState:
    pid: int | None = None
    url: str = ""
    state: str = "starting"
    restarts: int = 0
    exit_code: int | None = None
    create_time: float | None = None  # the process's start time (psutil, seconds since epoch)
    cmdline: list[str] = field(default_factory=list)

    def process(self) -> psutil.Process | None:
        """The service's process, if it is still the one the supervisor started."""
        return ours(self.pid, self.create_time, self.cmdline)


@dataclass
class RunState:
    supervisor_pid: int
    ports: dict[str, int]
    services: dict[str, ServiceState] = field(default_factory=dict)
    broker_url: str = ""
    supervisor_create_time: float | None = None
    supervisor_cmdline: list[str] = field(default_factory=list)

    def save(self, data_dir: Path) -> None:
        write_private(data_dir / STATE_FILE, json.dumps(asdict(self), indent=2).encode())

    @classmethod
    def load(cls, data_dir: Path) -> RunState | None:
        try:
            raw: dict[str, Any] = json.loads((data_dir / STATE_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return None
        known = {f.name for f in fields(ServiceState)}
        services = {
            name: ServiceState(**{k: v for k, v in s.items() if k in known})
            for name, s in raw.get("services", {}).items()
        }
        return cls(
            raw["supervisor_pid"],
            raw["ports"],
            services,
            raw.get("broker_url", ""),
            raw.get("supervisor_create_time"),
            raw.get("supervisor_cmdline", []),
        )

    @staticmethod
    def remove(data_dir: Path) -> None:
        (data_dir / STATE_FILE).unlink(missing_ok=True)

    def supervisor(self) -> psutil.Process | None:
        """The `souq up` process that wrote this file, if it is still running."""
        return ours(self.supervisor_pid, self.supervisor_create_time, self.supervisor_cmdline)

    def supervisor_alive(self) -> bool:
        return self.supervisor() is not None


def identify(pid: int) -> tuple[float | None, list[str]]:
    """What tells this process apart from a later one with its pid: start time, command line."""
    try:
        process = psutil.Process(pid)
        return process.create_time(), process.cmdline()
    except psutil.Error:  # already gone (or a zombie): nothing will ever match it
        return None, []


def ours(pid: int | None, create_time: float | None, cmdline: list[str]) -> psutil.Process | None:
    """The running process with this pid if it is the one recorded, else None.

    psutil's Process remembers the start time too: signalling it later through this object
    fails with NoSuchProcess, rather than reaching a newcomer, if the pid was reused since."""
    if not pid or create_time is None or not cmdline:
        return None
    try:
        process = psutil.Process(pid)
        if (
            abs(process.create_time() - create_time) > _SAME_START_S
            or process.cmdline() != cmdline
            or process.status() == psutil.STATUS_ZOMBIE
        ):
            return None
    except psutil.Error:
        return None
    return process


def alive(pid: int | None) -> bool:
    """Some process has this pid (any process: see `ours` for Souq's own)."""
    if not pid:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
