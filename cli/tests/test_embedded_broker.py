"""The embedded NATS as `souq up` runs it: only its users get in, each service only to its own
subjects; the passwords stay in the data directory, private, and are kept across runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import stat
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import nats
import pytest
from nats.errors import Error as NatsError
from souq.events.topology import SUBSCRIPTIONS
from souq_chassis.messaging.broker import Ack, BrokerUnavailable, Outgoing, connected, open_broker
from souq_chassis.messaging.embedded import nats_ready
from souq_chassis.messaging.nats_broker import inbox_prefix
from souq_chassis.private_files import private_dir
from souq_chassis.testing import free_port
from souq_cli import broker_users
from souq_cli.services import APPLICATION, DEFAULT_PORTS, EMBEDDED_NATS, broker_url


@dataclass
class RunningNats:
    ports: dict[str, int]
    data_dir: Path
    proc: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return broker_url(self.ports)

    def url_of(self, service: str) -> str:
        """What souq up hands to the service; the gateway (which uses no broker) has a user
        all the same."""
        env = next(s for s in APPLICATION if s.name == service).environment(
            self.ports, self.data_dir
        )
        return env.get("SOUQ_BROKER_URL") or broker_users.as_service(
            self.address, self.data_dir, service
        )


async def start(data_dir: Path, ports: dict[str, int]) -> RunningNats:
    assert EMBEDDED_NATS.probe is not None
    proc = subprocess.Popen(  # noqa: ASYNC220 - starts at once, nothing to wait for
        EMBEDDED_NATS.argv(ports, data_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 20
    while not await EMBEDDED_NATS.probe(ports, data_dir):
        assert proc.poll() is None, "nats-server exited"
        assert time.monotonic() < deadline, "nats-server not ready in 20 s"
        await asyncio.sleep(0.1)
    return RunningNats(ports, data_dir, proc)


def stop(server: RunningNats) -> None:
    server.proc.terminate()
    server.proc.wait(10)


@pytest.fixture
async def embedded(tmp_path: Path) -> AsyncIterator[RunningNats]:
    """The NATS of `souq up` (same spec, same config), on a free port, with the streams."""
    server = await start(private_dir(tmp_path / "data"), {**DEFAULT_PORTS, "nats": free_port()})
    admin = open_broker(broker_users.as_admin(server.address, server.data_dir))
    await asyncio.wait_for(admin.connect(), 10)
    await admin.close()
    try:
        yield server
    finally:
        stop(server)


async def _quiet(_: Exception) -> None:
    pass


async def connect(url: str, errors: list[str] | None = None) -> Any:
    async def record(error: Exception) -> None:
        if errors is not None:
            errors.append(str(error))

    user = urlsplit(url).username or ""
    return await nats.connect(
        url,
        connect_timeout=2,
        allow_reconnect=False,
        max_reconnect_attempts=0,
        error_cb=record,
        inbox_prefix=inbox_prefix(user),  # as the chassis's broker does
    )


async def handshake(port: int, credentials: dict[str, str]) -> str:
    """The server's answer to CONNECT (with these credentials) and PING, in NATS's protocol
    itself: `PONG` when admitted, `-ERR 'Authorization Violation'` when not."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        info = await asyncio.wait_for(reader.readline(), 5)
        assert info.startswith(b"INFO "), info
        connect = {"verbose": False, "pedantic": False, "protocol": 1, **credentials}
        writer.write(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
        await writer.drain()
        return (await asyncio.wait_for(reader.readline(), 5)).decode().strip()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_a_client_without_credentials_is_refused(embedded: RunningNats) -> None:
    port = embedded.ports["nats"]
    assert "Authorization Violation" in await handshake(port, {})
    guessed = {"user": "catalog", "pass": "guessed"}
    assert "Authorization Violation" in await handshake(port, guessed)
    catalog = urlsplit(embedded.url_of("catalog"))  # what souq up hands to catalog
    assert catalog.username == "catalog" and catalog.password
    password = unquote(catalog.password)
    assert await handshake(port, {"user": "catalog", "pass": password}) == "PONG"


async def test_a_service_publishes_only_its_own_events_and_reads_none_directly(
    embedded: RunningNats,
) -> None:
    # The forgery of the issue: someone else's ProductPriceChanged, read every UserRegistered.
    catalog_errors: list[str] = []
    catalog = await connect(embedded.url_of("catalog"), catalog_errors)
    identity = await connect(embedded.url_of("identity"))
    try:
        seen: list[Any] = []

        async def record(message: Any) -> None:
            seen.append(message)

        snoop = await catalog.subscribe("souq.events.>", cb=record)
        with pytest.raises((NatsError, asyncio.TimeoutError)):
            await catalog.jetstream(timeout=1).publish(
                "souq.events.identity.UserRegistered.v1", b"{}"
            )
        forged = identity.jetstream(timeout=1).publish(
            "souq.events.catalog.ProductPriceChanged.v1", b"{}"
        )
        with pytest.raises((NatsError, asyncio.TimeoutError)):
            await forged
        ack = await identity.jetstream(timeout=5).publish(
            "souq.events.identity.UserRegistered.v1", b"{}"
        )
        assert ack.stream == "SOUQ_EVENTS"
        await asyncio.sleep(0.5)
        assert seen == []
        await snoop.unsubscribe()
        assert any("permissions violation" in e.lower() for e in catalog_errors), catalog_errors
    finally:
        await catalog.close()
        await identity.close()


async def test_the_credentials_are_private_made_once_and_kept(tmp_path: Path) -> None:
    data_dir = private_dir(tmp_path / "data")
    ports = {**DEFAULT_PORTS, "nats": free_port()}
    first = await start(data_dir, ports)
    url = first.url_of("cart")
    stop(first)
    for name in (broker_users.CREDENTIALS_FILE, broker_users.CONFIG_FILE):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name
    second = await start(data_dir, ports)
    try:
        assert second.url_of("cart") == url
        nc = await connect(url)
        await nc.close()
    finally:
        stop(second)


async def api_request(nc: Any, subject: str, body: dict[str, Any] | None = None) -> Any:
    """A JetStream API request; None when the server gave no answer (a refused publish is
    dropped, with a permissions violation sent to the client)."""
    payload = json.dumps(body).encode() if body is not None else b""
    try:
        return json.loads((await nc.request(subject, payload, timeout=2)).data)
    except (TimeoutError, NatsError):
        return None


async def admin_declared(server: RunningNats) -> Any:
    """The administrator's connection, after it declared the whole topology."""
    admin = open_broker(broker_users.as_admin(server.address, server.data_dir))
    await asyncio.wait_for(admin.connect(), 10)
    await asyncio.wait_for(admin.declare(SUBSCRIPTIONS), 10)
    await admin.close()
    return await connect(broker_users.as_admin(server.address, server.data_dir))


@pytest.mark.parametrize("service", ["gateway", "catalog"])
async def test_a_service_cannot_change_or_delete_the_streams(
    embedded: RunningNats, service: str
) -> None:
    # The review's attacks: republish every event to the attacker's inbox; rewrite its own
    # subjects into catalog's to forge a price change.
    admin = await admin_declared(embedded)
    errors: list[str] = []
    nc = await connect(embedded.url_of(service), errors)
    try:
        before = (await api_request(admin, "$JS.API.STREAM.INFO.SOUQ_EVENTS"))["config"]
        stolen = {**before, "republish": {"src": ">", "dest": f"_INBOX_{service}.stolen.>"}}
        forging = {
            **before,
            "subject_transform": {"src": f"souq.events.{service}.>", "dest": "souq.events.x.>"},
        }
        for config in (stolen, forging):
            answer = await api_request(nc, "$JS.API.STREAM.UPDATE.SOUQ_EVENTS", config)
            assert answer is None or "error" in answer, answer
        answer = await api_request(nc, "$JS.API.STREAM.DELETE.SOUQ_DLQ")
        assert answer is None or "error" in answer, answer
        new = {"name": "STOLEN", "subjects": ["souq.events.>.stolen"], "storage": "memory"}
        answer = await api_request(nc, "$JS.API.STREAM.CREATE.STOLEN", new)
        assert answer is None or "error" in answer, answer
        after = (await api_request(admin, "$JS.API.STREAM.INFO.SOUQ_EVENTS"))["config"]
        assert after == before
        assert "config" in (await api_request(admin, "$JS.API.STREAM.INFO.SOUQ_DLQ") or {})
        assert "error" in (await api_request(admin, "$JS.API.STREAM.INFO.STOLEN") or {})
        assert any("permissions violation" in e.lower() for e in errors), errors
    finally:
        await nc.close()
        await admin.close()


async def test_a_service_cannot_create_or_delete_another_services_consumer(
    embedded: RunningNats,
) -> None:
    admin = await admin_declared(embedded)
    gateway = await connect(embedded.url_of("gateway"))
    try:
        info = "$JS.API.CONSUMER.INFO.SOUQ_EVENTS.cart"
        before = (await api_request(admin, info))["config"]
        redirected = {
            "stream_name": "SOUQ_EVENTS",
            "config": {**before, "filter_subjects": ["souq.events.gateway.>"]},
        }
        for subject in (
            "$JS.API.CONSUMER.CREATE.SOUQ_EVENTS.cart",
            "$JS.API.CONSUMER.DURABLE.CREATE.SOUQ_EVENTS.cart",
            "$JS.API.CONSUMER.DELETE.SOUQ_EVENTS.cart",
        ):
            answer = await api_request(gateway, subject, redirected)
            assert answer is None or "error" in answer, (subject, answer)
        fresh = {"stream_name": "SOUQ_EVENTS", "config": {"durable_name": "snoop"}}
        answer = await api_request(
            gateway, "$JS.API.CONSUMER.DURABLE.CREATE.SOUQ_EVENTS.snoop", fresh
        )
        assert answer is None or "error" in answer, answer
        after = (await api_request(admin, info))["config"]
        assert after == before
        assert "error" in (await api_request(admin, "$JS.API.CONSUMER.INFO.SOUQ_EVENTS.snoop"))
    finally:
        await gateway.close()
        await admin.close()


async def test_a_service_waits_for_the_administrator_to_declare_the_topology(
    tmp_path: Path,
) -> None:
    # souq up starts NATS and the services together: a service's user may only check the
    # topology, so it waits (it does not crash) until the administrator has declared it.
    data_dir = private_dir(tmp_path / "data")
    ports = {**DEFAULT_PORTS, "nats": free_port()}
    proc = subprocess.Popen(  # noqa: ASYNC220 - starts at once, nothing to wait for
        EMBEDDED_NATS.argv(ports, data_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    server = RunningNats(ports, data_dir, proc)
    admin_url = broker_users.as_admin(server.address, data_dir)
    try:
        deadline = time.monotonic() + 20
        while not await nats_ready(admin_url):
            assert time.monotonic() < deadline, "nats-server not ready in 20 s"
            await asyncio.sleep(0.1)
        cart = open_broker(server.url_of("cart"))
        got: list[int] = []

        async def handle(deliveries: Any) -> list[Ack]:
            got.extend(d.attempt for d in deliveries)
            return [Ack() for _ in deliveries]

        async with connected(cart, SUBSCRIPTIONS):
            consuming = asyncio.create_task(cart.consume("cart", SUBSCRIPTIONS["cart"], handle))
            await asyncio.sleep(2)
            assert not consuming.done(), "the service gave up on a topology not declared yet"
            assert await broker_users.declare_topology(admin_url)
            catalog = open_broker(server.url_of("catalog"))
            async with connected(catalog, SUBSCRIPTIONS):
                deadline = time.monotonic() + 30
                while True:
                    with contextlib.suppress(BrokerUnavailable):
                        body = b"{}"
                        await catalog.publish([Outgoing("m1", SUBSCRIPTIONS["cart"][0], body)])
                        break
                    assert time.monotonic() < deadline, "catalog never published"
                    await asyncio.sleep(0.2)
            deadline = time.monotonic() + 30
            while not got:
                assert time.monotonic() < deadline, "cart never received the message"
                await asyncio.sleep(0.1)
            consuming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consuming
    finally:
        stop(server)


async def test_souq_up_brings_an_old_consumer_to_the_topology_and_a_service_cannot(
    embedded: RunningNats,
) -> None:
    # A store made by an older version: cart's consumer with a 30 s ack wait. A service's
    # declare says at once what differs (it may not change it); NATS's readiness, which
    # declares as the administrator, updates it in place.
    from nats.js import api
    from souq_chassis.messaging.nats_broker import ACK_WAIT_S, NatsBroker, TopologyNotDeclared

    admin = NatsBroker(broker_users.as_admin(embedded.address, embedded.data_dir))
    cart = NatsBroker(embedded.url_of("cart"))
    await asyncio.wait_for(admin.connect(), 10)
    await asyncio.wait_for(cart.connect(), 10)
    try:
        await admin.declare(SUBSCRIPTIONS)
        old = api.ConsumerConfig(
            durable_name="cart",
            filter_subjects=[f"souq.events.{t}" for t in SUBSCRIPTIONS["cart"]],
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_wait=30,
            max_ack_pending=1000,
        )
        await admin._js.add_consumer(admin.stream, old)
        started = time.monotonic()
        with pytest.raises(TopologyNotDeclared, match="consumer cart differs"):
            await cart.declare(SUBSCRIPTIONS)
        assert time.monotonic() - started < 4, "not refused at once"
        assert (await admin._js.consumer_info(admin.stream, "cart")).config.ack_wait == 30
        assert EMBEDDED_NATS.probe is not None
        assert await EMBEDDED_NATS.probe(embedded.ports, embedded.data_dir)
        info = await admin._js.consumer_info(admin.stream, "cart")
        assert info.config.ack_wait == ACK_WAIT_S
        await cart.declare(SUBSCRIPTIONS)  # now the same: nothing to change, no error
    finally:
        await cart.close()
        await admin.close()
