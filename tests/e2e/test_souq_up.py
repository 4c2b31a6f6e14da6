"""The whole system as a user runs it: `souq up`, through the gateway, with a crash midway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import psutil
import pytest
from souq_chassis.testing import free_port
from souq_cli.services import DEFAULT_PORTS
from souq_cli.state import RunState, alive

SOUQ = str(Path(sys.executable).with_name("souq"))
pytestmark = pytest.mark.e2e


def get(url: str, timeout: float = 5.0, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers or {}), timeout=timeout
        ) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read())


def wait_for(what: str, check: Any, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


class System:
    def __init__(
        self, data_dir: Path, ports: dict[str, int], proc: subprocess.Popen[bytes], log: Path
    ):
        self.data_dir, self.ports, self.proc, self.log = data_dir, ports, proc, log
        self.gateway = f"http://127.0.0.1:{ports['gateway']}"

    def state(self) -> RunState:
        state = RunState.load(self.data_dir)
        assert state is not None
        return state

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    ports = {name: free_port() for name in DEFAULT_PORTS}
    data_dir = tmp_path / "data"
    log = tmp_path / "souq-up.log"
    args = [SOUQ, "up", "--data-dir", str(data_dir), *(f"--port={n}={p}" for n, p in ports.items())]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    system = System(data_dir, ports, proc, log)
    try:
        wait_for(
            "souq up to be ready",
            lambda: "Souq is up" in system.output() or proc.poll() is not None,
            60,
        )
        assert proc.poll() is None, system.output()[-3000:]
        yield system
    finally:
        pids = [p.pid for p in (RunState.load(data_dir) or RunState(0, {})).services.values()]
        subprocess.run([SOUQ, "down", "--data-dir", str(data_dir)], timeout=60, check=False)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        for pid in pids:
            if alive(pid):
                psutil.Process(pid).kill()
        assert not any(alive(pid) for pid in pids), "services outlived souq down"


def test_the_system_serves_products_survives_an_inventory_crash_and_recovers(
    system: System,
) -> None:
    status, listing = get(f"{system.gateway}/api/v1/products?page_size=50")
    assert status == 200
    assert listing["total"] >= 60
    categories = {p["category"] for p in listing["items"]}
    assert len(categories) >= 4
    assert all(p["availability"] != "unknown" for p in listing["items"])
    in_stock = next(p for p in listing["items"] if p["availability"] == "in_stock")
    product_url = f"{system.gateway}/api/v1/products/{in_stock['id']}"

    # One trace crosses all three processes: the caller's W3C trace id is in each one's logs.
    trace_id = os.urandom(16).hex()
    traceparent = f"00-{trace_id}-{os.urandom(8).hex()}-01"
    status, _ = get(
        f"{system.gateway}/api/v1/products?q=copper", headers={"traceparent": traceparent}
    )
    assert status == 200

    def services_that_logged_the_trace() -> bool:
        lines = (system.data_dir / "logs" / "souq.log").read_text().splitlines()
        names = {line.split(" |")[0].strip() for line in lines if trace_id in line}
        return names >= {"gateway", "catalog", "inventory"}

    wait_for("the trace id in every service's logs", services_that_logged_the_trace, 10)

    # Each service's database file is open in that service's process alone.
    state = system.state()
    for db in system.data_dir.glob("*.db"):
        holders = {
            name
            for name, svc in state.services.items()
            if any(Path(f.path) == db for f in psutil.Process(svc.pid).open_files())
        }
        assert holders == {db.stem}, (db.name, holders)

    # An event crosses the broker: a product created in catalog gets a stock record in
    # inventory, with nothing shared between them but the event's contract.
    catalog = f"http://127.0.0.1:{system.ports['catalog']}"
    new = {
        "sku": "E2E-0001",
        "name": "Hand-carved Cedar Box",
        "category": "home-decor",
        "price": {"amount_cents": 3900, "currency": "USD"},
    }
    request = urllib.request.Request(
        f"{catalog}/v1/admin/products",
        data=orjson.dumps(new),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as r:
        created = orjson.loads(r.read())
    inventory = f"http://127.0.0.1:{system.ports['inventory']}"

    def tracked() -> Any:
        code, body = get(f"{inventory}/v1/stock/E2E-0001")
        return body if code == 200 else None

    assert wait_for("inventory to track the new SKU", tracked, 15)["on_hand"] == 0
    status, page = get(f"{system.gateway}/api/v1/products/{created['id']}")
    assert (status, page["availability"]) == (200, "out_of_stock")

    def souq(*args: str) -> subprocess.CompletedProcess[str]:
        command = [SOUQ, *args, "--data-dir", str(system.data_dir)]
        wide = {**os.environ, "COLUMNS": "250"}  # tables unabridged, whatever the terminal
        return subprocess.run(command, capture_output=True, text=True, timeout=60, env=wide)

    events = souq("events")
    assert events.returncode == 0, events.stdout + events.stderr
    assert "SOUQ_EVENTS" in events.stdout and "catalog outbox: 0 unpublished" in events.stdout
    assert "catalog.ProductCreated.v1" in events.stdout  # just published: in the outbox history
    dead = souq("dlq", "list")
    assert (dead.returncode, dead.stdout.strip()) == (0, "No dead letters.")
    assert souq("dlq", "replay", "no-such-id").returncode == 1

    inventory_pid = state.services["inventory"].pid
    assert inventory_pid
    psutil.Process(inventory_pid).send_signal(signal.SIGKILL)

    started = time.perf_counter()
    status, product = get(product_url)
    elapsed = time.perf_counter() - started
    assert status == 200
    assert product["availability"] == "unknown" and product["available_quantity"] is None
    assert product["price"] == in_stock["price"]
    assert elapsed < 1.0, f"degraded answer took {elapsed:.2f}s"

    def restarted() -> bool:
        svc = system.state().services["inventory"]
        return svc.restarts >= 1 and svc.state == "ready" and svc.pid != inventory_pid

    wait_for("the runner to restart inventory", restarted, 30)

    def recovered() -> dict[str, Any] | None:
        code, body = get(product_url)
        return body if code == 200 and body["availability"] != "unknown" else None

    back = wait_for("availability to come back", recovered, 30)
    assert back["available_quantity"] == in_stock["available_quantity"]

    status_out = subprocess.run(
        [SOUQ, "status", "--data-dir", str(system.data_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert status_out.returncode == 0, status_out.stdout + status_out.stderr
    for name in ("catalog", "inventory", "gateway"):
        assert name in status_out.stdout
    assert "inventory" in system.output() and "restarting" in system.output()
