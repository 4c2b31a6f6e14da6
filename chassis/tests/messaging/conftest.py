from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from souq.events import ProductCreated
from souq_chassis.messaging.broker import Broker, open_broker
from souq_chassis.testing import EmbeddedNats, reachable

EXTERNAL = {
    "nats-4222": ("127.0.0.1", 4222, "nats://127.0.0.1:4222"),
    "rabbitmq-5672": ("127.0.0.1", 5672, "amqp://guest:guest@127.0.0.1:5672/"),
}
# Every consumer name the tests use, so teardown can remove their queues.
CONSUMERS = ["inventory", "killed", "poisoned", "traced", "outage"]
BrokerFactory = Callable[[], Awaitable[Broker]]


@pytest.fixture(scope="session")
def embedded_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(tmp_path_factory.mktemp("nats-store")) as server:
        yield server


@pytest.fixture(params=["embedded-nats", *EXTERNAL])
def broker_url(request: pytest.FixtureRequest, embedded_nats: EmbeddedNats) -> str:
    """A broker for this test alone: a fresh namespace on the embedded NATS, and on the
    machine's NATS and RabbitMQ when they are reachable (skipped, with the reason, if not)."""
    namespace = f"t{os.urandom(4).hex()}"
    if request.param == "embedded-nats":
        return f"{embedded_nats.url}?namespace={namespace}"
    host, port, url = EXTERNAL[request.param]
    if not reachable(host, port):
        pytest.skip(f"{request.param}: nothing listens on {host}:{port} (CI has it)")
    return f"{url}?namespace={namespace}"


@pytest.fixture
async def brokers(broker_url: str) -> AsyncIterator[BrokerFactory]:
    """`await brokers()`: a connected broker on the test's namespace; all closed, and the
    namespace's streams/queues deleted, at the end."""
    made: list[Broker] = []

    async def make() -> Broker:
        broker = open_broker(broker_url)
        await broker.connect()
        await broker.declare({name: [ProductCreated.type_name()] for name in CONSUMERS})
        made.append(broker)
        return broker

    yield make
    if made:
        await made[0].delete_everything(CONSUMERS)
    for broker in made:
        await broker.close()
