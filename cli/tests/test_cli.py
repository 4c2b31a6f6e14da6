from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest
import typer
from souq_cli.main import _parse_ports, app
from souq_cli.services import APPLICATION, DEFAULT_PORTS, services
from souq_cli.state import STATE_FILE, RunState, ServiceState
from souq_cli.supervisor import FAILED_START_S, failed_start
from typer.testing import CliRunner

runner = CliRunner()


def test_port_overrides_replace_defaults_and_bad_ones_are_refused() -> None:
    ports = _parse_ports(["gateway=18080", "inventory-grpc=15000"])
    assert ports["gateway"] == 18080 and ports["inventory-grpc"] == 15000
    assert ports["catalog"] == DEFAULT_PORTS["catalog"]
    for bad in ("gateway", "gateway=abc", "nope=1234", "gateway=70000", "gateway=0"):
        with pytest.raises(typer.BadParameter):
            _parse_ports([bad])


def test_every_service_gets_its_own_ports_and_the_gateway_finds_its_upstreams(
    tmp_path: Path,
) -> None:
    ports = _parse_ports([])
    assert len(set(ports.values())) == len(ports)
    envs = {s.name: s.environment(ports, tmp_path) for s in APPLICATION}
    assert envs["catalog"]["CATALOG_HTTP_PORT"] == str(ports["catalog"])
    assert envs["inventory"]["INVENTORY_GRPC_PORT"] == str(ports["inventory-grpc"])
    assert envs["gateway"]["GATEWAY_CATALOG_URL"].endswith(f":{ports['catalog']}")
    assert envs["gateway"]["GATEWAY_INVENTORY_TARGET"].endswith(f":{ports['inventory-grpc']}")
    # The embedded NATS, each service signed in as itself.
    catalog, inventory = (urlsplit(envs[n]["SOUQ_BROKER_URL"]) for n in ("catalog", "inventory"))
    assert (catalog.scheme, catalog.hostname, catalog.port) == ("nats", "127.0.0.1", ports["nats"])
    assert (catalog.username, inventory.username) == ("catalog", "inventory")
    assert catalog.password and inventory.password and catalog.password != inventory.password


def test_every_service_gets_an_internal_port_of_its_own_for_metrics(tmp_path: Path) -> None:
    ports = _parse_ports([])
    for spec in APPLICATION:
        env = spec.environment(ports, tmp_path)
        internal = ports[f"{spec.name}-internal"]
        assert env[f"{spec.name.upper()}_INTERNAL_PORT"] == str(internal)
        assert spec.internal_url(ports) == f"http://127.0.0.1:{internal}"


