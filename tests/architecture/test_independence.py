"""Structure that keeps the services apart, checked on every run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "src").is_dir())


def test_import_contracts_hold() -> None:
    """import-linter: services never import each other; layers point inward."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint), "--config", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_service_names_another_services_package_or_database() -> None:
    """Beyond imports: no string reference to another service's package or database file."""
    offenders = []
    for service in SERVICES:
        others = [s for s in SERVICES if s != service]
        pattern = re.compile("|".join(rf"souq_{o}\b|\b{o}\.db\b" for o in others))
        for source in (ROOT / "services" / service / "src").rglob("*.py"):
            for number, line in enumerate(source.read_text().splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{source.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_every_service_is_its_own_package_with_its_own_migrations_and_tests() -> None:
    for service in SERVICES:
        folder = ROOT / "services" / service
        assert (folder / "pyproject.toml").is_file()
        assert (folder / "tests").is_dir()
        package = folder / "src" / f"souq_{service}"
        assert (package / "main.py").is_file()
        owns_data = (package / "repository.py").exists()
        assert owns_data == (package / "migrations" / "env.py").exists(), service
