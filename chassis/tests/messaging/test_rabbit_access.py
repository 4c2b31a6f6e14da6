"""Per-service RabbitMQ users, made with `rabbitmqctl` on the machine's RabbitMQ in a vhost of
their own (vhost and users deleted afterwards): each may publish its own types and consume its
own queue, and nothing else."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from urllib.parse import quote

import aio_pika
import aiormq
import pytest
from souq.events.topology import SUBSCRIPTIONS, publications
from souq_chassis.messaging.broker import Outgoing
from souq_chassis.messaging.envelope import encode, wrap
from souq_chassis.messaging.rabbit_access import rabbitmqctl_commands, service_access
from souq_chassis.messaging.rabbit_broker import RabbitBroker
from souq_chassis.testing import reachable

PRICE_CHANGED = "catalog.ProductPriceChanged.v1"


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=120, check=True)


@pytest.fixture(scope="module")
def vhost() -> Iterator[tuple[str, dict[str, str]]]:
    """A vhost with Souq's topology and a catalog and a cart user; (vhost, url per service)."""
    if not reachable("127.0.0.1", 5672):
        pytest.skip("rabbitmq: nothing listens on 127.0.0.1:5672 (CI has it)")
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not installed: cannot make users")
    tag = f"t{os.urandom(4).hex()}"
    name, password = f"souq-{tag}", os.urandom(12).hex()
    users = {service: f"{tag}-{service}" for service in ("catalog", "cart")}
    try:
        rabbitmqctl("add_vhost", name)
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        for service, user in users.items():
            access = service_access(
                service, SUBSCRIPTIONS, publications().get(service, []), user=user
            )
            for command in rabbitmqctl_commands(access, name, password):
                rabbitmqctl(*command[1:])
        yield (
            name,
            {
                "guest": f"amqp://guest:guest@127.0.0.1:5672/{quote(name, safe='')}",
                **{
                    s: f"amqp://{u}:{password}@127.0.0.1:5672/{quote(name, safe='')}"
                    for s, u in users.items()
                },
            },
        )
    finally:
        for user in users.values():
            subprocess.run(["rabbitmqctl", "delete_user", user], capture_output=True, timeout=120)
        subprocess.run(["rabbitmqctl", "delete_vhost", name], capture_output=True, timeout=120)


@pytest.fixture
async def topology(vhost: tuple[str, dict[str, str]]) -> dict[str, str]:
    """The administrator declares the whole topology once."""
    _, urls = vhost
    admin = RabbitBroker(urls["guest"], "test-admin")
    await admin.connect()
    await admin.declare(SUBSCRIPTIONS)
    await admin.close()
    return urls


def price_changed() -> Outgoing:
    from souq.events import ProductPriceChanged

    envelope = wrap(
        ProductPriceChanged.model_validate(
            {
                "product_id": 1,
                "sku": "TST-1",
                "name": "Test product",
                "price": {"amount_cents": 1, "currency": "USD"},
                "previous_price": {"amount_cents": 100, "currency": "USD"},
                "changed_at": "2024-01-01T00:00:00Z",
            }
        )
    )
    return Outgoing(envelope.id, envelope.type, encode(envelope))


async def refused(url: str, action: str) -> bool:
    """Whether the broker refuses `action` ("publish-events", "publish-default", "get-cart")."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        message = aio_pika.Message(b"{}", message_id="forged", type=PRICE_CHANGED)
        if action == "publish-events":
            exchange = await channel.get_exchange("souq.events", ensure=False)
            await exchange.publish(message, routing_key=PRICE_CHANGED)
        elif action == "publish-default":
            await channel.default_exchange.publish(message, routing_key="souq.cart")
        else:
            queue = await channel.declare_queue("souq.cart", passive=True)
            await queue.get(fail=False)
        return False
    except aiormq.exceptions.ChannelAccessRefused:
        return True
    finally:
        await connection.close()


async def test_the_catalog_user_publishes_a_price_change_the_cart_user_reads(
    topology: dict[str, str],
) -> None:
    catalog = RabbitBroker(topology["catalog"], "test-catalog")
    cart = RabbitBroker(topology["cart"], "test-cart")
    try:
        # Each declares the whole topology as a service does; what it may not declare it checks.
        await catalog.connect()
        await catalog.declare(SUBSCRIPTIONS)
        await cart.connect()
        await cart.declare(SUBSCRIPTIONS)
        before = await cart.lag("cart")
        await catalog.publish([price_changed()])
        assert await cart.lag("cart") == before + 1
    finally:
        await catalog.close()
        await cart.close()
    assert not await refused(topology["cart"], "get-cart")


async def test_the_cart_user_cannot_publish_a_price_change(topology: dict[str, str]) -> None:
    assert await refused(topology["cart"], "publish-events")
    assert not await refused(topology["catalog"], "publish-events")


async def test_no_service_can_write_to_a_queue_through_the_default_exchange(
    topology: dict[str, str],
) -> None:
    assert await refused(topology["catalog"], "publish-default")
    assert await refused(topology["cart"], "publish-default")


async def test_a_service_cannot_consume_another_services_queue(topology: dict[str, str]) -> None:
    assert await refused(topology["catalog"], "get-cart")