def test_one_variable_moves_every_service_to_another_broker_and_drops_the_embedded_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert "nats" in [s.name for s in services()]
    monkeypatch.setenv("SOUQ_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
    assert "nats" not in [s.name for s in services()]
    ports = _parse_ports([])
    for spec in APPLICATION:
        env = spec.environment(ports, tmp_path)
        assert env.get("SOUQ_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/").startswith("amqp")


def test_status_says_when_nothing_runs(tmp_path: Path) -> None:
    result = runner.invoke(app, ["status", "--data-dir", str(tmp_path)])
    assert result.exit_code == 3
    assert "not running" in result.output


def test_status_ignores_a_state_file_left_by_a_dead_run(tmp_path: Path) -> None:
    RunState(2**22 + 12345, dict(DEFAULT_PORTS), {"catalog": ServiceState(pid=1)}).save(tmp_path)
    result = runner.invoke(app, ["status", "--data-dir", str(tmp_path)])
    assert result.exit_code == 3


def test_up_refuses_a_port_that_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(
            app, ["up", "--data-dir", str(tmp_path), "--port", f"gateway={port}"]
        )
    assert result.exit_code == 1
    assert f"gateway {port}" in result.output


@pytest.fixture
def strangers() -> Iterator[list[psutil.Process]]:
    """Two processes of the test's own (not Souq's), killed at the end."""
    started = [subprocess.Popen(["sleep", "60"]) for _ in range(2)]
    try:
        yield [psutil.Process(p.pid) for p in started]
    finally:
        for p in started:
            p.kill()
            p.wait()


def _stale_state(data_dir: Path, supervisor: dict[str, Any], catalog: dict[str, Any]) -> None:
    """A state file as a `souq up` that died (power cut, reboot) would have left it."""
    state = {
        "ports": dict(DEFAULT_PORTS),
        "broker_url": "nats://127.0.0.1:14222",
        **supervisor,
        "services": {
            "catalog": {
                "url": "http://127.0.0.1:8081",
                "state": "ready",
                "restarts": 0,
                "exit_code": None,
                **catalog,
            }
        },
    }
    (data_dir / STATE_FILE).write_text(json.dumps(state))


@pytest.mark.parametrize("recorded", ["pid only (an older souq)", "another start and command"])
def test_a_stale_state_file_makes_neither_down_nor_status_touch_a_stranger(
    tmp_path: Path, strangers: list[psutil.Process], recorded: str
) -> None:
    # The pids the dead run recorded now belong to other processes (here: the test's own).
    supervisor, service = strangers
    if recorded.startswith("pid only"):
        _stale_state(tmp_path, {"supervisor_pid": supervisor.pid}, {"pid": service.pid})
    else:
        earlier = supervisor.create_time() - 3600
        _stale_state(
            tmp_path,
            {
                "supervisor_pid": supervisor.pid,
                "supervisor_create_time": earlier,
                "supervisor_cmdline": [sys.executable, "/usr/bin/souq", "up"],
            },
            {
                "pid": service.pid,
                "create_time": earlier,
                "cmdline": [sys.executable, "-m", "souq_catalog"],
            },
        )

    status = runner.invoke(app, ["status", "--data-dir", str(tmp_path)])
    assert status.exit_code == 3, status.output
    assert "not running" in status.output and "ready" not in status.output

    down = runner.invoke(app, ["down", "--data-dir", str(tmp_path)])
    assert down.exit_code == 0, down.output
    time.sleep(0.2)  # a signal, had one been sent, has landed by now
    assert supervisor.status() != psutil.STATUS_ZOMBIE and service.status() != psutil.STATUS_ZOMBIE
    assert f"pid {supervisor.pid}" in down.output and f"pid {service.pid}" in down.output
    assert RunState.load(tmp_path) is None  # the stale state is gone


def test_status_and_down_check_each_service_of_a_running_supervisor(
    tmp_path: Path, strangers: list[psutil.Process]
) -> None:
    # The supervisor is what the state file says it is; catalog's pid is someone else's now.
    supervisor, service = strangers
    _stale_state(
        tmp_path,
        {
            "supervisor_pid": supervisor.pid,
            "supervisor_create_time": supervisor.create_time(),
            "supervisor_cmdline": supervisor.cmdline(),
        },
        {
            "pid": service.pid,
            "create_time": service.create_time() - 3600,
            "cmdline": [sys.executable, "-m", "souq_catalog"],
        },
    )
    status = runner.invoke(app, ["status", "--data-dir", str(tmp_path)], env={"COLUMNS": "200"})
    assert status.exit_code == 0, status.output
    catalog = next(line for line in status.output.splitlines() if "catalog" in line)
    assert "stale" in catalog and "ready" not in catalog

    down = runner.invoke(app, ["down", "--data-dir", str(tmp_path), "--timeout", "10"])
    assert down.exit_code == 0, down.output
    assert "catalog" in down.output and f"pid {service.pid}" in down.output
    assert not supervisor.is_running() or supervisor.status() == psutil.STATUS_ZOMBIE
    assert service.is_running() and service.status() != psutil.STATUS_ZOMBIE


def test_up_is_not_refused_by_a_stale_state_file(
    tmp_path: Path, strangers: list[psutil.Process]
) -> None:
    supervisor, _ = strangers
    _stale_state(tmp_path, {"supervisor_pid": supervisor.pid}, {})
    with socket.socket() as taken:  # so that `up` stops at its port check, before starting
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(
            app, ["up", "--data-dir", str(tmp_path), "--port", f"gateway={port}"]
        )
    assert "already running" not in result.output
    assert f"gateway {port}" in result.output


def test_a_service_killed_from_outside_soon_after_it_is_ready_has_not_failed_to_start() -> None:
    ready_at, soon = 100.0, 100.0 + FAILED_START_S / 2
    # An operator or a chaos tool kills it (or the OOM killer does): restart it, count nothing.
    for signal_number in (signal.SIGKILL, signal.SIGTERM):
        assert failed_start(-signal_number, ready_at, soon) is None
        assert failed_start(-signal_number, None, soon) is None
    # It exits of its own accord before or soon after it was ready: a failed start.
    assert failed_start(1, None, soon) is True
    assert failed_start(1, ready_at, soon) is True
    assert failed_start(-signal.SIGSEGV, ready_at, soon) is True  # a crash, not a kill
    # It ran well for a while before exiting: the count starts over.
    assert failed_start(1, ready_at, ready_at + FAILED_START_S + 1) is False
