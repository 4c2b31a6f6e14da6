"""Two identity replicas on one database (as behind a load balancer): a key rotated on one is
published and signed with by the other within its reload period."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import aiohttp
import jwt
import pytest
from souq_chassis.testing import ServiceProcess, call

RELOAD_S = 0.5


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, broker_url: str
) -> Iterator[tuple[ServiceProcess, ServiceProcess, str]]:
    data_dir: Path = tmp_path_factory.mktemp("identity-replicas")
    password = secrets.token_urlsafe(18)

    def replica() -> ServiceProcess:
        return ServiceProcess.on_free_ports(
            "souq_identity",
            "IDENTITY",
            data_dir,  # one database for both
            environment="test",
            admin_password=password,
            key_reload_s=RELOAD_S,
            env={"SOUQ_BROKER_URL": broker_url},
        )

    with ExitStack() as stack:
        first = stack.enter_context(replica().serving())
        second = stack.enter_context(replica().serving())  # started after: keys exist
        yield first, second, password


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def test_a_rotation_on_one_replica_reaches_the_other(
    replicas: tuple[ServiceProcess, ServiceProcess, str],
) -> None:
    first, second, password = replicas
    admin = {"email": "admin@souq.local", "password": password}
    async with aiohttp.ClientSession() as http:
        tokens = (await call(http, "POST", f"{first.url}/v1/login", body=admin)).json()
        old_kid = kid_of(tokens["access_token"])
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}

        rotated = await call(http, "POST", f"{first.url}/v1/admin/keys/rotate", headers=bearer)
        assert rotated.status == 201, rotated.text
        new_kid = rotated.json()["kid"]

        deadline = time.monotonic() + 10 * RELOAD_S + 5
        while True:
            jwks = (await call(http, "GET", f"{second.url}/v1/jwks")).json()
            if new_kid in {k["kid"] for k in jwks["keys"]} or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert {old_kid, new_kid} <= {k["kid"] for k in jwks["keys"]}

        signed_by_second = (await call(http, "POST", f"{second.url}/v1/login", body=admin)).json()
        assert kid_of(signed_by_second["access_token"]) == new_kid
        # and each replica accepts what the other signed, old key included
        me = await call(http, "GET", f"{second.url}/v1/me", headers=bearer)
        assert me.status == 200, me.text
