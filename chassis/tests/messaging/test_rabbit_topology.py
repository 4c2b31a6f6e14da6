"""RabbitMQ drops a message that no queue is bound for, and (publishing without `mandatory`)
still confirms it. These tests widen the windows in which that used to lose messages: a
publisher that publishes before any queue is declared, a queue deleted under a running
publisher, a broker that lost its queues while a service was disconnected."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aio_pika
import aiormq
import messaging_harness as harness
import pytest
from prometheus_client import CollectorRegistry
from souq.events import ProductCreated, UserRegistered
from souq_chassis.messaging.broker import BrokerUnavailable, Outgoing
from souq_chassis.messaging.envelope import encode, wrap
from souq_chassis.messaging.outbox import Outbox
from souq_chassis.messaging.rabbit_broker import RabbitBroker
from souq_chassis.testing import reachable

RABBIT = "amqp://guest:guest@127.0.0.1:5672/"
TOPOLOGY = {"inventory": [ProductCreated.type_name()]}


@pytest.fixture
async def namespace() -> AsyncIterator[str]:
    """A namespace of its own on the machine's RabbitMQ, removed afterwards."""
    if not reachable("127.0.0.1", 5672):
        pytest.skip("rabbitmq: nothing listens on 127.0.0.1:5672 (CI has it)")
    name = f"t{os.urandom(4).hex()}"
    yield name
    cleaner = RabbitBroker(RABBIT, "test-cleanup", name)
    await cleaner.connect()
    await cleaner.delete_everything(list(TOPOLOGY))
    await cleaner.close()


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s: {what}")


async def queue_exists(name: str) -> bool:
    connection = await aio_pika.connect(RABBIT)
    try:
        channel = await connection.channel()
        await channel.declare_queue(name, passive=True)
        return True
    except aiormq.exceptions.ChannelNotFoundEntity:
        return False
    finally:
        await connection.close()


async def delete_queue(name: str) -> None:
    connection = await aio_pika.connect(RABBIT)
    try:
        channel = await connection.channel()
        await channel.queue_delete(name)
    finally:
        await connection.close()


def outgoing(n: int) -> Outgoing:
    envelope = wrap(harness.product(n))
    return Outgoing(envelope.id, envelope.type, encode(envelope))


async def test_messages_published_before_any_queue_is_declared_all_arrive(
    namespace: str, tmp_path: Path
) -> None:
    producer_db = harness.create_database(tmp_path / "producer.db")
    consumer_db = harness.create_database(tmp_path / "consumer.db")
    publisher = RabbitBroker(RABBIT, "test-publisher", namespace)
    consumer_broker = RabbitBroker(RABBIT, "test-consumer", namespace)
    outbox = Outbox(producer_db, publisher, CollectorRegistry())
    ids = await harness.produce(producer_db, outbox, range(20))
    try:
        # The gap `connected()` has between connecting and declaring, widened to a second:
        # the relay runs in it with 20 messages waiting, and no queue exists yet.
        await publisher.connect()
        async with outbox.running():
            await asyncio.sleep(1.0)
            await publisher.declare(TOPOLOGY)
            await consumer_broker.connect()
            await consumer_broker.declare(TOPOLOGY)
            worker = harness.consumer(
                "inventory", consumer_db, consumer_broker, CollectorRegistry()
            )
            async with worker.running():

                async def all_arrived() -> bool:
                    return len(await harness.effect_counts(consumer_db)) >= len(ids)

                await eventually(all_arrived, 30, "every message published before the queue")
    finally:
        await publisher.close()
        await consumer_broker.close()
    assert await harness.effect_counts(consumer_db) == dict.fromkeys(ids, 1)


async def test_a_message_for_a_deleted_queue_is_not_confirmed_and_arrives_once_declared_again(
    namespace: str,
) -> None:
    broker = RabbitBroker(RABBIT, "test-publisher", namespace)
    await broker.connect()
    try:
        await broker.declare(TOPOLOGY)
        await broker.publish([outgoing(1)])
        assert await broker.lag("inventory") == 1
        await delete_queue(f"{namespace}.souq.inventory")

        with pytest.raises(BrokerUnavailable, match="no queue took"):
            await broker.publish([outgoing(2)])
        # The outbox publishes it again: the publisher declares the subscriber's queue first.
        await broker.publish([outgoing(2)])
        assert await broker.lag("inventory") == 1
    finally:
        await broker.close()


async def test_a_message_of_a_type_nobody_consumes_is_counted_as_unroutable(
    namespace: str,
) -> None:
    registry = CollectorRegistry()
    broker = RabbitBroker(RABBIT, "test-publisher", namespace, registry)
    await broker.connect()
    try:
        await broker.declare(TOPOLOGY)
        envelope = wrap(UserRegistered(user_id="1", email="a@example.com"))
        await broker.publish([Outgoing(envelope.id, envelope.type, encode(envelope))])
    finally:
        await broker.close()
    unroutable = registry.get_sample_value(
        "messages_unroutable_total", {"type": UserRegistered.type_name()}
    )
    assert unroutable == 1


def _close_connection(name: str) -> None:
    listed = subprocess.run(
        ["rabbitmqctl", "list_connections", "-q", "pid", "client_properties"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for line in listed.stdout.splitlines():
        if f'{{"connection_name","{name}"}}' in line:
            pid = line.split("\t", 1)[0]
            subprocess.run(
                ["rabbitmqctl", "close_connection", pid, "test: reconnect"],
                capture_output=True,
                timeout=60,
                check=True,
            )
            return
    raise AssertionError(f"no connection named {name}")


async def test_the_topology_is_declared_again_after_a_reconnect(namespace: str) -> None:
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not installed: cannot close a connection from outside")
    name = f"test-reconnect-{namespace}"
    broker = RabbitBroker(RABBIT, name, namespace)
    await broker.connect()
    try:
        await broker.declare(TOPOLOGY)
        queue = f"{namespace}.souq.inventory"
        await delete_queue(queue)  # as if the broker had lost it while the service was away
        await asyncio.to_thread(_close_connection, name)

        async def declared_again() -> bool:
            return await queue_exists(queue)

        await eventually(declared_again, 30, "the queue declared again after the reconnect")
    finally:
        await broker.close()
