"""Identity's database holds the signing keys, password hashes and refresh-token digests: it
is private to the user who runs it, whatever the umask (the tests run as root, so they check
the mode bits, not who can read)."""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest
from souq_chassis.testing import ServiceProcess, call


@contextmanager
def umask(mask: int) -> Iterator[None]:
    """The processes started in the block inherit this umask."""
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def open_to_others(root: Path) -> list[str]:
    """Every path under root (root too) that anyone but its owner may read, write or enter."""
    found = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & 0o077:
            found.append(f"{path.relative_to(root.parent)} {mode:04o}")
    return found


@pytest.mark.parametrize("mask", [0o022, 0o000], ids=["umask-022", "umask-000"])
async def test_identitys_database_is_private_whatever_the_umask(
    tmp_path: Path, broker_url: str, mask: int
) -> None:
    data_dir = tmp_path / "data"
    service = ServiceProcess.on_free_ports(
        "souq_identity",
        "IDENTITY",
        data_dir,
        environment="test",
        env={"SOUQ_BROKER_URL": broker_url},
    )
    with umask(mask), service.serving():
        async with aiohttp.ClientSession(service.url) as http:
            body = {"email": f"u-{uuid.uuid4().hex[:8]}@example.com", "password": "pw long enough"}
            assert (await call(http, "POST", "/v1/register", body=body)).status == 202
            assert (await call(http, "POST", "/v1/login", body=body)).status == 200
        names = {p.name for p in data_dir.iterdir()}
        assert {"identity.db", "identity.db-wal", "identity.db-shm"} <= names
        assert open_to_others(data_dir) == []


async def test_modes_an_earlier_run_left_open_are_tightened_at_start(
    tmp_path: Path, broker_url: str
) -> None:
    data_dir = tmp_path / "data"

    def identity() -> ServiceProcess:
        return ServiceProcess.on_free_ports(
            "souq_identity",
            "IDENTITY",
            data_dir,
            environment="test",
            env={"SOUQ_BROKER_URL": broker_url},
        )

    with umask(0o022):
        with identity().serving():
            pass
        # As an older Souq left them: the directory 0755, the database 0644.
        data_dir.chmod(0o755)
        for path in data_dir.iterdir():
            path.chmod(0o644)
        assert open_to_others(data_dir)
        with identity().serving():
            assert open_to_others(data_dir) == []
