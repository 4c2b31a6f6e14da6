"""One interface over NATS JetStream and RabbitMQ; `open_broker(url)` picks by URL scheme."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar
from urllib.parse import parse_qs, urlsplit, urlunsplit

import structlog

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

T = TypeVar("T")
log = structlog.get_logger("souq.broker")


async def with_backoff(connect: Callable[[], Awaitable[T]], url: str) -> T:
    """Call `connect` until it succeeds: a service may start before its broker does."""
    delay = 0.1
    while True:
        try:
            return await connect()
        except Exception as exc:
            log.warning("broker_unreachable", url=url, error=str(exc) or type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


class BrokerUnavailable(Exception):
    """The broker did not take or confirm messages in time."""


@dataclass(frozen=True)
class Outgoing:
    id: str
    type: str
    body: bytes


@dataclass(frozen=True)
class Ack:
    """Handled (or handled before): remove it."""


@dataclass(frozen=True)
class Retry:
    """Failed for now: deliver again after `delay_s`."""

    delay_s: float


@dataclass(frozen=True)
class Dead:
    """Give up: move it to the dead-letter destination with the reason."""

    reason: str


Verdict = Ack | Retry | Dead


@dataclass(frozen=True)
class Delivery:
    body: bytes
    attempt: int  # counts from 1


# handle(deliveries) -> one verdict per delivery, in order. Batches amortize transactions.
Handler = Callable[[Sequence[Delivery]], Awaitable[Sequence[Verdict]]]


@dataclass(frozen=True)
class DeadLetter:
    id: str
    type: str
    consumer: str
    error: str
    attempts: int
    body: bytes


@dataclass(frozen=True)
class Destination:
    """A stream or queue and how many messages it holds (pending for a consumer)."""

    name: str
    messages: int
    detail: str = ""


class Broker(Protocol):
    url: str

    async def connect(self) -> None:
        """Connect, retrying until the broker answers; declare streams/exchanges."""

    async def declare(self, subscriptions: Mapping[str, Sequence[str]]) -> None:
        """Declare each consumer's queue or durable consumer for its message types."""

    async def close(self) -> None: ...

    async def publish(self, messages: Sequence[Outgoing], timeout_s: float = 5.0) -> None:
        """Publish in order and wait for every confirm; BrokerUnavailable if not all came."""

    async def consume(
        self, consumer: str, types: Sequence[str], handle: Handler, batch: int = 256
    ) -> None:
        """Deliver to `handle` until cancelled, in order, as many at a time as are waiting
        (up to `batch`), then ack, retry or dead-letter each as its verdict says."""

    async def lag(self, consumer: str) -> int:
        """Messages waiting for this consumer."""

    async def destinations(self, consumers: Sequence[str]) -> list[Destination]:
        """The streams or queues of these consumers, with their message counts."""

    async def dead_letters(self, consumers: Sequence[str], limit: int = 100) -> list[DeadLetter]:
        """Dead letters of these consumers, oldest first, left in place."""

    async def replay(self, consumers: Sequence[str], message_id: str) -> bool:
        """Publish a dead letter again to its consumers and remove it; False if not found."""

    async def delete_everything(self, consumers: Sequence[str]) -> None:
        """Remove this namespace's streams or queues and exchanges (test teardown)."""


def open_broker(
    url: str, *, client_name: str = "souq", registry: CollectorRegistry | None = None
) -> Broker:
    """A broker for `nats://…` (JetStream) or `amqp://…` (RabbitMQ).

    `?namespace=NAME` on the URL prefixes every stream, subject, exchange and queue, so that
    several systems (or test runs) can share one broker without seeing each other.
    `registry` receives the broker's own metrics (RabbitMQ: `messages_unroutable_total`).
    """
    parts = urlsplit(url)
    namespace = parse_qs(parts.query).get("namespace", [""])[0]
    if namespace and not namespace.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"namespace {namespace!r}: letters, digits, - and _ only")
    bare = urlunsplit(parts._replace(query=""))
    if parts.scheme in {"nats", "tls"}:
        from souq_chassis.messaging.nats_broker import NatsBroker

        return NatsBroker(bare, client_name, namespace)
    if parts.scheme in {"amqp", "amqps"}:
        from souq_chassis.messaging.rabbit_broker import RabbitBroker

        return RabbitBroker(bare, client_name, namespace, registry)
    raise ValueError(f"unsupported broker URL {url!r}: use nats://… or amqp://…")


@asynccontextmanager
async def connected(
    broker: Broker, subscriptions: Mapping[str, Sequence[str]]
) -> AsyncIterator[Broker]:
    """Connect in the background (a service starts without its broker) and declare the whole
    topology (`souq.events.topology.SUBSCRIPTIONS`), or check it until the administrator has
    (a service's user on the embedded NATS may not declare it); close at the end."""

    async def connect() -> None:
        await broker.connect()
        await with_backoff(lambda: broker.declare(subscriptions), broker.url)

    task = asyncio.create_task(connect(), name="broker-connect")
    try:
        yield broker
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await broker.close()
