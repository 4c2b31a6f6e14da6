"""RabbitMQ: a durable topic exchange of events, a durable queue per consuming service, publisher
confirms and manual acks. A retry waits in the consumer's retry queue until its per-message TTL
expires and the queue's dead-letter exchange routes it back, so a failing message never holds
up the ones behind it. What keeps failing goes to the consumer's dead-letter queue."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import aio_pika
import aiormq
import structlog
from aio_pika.abc import AbstractIncomingMessage

from souq_chassis.messaging.broker import (
    Ack,
    BrokerUnavailable,
    DeadLetter,
    Delivery,
    Destination,
    Handler,
    Outgoing,
    Retry,
    with_backoff,
)

log = structlog.get_logger("souq.broker")


class RabbitBroker:
    def __init__(self, url: str, client_name: str = "souq", namespace: str = "") -> None:
        self.url = url
        self._name = client_name
        self._connection: Any = None
        self._publisher: Any = None
        self._exchange: Any = None
        self._ready = asyncio.Event()  # set once connected and declared
        self._prefix = f"{namespace}." if namespace else ""
        self.exchange_name = f"{self._prefix}souq.events"
        self.dead_exchange_name = f"{self._prefix}souq.dead"

    def _queue(self, consumer: str) -> str:
        return f"{self._prefix}souq.{consumer}"

    async def connect(self) -> None:
        self._connection = await with_backoff(
            lambda: aio_pika.connect_robust(
                self.url, client_properties={"connection_name": self._name}, timeout=2
            ),
            self.url,
        )
        self._publisher = await self._connection.channel(publisher_confirms=True)
        self._exchange = await self._publisher.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        await self._publisher.declare_exchange(
            self.dead_exchange_name, aio_pika.ExchangeType.DIRECT, durable=True
        )
        self._ready.set()

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None

    async def publish(self, messages: Sequence[Outgoing], timeout_s: float = 5.0) -> None:
        if not self._ready.is_set() or self._connection.is_closed:
            raise BrokerUnavailable("not connected")
        # aiormq (under aio-pika) directly: building aio-pika Message objects cost more than
        # the publish itself (1.3k vs 4k+ confirmed messages/s measured here).
        channel = await self._publisher.get_underlay_channel()
        confirms = [
            channel.basic_publish(
                m.body,
                exchange=self.exchange_name,
                routing_key=m.type,
                properties=aiormq.spec.Basic.Properties(
                    message_id=m.id,
                    message_type=m.type,
                    content_type="application/json",
                    delivery_mode=2,  # persistent
                ),
            )
            for m in messages
        ]
        try:
            results = await asyncio.wait_for(asyncio.gather(*confirms), timeout_s)
        except Exception as exc:
            raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if not all(isinstance(r, aiormq.spec.Basic.Ack) for r in results):
            raise BrokerUnavailable("the broker refused (nacked) some messages")

    async def declare(self, subscriptions: Mapping[str, Sequence[str]]) -> None:
        channel = await self._connection.channel()
        try:
            for consumer, types in subscriptions.items():
                await self._declare(channel, consumer, types)
        finally:
            await channel.close()

    async def _declare(self, channel: Any, consumer: str, types: Sequence[str]) -> Any:
        name = self._queue(consumer)
        queue = await channel.declare_queue(name, durable=True)
        exchange = await channel.get_exchange(self.exchange_name)
        for message_type in types:
            await queue.bind(exchange, routing_key=message_type)
        # Retries wait here; on expiry the default exchange routes them back to the queue.
        await channel.declare_queue(
            f"{name}.retry",
            durable=True,
            arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": name},
        )
        dead = await channel.declare_queue(f"{name}.dead", durable=True)
        await dead.bind(await channel.get_exchange(self.dead_exchange_name), routing_key=consumer)
        return queue

    async def consume(
        self, consumer: str, types: Sequence[str], handle: Handler, batch: int = 256
    ) -> None:
        await self._ready.wait()  # a service may start before its broker
        channel = await self._connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=batch)
        queue = await self._declare(channel, consumer, types)
        waiting: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        await queue.consume(waiting.put)
        while True:
            messages = [await waiting.get()]
            while len(messages) < batch and not waiting.empty():
                messages.append(waiting.get_nowait())
            deliveries = [
                Delivery(m.body, int(str((m.headers or {}).get("x-souq-attempt", 1))))
                for m in messages
            ]
            verdicts = await handle(deliveries)
            for message, verdict, delivery in zip(messages, verdicts, deliveries, strict=True):
                try:
                    if isinstance(verdict, Retry):
                        await self._requeue(
                            channel, consumer, message, delivery.attempt, verdict.delay_s
                        )
                    elif not isinstance(verdict, Ack):
                        await self._dead_letter(
                            channel, consumer, message, verdict.reason, delivery.attempt
                        )
                    await message.ack()
                except Exception as exc:  # not acked: it comes again; the inbox dedups it
                    log.warning("broker_ack_failed", consumer=consumer, error=str(exc))

    @staticmethod
    def _copy(message: AbstractIncomingMessage, headers: dict[str, Any], **extra: Any) -> Any:
        return aio_pika.Message(
            message.body,
            message_id=message.message_id,
            type=message.type,
            content_type=message.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers=headers,
            **extra,
        )

    async def _requeue(
        self, channel: Any, consumer: str, message: Any, attempt: int, delay_s: float
    ) -> None:
        headers = {**(message.headers or {}), "x-souq-attempt": attempt + 1}
        retry = self._copy(message, headers, expiration=max(delay_s, 0.001))
        await channel.default_exchange.publish(retry, routing_key=f"{self._queue(consumer)}.retry")

    async def _dead_letter(
        self, channel: Any, consumer: str, message: Any, reason: str, attempt: int
    ) -> None:
        headers = {
            **(message.headers or {}),
            "x-souq-consumer": consumer,
            "x-souq-error": reason[:1000],
            "x-souq-attempts": attempt,
        }
        dead_exchange = await channel.get_exchange(self.dead_exchange_name)
        await dead_exchange.publish(self._copy(message, headers), routing_key=consumer)

    async def lag(self, consumer: str) -> int:
        channel = await self._connection.channel()
        try:
            queue = await channel.declare_queue(self._queue(consumer), passive=True)
            return int(queue.declaration_result.message_count or 0)
        finally:
            await channel.close()

    async def destinations(self, consumers: Sequence[str]) -> list[Destination]:
        found = []
        channel = await self._connection.channel()
        try:
            for consumer in consumers:
                for suffix, detail in (("", "queue"), (".retry", "to retry"), (".dead", "dead")):
                    name = f"{self._queue(consumer)}{suffix}"
                    with contextlib.suppress(Exception):
                        queue = await channel.declare_queue(name, passive=True)
                        count = int(queue.declaration_result.message_count or 0)
                        found.append(Destination(name, count, detail))
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
        return found

    async def delete_everything(self, consumers: Sequence[str]) -> None:
        """Remove this namespace's queues and exchanges (tests)."""
        channel = await self._connection.channel()
        for consumer in consumers:
            for suffix in ("", ".retry", ".dead"):
                with contextlib.suppress(Exception):
                    await channel.queue_delete(f"{self._queue(consumer)}{suffix}")
        for name in (self.exchange_name, self.dead_exchange_name):
            with contextlib.suppress(Exception):
                await channel.exchange_delete(name)
        await channel.close()

    async def _drain_dead(self, consumers: Sequence[str], limit: int) -> tuple[Any, list[Any]]:
        """Take the dead letters off their queues (unacked); the caller puts back or acks."""
        channel = await self._connection.channel(publisher_confirms=True)
        held: list[Any] = []
        for consumer in consumers:
            try:
                queue = await channel.declare_queue(f"{self._queue(consumer)}.dead", passive=True)
            except Exception:
                channel = await self._connection.channel(publisher_confirms=True)
                continue
            while len(held) < limit:
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                held.append(message)
        return channel, held

    async def dead_letters(self, consumers: Sequence[str], limit: int = 100) -> list[DeadLetter]:
        channel, held = await self._drain_dead(consumers, limit)
        try:
            return [
                DeadLetter(
                    id=m.message_id or "",
                    type=m.type or "",
                    consumer=str((m.headers or {}).get("x-souq-consumer", "")),
                    error=str((m.headers or {}).get("x-souq-error", "")),
                    attempts=int((m.headers or {}).get("x-souq-attempts", 0)),
                    body=m.body,
                )
                for m in held
            ]
        finally:
            for m in held:
                await m.nack(requeue=True)
            await channel.close()

    async def replay(self, consumers: Sequence[str], message_id: str) -> bool:
        channel, held = await self._drain_dead(consumers, 10_000)
        found = False
        try:
            for m in held:
                if not found and m.message_id == message_id:
                    headers = {
                        k: v for k, v in (m.headers or {}).items() if not k.startswith("x-souq")
                    }
                    exchange = await channel.get_exchange(self.exchange_name)
                    # Events are routed by type; the routing key it last came by may be a retry
                    # queue's name.
                    await exchange.publish(self._copy(m, headers), routing_key=m.type)
                    await m.ack()
                    found = True
                else:
                    await m.nack(requeue=True)
        finally:
            await channel.close()
        return found
