from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

CONTRACTS = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def generator() -> ModuleType:
    """contracts/generate.py, loaded as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("generate", CONTRACTS / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
