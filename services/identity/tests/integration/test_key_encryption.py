"""Identity's signing keys sealed at rest under a key-encryption key from outside the data
directory: the database alone no longer signs anyone's token."""

from __future__ import annotations

import base64
import os
import sqlite3
import uuid
from contextlib import closing
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from souq_chassis.testing import ServiceProcess, call

ADMIN_PASSWORD = "a long admin passphrase"


def new_kek() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def identity_on(data_dir: Path, broker_url: str, **settings: object) -> ServiceProcess:
    return ServiceProcess.on_free_ports(
        "souq_identity",
        "IDENTITY",
        data_dir,
        environment="test",
        admin_password=ADMIN_PASSWORD,
        env={"SOUQ_BROKER_URL": broker_url},
        **settings,
    )


def stored_keys(data_dir: Path) -> dict[str, bytes]:
    # Closed at once: an open connection would keep identity from checkpointing at exit.
    with closing(sqlite3.connect(data_dir / "identity.db")) as db:
        rows = db.execute("SELECT kid, private_key_pem FROM signing_keys").fetchall()
    return {kid: bytes(blob) for kid, blob in rows}


def database_bytes(data_dir: Path) -> bytes:
    """The database as a copy of the data directory would carry it (journals included)."""
    return b"".join(p.read_bytes() for p in sorted(data_dir.glob("identity.db*")))


def refusal(service: ServiceProcess) -> str:
    """The output of a start that must fail."""
    try:
        with pytest.raises(RuntimeError) as failed:
            service.start(timeout_s=30)
        return str(failed.value)
    finally:
        service.__exit__(None, None, None)


async def test_signing_keys_are_sealed_at_rest_and_old_tokens_still_verify(
    tmp_path: Path, broker_url: str
) -> None:
    email, password = f"k-{uuid.uuid4().hex[:8]}@example.com", "a passphrase of hers"
    body = {"email": email, "password": password}

    # A local run without a key-encryption key keeps the key as PEM (in a 0600 file).
    with identity_on(tmp_path, broker_url).serving() as first:
        async with aiohttp.ClientSession(first.url) as http:
            assert (await call(http, "POST", "/v1/register", body=body)).status == 202
            old_token = (await call(http, "POST", "/v1/login", body=body)).json()["access_token"]
    [(kid, pem)] = stored_keys(tmp_path).items()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    key = load_pem_private_key(pem, password=None)
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())  # type: ignore[arg-type]
    der = key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())

    # With a key-encryption key, the next start seals it; a rotation stores the new one sealed.
    kek = new_kek()
    with identity_on(tmp_path, broker_url, key_encryption_key=kek).serving() as second:
        async with aiohttp.ClientSession(second.url) as http:
            me = await call(http, "GET", "/v1/me", headers={"Authorization": f"Bearer {old_token}"})
            assert me.status == 200, me.text
            admin = {"email": "admin@souq.local", "password": ADMIN_PASSWORD}
            admin_token = (await call(http, "POST", "/v1/login", body=admin)).json()
            bearer = {"Authorization": f"Bearer {admin_token['access_token']}"}
            rotated = await call(http, "POST", "/v1/admin/keys/rotate", headers=bearer)
            assert rotated.status == 201, rotated.text
            new_token = (await call(http, "POST", "/v1/login", body=body)).json()["access_token"]
    stored = stored_keys(tmp_path)
    assert len(stored) == 2 and kid in stored
    assert not [k for k, blob in stored.items() if b"PRIVATE KEY" in blob or raw in blob]
    copied = database_bytes(tmp_path)
    for secret in (pem, raw, der, base64.b64encode(der)):
        assert secret not in copied

    # Restarted with the same key: tokens of both keys still verify.
    with identity_on(tmp_path, broker_url, key_encryption_key=kek).serving() as third:
        async with aiohttp.ClientSession(third.url) as http:
            for token in (old_token, new_token):
                me = await call(http, "GET", "/v1/me", headers={"Authorization": f"Bearer {token}"})
                assert me.status == 200, me.text

    # With another key, or none, identity refuses to start, and says why.
    wrong = refusal(identity_on(tmp_path, broker_url, key_encryption_key=new_kek()))
    assert "does not open with this key-encryption key" in wrong
    none = refusal(identity_on(tmp_path, broker_url))
    assert "no key-encryption key is set" in none


async def test_the_key_encryption_key_may_come_from_a_file_outside_the_data_directory(
    tmp_path: Path, broker_url: str
) -> None:
    data_dir, kek_file = tmp_path / "data", tmp_path / "secrets" / "identity.kek"
    kek_file.parent.mkdir()
    kek_file.write_text(new_kek() + "\n")
    with identity_on(data_dir, broker_url, key_encryption_key_file=kek_file).serving():
        pass
    [blob] = stored_keys(data_dir).values()
    assert not blob.startswith(b"-----BEGIN")

    inside = data_dir / "identity.kek"
    inside.write_text(new_kek())
    output = refusal(identity_on(data_dir, broker_url, key_encryption_key_file=inside))
    assert "outside the data directory" in output
