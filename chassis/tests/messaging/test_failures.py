"""Failures the backbone must survive without losing a message or repeating an effect."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import messaging_harness as harness
import pytest
from conftest import CONSUMERS, EXTERNAL  # type: ignore[import-not-found]
from prometheus_client import CollectorRegistry
from souq_chassis.messaging.broker import connected, open_broker
from souq_chassis.messaging.outbox import Outbox
from souq_chassis.testing import EmbeddedNats, TcpProxy, reachable

HARNESS = Path(harness.__file__)


@dataclass
class Outage:
    url: str
    go_down: Callable[[], Awaitable[None]]
    come_back: Callable[[], Awaitable[None]]


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s: {what}")


@pytest.fixture(params=["embedded-nats-restart", "nats-4222-cut", "rabbitmq-5672-cut"])
async def outage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Outage]:
    """A broker that can go away: the embedded NATS is really stopped and restarted (its
    store kept); the machine's brokers are cut off behind a TCP proxy."""
    namespace = f"t{os.urandom(4).hex()}"
    if request.param == "embedded-nats-restart":
        server = EmbeddedNats(tmp_path / "nats-store").start()

        async def stop() -> None:
            await asyncio.to_thread(server.stop)

        async def start() -> None:
            await asyncio.to_thread(server.start)

        try:
            yield Outage(f"{server.url}?namespace={namespace}", stop, start)
        finally:
            server.stop()
        return
    name = request.param.removesuffix("-cut")
    host, port, url = EXTERNAL[name]
    if not reachable(host, port):
        pytest.skip(f"{name}: nothing listens on {host}:{port} (CI has it)")
    proxy = TcpProxy(host, port)
    await proxy.start()
    parts = urlsplit(url)
    proxied = parts._replace(
        netloc=parts.netloc.replace(f"{host}:{port}", f"127.0.0.1:{proxy.port}")
    )
    yield Outage(f"{proxied.geturl()}?namespace={namespace}", proxy.cut, proxy.restore)
    await proxy.cut()
    admin = open_broker(f"{url}?namespace={namespace}")
    await admin.connect()
    await admin.delete_everything(CONSUMERS)
    await admin.close()


async def test_messages_committed_while_the_broker_is_down_all_arrive_once(
    outage: Outage, tmp_path: Path
) -> None:
    producer_db = harness.create_database(tmp_path / "producer.db")
    consumer_db = harness.create_database(tmp_path / "consumer.db")
    topology = {"outage": ["catalog.ProductCreated.v1"]}
    publisher, receiver = open_broker(outage.url), open_broker(outage.url)
    outbox = Outbox(producer_db, publisher, CollectorRegistry())
    worker = harness.consumer("outage", consumer_db, receiver, CollectorRegistry())
    async with connected(publisher, topology), connected(receiver, topology):
        async with outbox.running(), worker.running():
            before = await harness.produce(producer_db, outbox, range(0, 50))

            async def first_ones_handled() -> bool:
                return len(await harness.effect_counts(consumer_db)) >= len(before)

            await eventually(first_ones_handled, 30, "the messages before the outage")

            await outage.go_down()
            during = await harness.produce(producer_db, outbox, range(50, 150))
            await asyncio.sleep(1.0)
            backlog, _ = await outbox.backlog()
            assert backlog > 0, "with the broker down, messages wait in the outbox"

            await outage.come_back()
            after = await harness.produce(producer_db, outbox, range(150, 170))
            ids = before + during + after

            async def all_handled() -> bool:
                return len(await harness.effect_counts(consumer_db)) >= len(ids)

            await eventually(all_handled, 60, "every message after the broker came back")
            await asyncio.sleep(0.5)  # room for late duplicates, if any
    counts = await harness.effect_counts(consumer_db)
    assert set(counts) == set(ids)
    assert set(counts.values()) == {1}, "a message had a second effect"
    assert (await outbox.backlog())[0] == 0


async def test_a_consumer_killed_mid_batch_loses_nothing_and_repeats_nothing(
    broker_url: str, tmp_path: Path
) -> None:
    producer_db = harness.create_database(tmp_path / "producer.db")
    consumer_path = tmp_path / "consumer.db"
    consumer_db = harness.create_database(consumer_path)
    topology = {"killed": ["catalog.ProductCreated.v1"]}
    publisher = open_broker(broker_url)
    outbox = Outbox(producer_db, publisher, CollectorRegistry())

    def start_consumer() -> subprocess.Popen[bytes]:
        command = [
            sys.executable,
            str(HARNESS),
            broker_url,
            str(consumer_path),
            "killed",
            "--delay-s",
            "0.01",
        ]
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    process = start_consumer()
    try:
        async with connected(publisher, topology), outbox.running():
            ids = await harness.produce(producer_db, outbox, range(300), per_tx=50)

            async def some_handled() -> bool:
                return len(await harness.effect_counts(consumer_db)) >= 60

            await eventually(some_handled, 30, "the consumer under way")
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            handled_at_kill = len(await harness.effect_counts(consumer_db))
            assert handled_at_kill < len(ids), "killed too late to prove anything"

            process = start_consumer()

            async def all_handled() -> bool:
                return len(await harness.effect_counts(consumer_db)) >= len(ids)

            await eventually(all_handled, 60, "every message after the restart")
            await asyncio.sleep(0.5)
    finally:
        process.terminate()
        process.wait(10)
        admin = open_broker(broker_url)
        await admin.connect()
        await admin.delete_everything(CONSUMERS)
        await admin.close()
    counts = await harness.effect_counts(consumer_db)
    assert set(counts) == set(ids)
    assert set(counts.values()) == {1}, "a message had a second effect"
