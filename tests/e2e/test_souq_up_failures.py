"""`souq up` when a service can never start: it gives up, says why, and leaves nothing behind."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from souq_chassis.testing import free_port
from souq_cli.services import DEFAULT_PORTS
from souq_cli.state import RunState

SOUQ = str(Path(sys.executable).with_name("souq"))
pytestmark = pytest.mark.e2e

# Five failed starts with their backoffs (0.5+1+2+4 s), each a Python start-up, then an
# orderly stop: about 20 s on an idle machine. Today's code never exits at all.
GIVES_UP_WITHIN_S = 150.0


def test_a_service_that_cannot_start_stops_souq_up_with_its_error(tmp_path: Path) -> None:
    ports = {name: free_port() for name in DEFAULT_PORTS}
    data_dir = tmp_path / "data"
    not_a_directory = tmp_path / "not-a-directory"
    not_a_directory.write_text("a file where catalog's database directory should be\n")
    env = {
        **{k: v for k, v in os.environ.items() if k != "SOUQ_BROKER_URL"},
        "CATALOG_DATABASE_URL": f"sqlite+aiosqlite:///{not_a_directory}/catalog.db",
        "SOUQ_ADMIN_PASSWORD": "a long passphrase",
    }
    args = [SOUQ, "up", "--data-dir", str(data_dir), *(f"--port={n}={p}" for n, p in ports.items())]
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            args, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, env=env
        )
    started = time.monotonic()
    children: set[psutil.Process] = set()  # every process it started, to check none is left
    try:
        while proc.poll() is None and time.monotonic() - started < GIVES_UP_WITHIN_S:
            with contextlib.suppress(psutil.Error):
                children.update(psutil.Process(proc.pid).children(recursive=True))
            time.sleep(0.2)
        took = time.monotonic() - started
        assert proc.poll() is not None, (
            f"souq up still running after {GIVES_UP_WITHIN_S:.0f}s:\n"
            + out.read_text(errors="replace")[-3000:]
        )
        left = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()

    print(f"souq up gave up after {took:.1f}s")
    assert proc.returncode == 1
    summary = err.read_text(errors="replace")
    assert "catalog could not start" in summary, summary
    assert str(not_a_directory) in summary, summary  # its own error, not just a name
    assert "Souq is up" not in out.read_text(errors="replace")
    assert len(children) >= 6, "nats and every service ran"
    assert not left, f"left running: {left}"
    state = RunState.load(data_dir)
    assert state is not None
    assert state.services["catalog"].state == "failed"
    assert state.services["catalog"].restarts == 4
    assert {s.state for n, s in state.services.items() if n != "catalog"} == {"stopped"}
    # The others were stopped, not killed: SIGTERM let each drain and exit on its own.
    assert -9 not in {s.exit_code for s in state.services.values()}
