"""Which schema changes break a consumer of a published message version."""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def _resolve(schema: Schema, root: Schema) -> Schema:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = root.get("$defs", {})[name]
    return schema


def _kind(schema: Schema) -> Any:
    if "anyOf" in schema:
        return sorted(str(_kind(s)) for s in schema["anyOf"])
    return schema.get("type", "object" if "properties" in schema else None)


def breaking_changes(old: Schema, new: Schema) -> list[str]:
    """What in `new` breaks a consumer built on `old`: removed fields, changed types, and
    fields that became required (messages published under `old` may lack them)."""
    problems: list[str] = []

    def compare(a: Schema, b: Schema, path: str) -> None:
        a, b = _resolve(a, old), _resolve(b, new)
        if _kind(a) != _kind(b):
            problems.append(f"{path or 'message'}: type changed from {_kind(a)} to {_kind(b)}")
            return
        a_props, b_props = a.get("properties", {}), b.get("properties", {})
        prefix = f"{path}." if path else ""
        for name in a_props:
            if name not in b_props:
                problems.append(f"{prefix}{name}: removed")
            else:
                compare(a_props[name], b_props[name], f"{prefix}{name}")
        for name in sorted(set(b.get("required", ())) - set(a.get("required", ()))):
            problems.append(f"{prefix}{name}: now required")

    compare(old, new, "")
    return problems
