"""What identity keeps across restarts: its signing key, and hashes it upgrades at sign-in."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path

import aiohttp
from souq_chassis.testing import ServiceProcess, assert_problem, call


def password_hash_of(data_dir: Path, email: str) -> str:
    with sqlite3.connect(data_dir / "identity.db") as db:
        [(password_hash,)] = db.execute("SELECT password_hash FROM users WHERE email = ?", (email,))
    return str(password_hash)


def identity_on(data_dir: Path, broker_url: str, **settings: object) -> ServiceProcess:
    return ServiceProcess.on_free_ports(
        "souq_identity",
        "IDENTITY",
        data_dir,
        environment="test",
        env={"SOUQ_BROKER_URL": broker_url},
        **settings,
    )


async def test_a_restart_keeps_the_key_and_sign_in_upgrades_older_hashes(
    tmp_path: Path, broker_url: str
) -> None:
    email, password = f"old-{uuid.uuid4().hex[:8]}@example.com", f"pw-{uuid.uuid4().hex}"
    # First run: OWASP's 12 MiB x 3 configuration, and no administrator configured.
    first = identity_on(tmp_path, broker_url, argon2_time_cost=3, argon2_memory_cost_kib=12_288)
    with first.serving():
        async with aiohttp.ClientSession(first.url) as http:
            body = {"email": email, "password": password}
            assert (await call(http, "POST", "/v1/register", body=body)).status == 202
            reply = await call(http, "POST", "/v1/login", body=body)
            access_token = reply.json()["access_token"]
            kids = {k["kid"] for k in (await call(http, "GET", "/v1/jwks")).json()["keys"]}
        log = [json.loads(line) for line in first.log_path.read_text().splitlines()]
    [warning] = [entry for entry in log if entry.get("event") == "admin_not_seeded"]
    assert warning["level"] == "warning"
    assert password_hash_of(tmp_path, email).startswith("$argon2id$v=19$m=12288,t=3,p=1$")

    # Second run on the same database with today's parameters (19 MiB x 2).
    second = identity_on(tmp_path, broker_url)
    with second.serving():
        async with aiohttp.ClientSession(second.url) as http:
            jwks = (await call(http, "GET", "/v1/jwks")).json()
            assert {k["kid"] for k in jwks["keys"]} == kids  # the key was kept, not remade
            auth = {"Authorization": f"Bearer {access_token}"}
            me = await call(http, "GET", "/v1/me", headers=auth)
            assert me.status == 200 and me.json()["email"] == email
            login = await call(http, "POST", "/v1/login", body=body)
            assert login.status == 200, login.text
            upgraded = password_hash_of(tmp_path, email)
            assert upgraded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
            # The new hash verifies the same password, and only it.
            assert (await call(http, "POST", "/v1/login", body=body)).status == 200
            wrong = {"email": email, "password": password + "!"}
            assert_problem(await call(http, "POST", "/v1/login", body=wrong), 401)
        assert "password_rehashed" in second.log_path.read_text()
    assert password_hash_of(tmp_path, email) == upgraded  # rehashed once, not at every sign-in
