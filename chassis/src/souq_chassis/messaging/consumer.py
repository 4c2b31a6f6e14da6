"""Idempotent consumers: each message is handled in one transaction with an inbox record of its
id, so a redelivery has no second effect; it is acked only after that commit. A message that is
not valid goes to the dead letters at once; one that keeps failing, after `max_attempts`."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from time import perf_counter
from typing import Any, Generic, TypeVar

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from pydantic import ValidationError
from souq.events import Message
from sqlalchemy import MetaData, bindparam, insert, select

from souq_chassis.db import Database, Transaction
from souq_chassis.messaging.broker import Ack, Broker, Dead, Delivery, Retry, Verdict
from souq_chassis.messaging.envelope import Envelope, decode
from souq_chassis.messaging.tables import inbox_table

M = TypeVar("M", bound=Message)
log = structlog.get_logger("souq.consumer")
tracer = trace.get_tracer("souq.messaging")

_inbox = inbox_table(MetaData())
_SEEN = select(_inbox.c.message_id).where(
    _inbox.c.consumer == bindparam("consumer"),
    _inbox.c.message_id.in_(bindparam("ids", expanding=True)),
)
_RECORD = insert(_inbox)


@dataclass(frozen=True)
class Subscription(Generic[M]):
    """Handle messages of `model` with `handler(tx, message, envelope)` inside the transaction."""

    model: type[M]
    handler: Callable[[Transaction, M, Envelope], Awaitable[None]]


class ConsumerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.consumed = Counter(
            "messages_consumed_total",
            "Messages handled, duplicates included.",
            ["consumer", "type", "outcome"],
            registry=registry,
        )
        self.dead = Counter(
            "messages_dead_lettered_total",
            "Messages moved to the dead letters.",
            ["consumer", "type"],
            registry=registry,
        )
        self.batch = Histogram(
            "message_batch_seconds",
            "Handling time of one batch, its transaction included.",
            ["consumer"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
            registry=registry,
        )
        self.latency = Histogram(
            "message_end_to_end_seconds",
            "From the publisher's commit to this consumer's commit.",
            ["consumer", "type"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30),
            registry=registry,
        )
        self.lag = Gauge(
            "consumer_lag", "Messages waiting for this consumer.", ["consumer"], registry=registry
        )


def _refuse_future_times(envelope: Envelope, message: Message, latest: datetime) -> None:
    """A message may not claim a moment later than our clock allows (its time and any time
    field): one dated in the future would outrank every real one after it."""
    claims = {"time": envelope.occurred_at}
    claims |= {k: v for k, v in message if isinstance(v, datetime)}
    for name, at in claims.items():
        moment = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
        if moment > latest:
            raise ValueError(
                f"{name} {moment.isoformat()} lies in the future: later than this consumer's "
                f"clock allows ({latest.isoformat()}, its clock plus the tolerated skew)"
            )


class _HandlerFailed(Exception):
    """A handler failed in a batch without savepoints: run the batch again with them."""


class Consumer:
    def __init__(
        self,
        name: str,
        db: Database,
        broker: Broker,
        subscriptions: Sequence[Subscription[Any]],
        registry: CollectorRegistry,
        *,
        max_attempts: int = 5,
        backoff_s: float = 0.1,
        backoff_max_s: float = 5.0,
        max_clock_skew_s: float = 5.0,
    ) -> None:
        self.name = name
        self._db = db
        self._broker = broker
        self._subscriptions = {s.model.type_name(): s for s in subscriptions}
        self._metrics = ConsumerMetrics(registry)
        self.max_attempts = max_attempts
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._max_skew = timedelta(seconds=max_clock_skew_s)

    async def handle(self, deliveries: Sequence[Delivery]) -> list[Verdict]:
        """Verdicts for a batch, handled in one transaction: one inbox lookup, each message's
        effect in a savepoint (a failure undoes that message alone), one inbox insert."""
        verdicts: list[Verdict] = [Ack()] * len(deliveries)
        parsed: list[tuple[int, Envelope, Subscription[Any], Message]] = []
        latest = datetime.now(UTC) + self._max_skew
        for i, delivery in enumerate(deliveries):
            try:
                envelope = decode(delivery.body)
                subscription = self._subscriptions[envelope.type]
                message = subscription.model.model_validate(envelope.data)
                _refuse_future_times(envelope, message, latest)
                parsed.append((i, envelope, subscription, message))
            except (ValidationError, KeyError, ValueError) as exc:
                self._metrics.dead.labels(self.name, "invalid").inc()
                log.error("message_invalid", consumer=self.name, error=str(exc)[:500])
                verdicts[i] = Dead(f"invalid message: {exc}"[:1000])
        if not parsed:
            return verdicts
        started = perf_counter()
        try:
            # Fast path: the whole batch in one transaction. If a handler fails, that
            # transaction is undone and the batch runs again with a savepoint per message,
            # so the failure undoes its own message alone.
            try:
                handled = await self._transaction(deliveries, parsed, verdicts, isolate=False)
            except _HandlerFailed:
                handled = await self._transaction(deliveries, parsed, verdicts, isolate=True)
        except Exception as exc:  # the transaction itself failed: nothing of it happened
            log.warning("message_batch_failed", consumer=self.name, error=str(exc))
            for i, envelope, _, _ in parsed:
                if not isinstance(verdicts[i], Dead):
                    verdicts[i] = self._failed(envelope, deliveries[i].attempt, exc)
            return verdicts
        now = datetime.now(UTC)
        for _, envelope in handled:
            self._metrics.consumed.labels(self.name, envelope.type, "handled").inc()
            age = (now - envelope.occurred_at).total_seconds()
            self._metrics.latency.labels(self.name, envelope.type).observe(max(age, 0.0))
        self._metrics.batch.labels(self.name).observe(perf_counter() - started)
        return verdicts

    async def _transaction(
        self,
        deliveries: Sequence[Delivery],
        parsed: list[tuple[int, Envelope, Subscription[Any], Message]],
        verdicts: list[Verdict],
        *,
        isolate: bool,
    ) -> list[tuple[int, Envelope]]:
        """Handle the parsed messages in one transaction; what was handled. Without `isolate`,
        a handler failure raises _HandlerFailed (and the transaction rolls back)."""
        handled: list[tuple[int, Envelope]] = []
        async with self._db.transaction() as tx:
            ids = [envelope.id for _, envelope, _, _ in parsed]
            seen = {row[0] for row in await tx.all(_SEEN, {"consumer": self.name, "ids": ids})}
            for i, envelope, subscription, message in parsed:
                if envelope.id in seen:  # handled before: a redelivery
                    self._metrics.consumed.labels(self.name, envelope.type, "duplicate").inc()
                    continue
                seen.add(envelope.id)
                failure = await self._apply(tx, subscription, message, envelope, isolate)
                if failure is None:
                    handled.append((i, envelope))
                elif not isolate:
                    raise _HandlerFailed from failure
                else:
                    verdicts[i] = self._failed(envelope, deliveries[i].attempt, failure)
            if handled:
                now = datetime.now(UTC)
                rows = [
                    {
                        "consumer": self.name,
                        "message_id": envelope.id,
                        "handled_at": now,
                        "attempt": deliveries[i].attempt,
                    }
                    for i, envelope in handled
                ]
                await tx.execute(_RECORD, rows)
        return handled

    async def _apply(
        self,
        tx: Transaction,
        subscription: Subscription[Any],
        message: Message,
        envelope: Envelope,
        isolate: bool,
    ) -> Exception | None:
        """Run one handler (in a savepoint if `isolate`) as a child span of the publisher's."""
        token = otel_context.attach(extract(envelope.trace))
        try:
            with tracer.start_as_current_span(
                f"{envelope.type} process",
                kind=trace.SpanKind.CONSUMER,
                attributes={
                    "messaging.message.id": envelope.id,
                    "messaging.consumer.group.name": self.name,
                },
            ):
                try:
                    if isolate:
                        async with tx.savepoint():
                            await subscription.handler(tx, message, envelope)
                    else:
                        await subscription.handler(tx, message, envelope)
                except Exception as exc:
                    return exc
                log.debug("message_handled", message_id=envelope.id, type=envelope.type)
                return None
        finally:
            otel_context.detach(token)

    def _failed(self, envelope: Envelope, attempt: int, exc: Exception) -> Verdict:
        reason = f"{type(exc).__name__}: {exc}"
        kind = envelope.type
        if attempt >= self.max_attempts:
            self._metrics.dead.labels(self.name, kind).inc()
            self._metrics.consumed.labels(self.name, kind, "dead").inc()
            log.error(
                "message_dead", message_id=envelope.id, type=kind, attempt=attempt, error=reason
            )
            return Dead(reason)
        delay = min(self._backoff_s * 2 ** (attempt - 1), self._backoff_max_s)
        delay *= 0.5 + random.random()  # jitter
        self._metrics.consumed.labels(self.name, kind, "retry").inc()
        log.warning(
            "message_failed", message_id=envelope.id, type=kind, attempt=attempt, error=reason
        )
        return Retry(delay)

    async def _watch_lag(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                self._metrics.lag.labels(self.name).set(await self._broker.lag(self.name))
            await asyncio.sleep(5)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Consumer]:
        """Consume for the duration of the block (a service's lifespan)."""
        types = list(self._subscriptions)

        async def consume() -> None:
            while True:
                try:
                    await self._broker.consume(self.name, types, self.handle)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # e.g. not connected yet: start over shortly
                    log.warning("consumer_restarting", consumer=self.name, error=str(exc))
                    await asyncio.sleep(0.5)

        tasks = [asyncio.create_task(consume()), asyncio.create_task(self._watch_lag())]
        try:
            yield self
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
