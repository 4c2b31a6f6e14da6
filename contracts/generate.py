"""Regenerate what contracts/ derives: gRPC stubs (src/) from proto/, and the JSON Schema of
every event and command model (events/).

Run after changing a .proto or a message model: `.venv/bin/python contracts/generate.py`.
Both are committed; contracts/tests fail when they are stale, and when a message schema
changes in a way that breaks consumers of its published version.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

CONTRACTS = Path(__file__).resolve().parent
PROTO_ROOT = CONTRACTS / "proto"
DEFAULT_OUT = CONTRACTS / "src"
EVENTS = CONTRACTS / "events"


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


def message_schemas() -> dict[str, str]:
    """The JSON Schema of every message model, by file name (`<type>.v<version>.json`)."""
    from souq.events import message_types

    return {
        f"{name}.json": json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"
        for name, model in sorted(message_types().items())
    }


def record_message_schemas() -> None:
    EVENTS.mkdir(exist_ok=True)
    for name, text in message_schemas().items():
        (EVENTS / name).write_text(text)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT)
    record_message_schemas()
