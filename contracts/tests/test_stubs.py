"""The committed gRPC stubs are exactly what the .proto files generate."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

CONTRACTS = Path(__file__).resolve().parents[1]


def _tree(root: Path) -> dict[str, bytes]:
    """The generated files under root: stubs, and the package markers of their folders."""
    stubs = [p for p in root.rglob("*_pb2*.py*") if "__pycache__" not in p.parts]
    markers = {folder / "__init__.py" for p in stubs for folder in p.relative_to(root).parents}
    files = {p.relative_to(root) for p in stubs} | {m for m in markers if m != Path("__init__.py")}
    return {str(p): (root / p).read_bytes() for p in sorted(files)}


def test_committed_stubs_match_the_proto_files(tmp_path: Path, generator: ModuleType) -> None:
    generator.generate(tmp_path)
    fresh, committed = _tree(tmp_path), _tree(CONTRACTS / "src")
    assert fresh.keys() == committed.keys(), "run: .venv/bin/python contracts/generate.py"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale stubs {stale}; run: .venv/bin/python contracts/generate.py"


def test_every_service_contract_lives_in_a_versioned_package() -> None:
    for proto in (CONTRACTS / "proto").rglob("*.proto"):
        parts = proto.relative_to(CONTRACTS / "proto").parts
        package = ".".join(parts[:-1])
        assert f"package {package};" in proto.read_text(), proto
        assert parts[0] == "souq" and parts[-2].startswith("v"), proto
