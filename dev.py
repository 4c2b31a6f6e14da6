#!/usr/bin/env python3
"""Souq's one entry point on a fresh machine (Python 3.11+ and git, nothing else).

    python3 dev.py up        # start the whole system (any `souq` command works: status, down...)
    python3 dev.py test      # run the whole test suite (extra arguments go to pytest)

It creates .venv with this Python, installs uv into it, syncs the locked workspace
(uv.lock), then hands over to `.venv/bin/souq` or pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
UV_VERSION = "0.13.9"


def ensure_environment() -> None:
    """Create .venv and install exactly what uv.lock says (fast when already in step)."""
    if sys.version_info < (3, 11):  # noqa: UP036 - run by whatever python3 a user has
        raise SystemExit("Souq needs Python 3.11 or newer.")
    python = BIN / "python"
    if not python.exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    uv = BIN / "uv"
    if not uv.exists():
        print(f"installing uv {UV_VERSION} into .venv ...", flush=True)
        subprocess.run(
            [
                python,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                f"uv=={UV_VERSION}",
            ],
            check=True,
        )
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(VENV), "UV_PYTHON": str(python)}
    env.pop("VIRTUAL_ENV", None)
    subprocess.run(
        [uv, "sync", "--frozen", "--compile-bytecode", "--quiet"], cwd=ROOT, env=env, check=True
    )


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help"}:
        print(__doc__)
        return 0
    ensure_environment()
    if argv[0] == "test":
        command = [str(BIN / "python"), "-m", "pytest", *argv[1:]]
    else:
        command = [str(BIN / "souq"), *argv]
    os.chdir(ROOT)
    if os.name == "nt":
        return subprocess.call(command)
    os.execv(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
