"""Lint and types as part of the suite: ruff everywhere, mypy strict on the chassis and domains."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing_to_fix() -> None:
    result = run(str(BIN / "ruff"), "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr
    formatted = run(str(BIN / "ruff"), "format", "--check", ".")
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr


def test_the_chassis_and_every_domain_type_check_strictly() -> None:
    domains = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("services/*/src/*/domain.py"))
    assert len(domains) >= 3
    result = run(sys.executable, "-m", "mypy", "chassis/src/souq_chassis", *domains)
    assert result.returncode == 0, result.stdout + result.stderr
