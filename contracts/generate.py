"""Regenerate the Python gRPC stubs in contracts/src from contracts/proto.

Run after changing a .proto: `.venv/bin/python contracts/generate.py`.
The stubs are committed; contracts/tests/test_stubs.py fails when they are stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

CONTRACTS = Path(__file__).resolve().parent
PROTO_ROOT = CONTRACTS / "proto"
DEFAULT_OUT = CONTRACTS / "src"


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(out: Path) -> None:
    """Write *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for every .proto under proto/ into out."""
    out.mkdir(parents=True, exist_ok=True)
    include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *(str(p) for p in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for proto in proto_files():
        folder = proto.parent.relative_to(PROTO_ROOT)
        for part in [folder, *folder.parents[:-1]]:
            (out / part / "__init__.py").touch()


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
