from __future__ import annotations

import socket
from pathlib import Path

import pytest
import typer
from souq_cli.main import _parse_ports, app
from souq_cli.services import APPLICATION, DEFAULT_PORTS, services
from souq_cli.state import RunState, ServiceState
from typer.testing import CliRunner

runner = CliRunner()


def test_port_overrides_replace_defaults_and_bad_ones_are_refused() -> None:
    ports = _parse_ports(["gateway=18080", "inventory-grpc=15000"])
    assert ports["gateway"] == 18080 and ports["inventory-grpc"] == 15000
    assert ports["catalog"] == DEFAULT_PORTS["catalog"]
    for bad in ("gateway", "gateway=abc", "nope=1234", "gateway=70000", "gateway=0"):
        with pytest.raises(typer.BadParameter):
            _parse_ports([bad])


def test_every_service_gets_its_own_ports_and_the_gateway_finds_its_upstreams() -> None:
    ports = _parse_ports([])
    assert len(set(ports.values())) == len(ports)
    envs = {s.name: s.environment(ports, Path("/data")) for s in APPLICATION}
    assert envs["catalog"]["CATALOG_HTTP_PORT"] == str(ports["catalog"])
    assert envs["inventory"]["INVENTORY_GRPC_PORT"] == str(ports["inventory-grpc"])
    assert envs["gateway"]["GATEWAY_CATALOG_URL"].endswith(f":{ports['catalog']}")
    assert envs["gateway"]["GATEWAY_INVENTORY_TARGET"].endswith(f":{ports['inventory-grpc']}")
    assert envs["catalog"]["SOUQ_BROKER_URL"] == f"nats://127.0.0.1:{ports['nats']}"
    assert envs["inventory"]["SOUQ_BROKER_URL"] == envs["catalog"]["SOUQ_BROKER_URL"]


def test_every_service_gets_an_internal_port_of_its_own_for_metrics() -> None:
    ports = _parse_ports([])
    for spec in APPLICATION:
        env = spec.environment(ports, Path("/data"))
        internal = ports[f"{spec.name}-internal"]
        assert env[f"{spec.name.upper()}_INTERNAL_PORT"] == str(internal)
        assert spec.internal_url(ports) == f"http://127.0.0.1:{internal}"


def test_one_variable_moves_every_service_to_another_broker_and_drops_the_embedded_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert "nats" in [s.name for s in services()]
    monkeypatch.setenv("SOUQ_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
    assert "nats" not in [s.name for s in services()]
    ports = _parse_ports([])
    for spec in APPLICATION:
        env = spec.environment(ports, Path("/data"))
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
