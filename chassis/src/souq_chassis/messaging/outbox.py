"""Transactional outbox: messages commit with the state change that emits them; a relay
publishes them in commit order, in batches, right after each commit (and on a slow timer for
whatever a crash left behind), and marks them sent only once the broker confirmed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated

import structlog
from fastapi import Depends, FastAPI, Query
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from souq.events import Message
from sqlalchemy import MetaData, bindparam, delete, func, insert, select, update

from souq_chassis.auth import current_admin
from souq_chassis.db import Database, Transaction
from souq_chassis.messaging.broker import Broker, BrokerUnavailable, Outgoing
from souq_chassis.messaging.envelope import Envelope, encode, wrap
from souq_chassis.messaging.tables import outbox_table

log = structlog.get_logger("souq.outbox")
_outbox = outbox_table(MetaData())
_ADD = insert(_outbox)
_PENDING = (
    select(_outbox.c.seq, _outbox.c.id, _outbox.c.type, _outbox.c.body, _outbox.c.created_at)
    .where(_outbox.c.published_at.is_(None))
    .order_by(_outbox.c.seq)
    .limit(bindparam("limit"))
)
_MARK_SENT = (
    update(_outbox)
    .where(_outbox.c.seq.in_(bindparam("seqs", expanding=True)))
    .values(published_at=bindparam("now"))
)
_BACKLOG = select(func.count(), func.min(_outbox.c.created_at)).where(
    _outbox.c.published_at.is_(None)
)
_PRUNE = delete(_outbox).where(_outbox.c.published_at < bindparam("before"))
_RECENT = (
    select(_outbox.c.id, _outbox.c.type, _outbox.c.created_at, _outbox.c.published_at)
    .order_by(_outbox.c.seq.desc())
    .limit(bindparam("limit"))
)


class OutboxMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.published = Counter(
            "messages_published_total", "Messages the relay published.", ["type"], registry=registry
        )
        self.backlog = Gauge(
            "outbox_backlog", "Messages committed, not yet published.", registry=registry
        )
        self.oldest_age = Gauge(
            "outbox_oldest_age_seconds", "Age of the oldest unpublished message.", registry=registry
        )
        self.publish_failures = Counter(
            "outbox_publish_failures_total",
            "Batches the broker did not confirm.",
            registry=registry,
        )
        self.lag = Histogram(
            "outbox_commit_to_publish_seconds",
            "From commit to broker confirm.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30),
            registry=registry,
        )


class Outbox:
    """Add messages inside a transaction; a relay (`running()`) publishes them."""

    def __init__(
        self,
        db: Database,
        broker: Broker,
        registry: CollectorRegistry,
        *,
        batch: int = 500,
        sweep_s: float = 1.0,
        keep_sent: timedelta = timedelta(hours=1),
    ) -> None:
        self._db = db
        self._broker = broker
        self._metrics = OutboxMetrics(registry)
        self._batch = batch
        self._sweep_s = sweep_s
        self._keep_sent = keep_sent
        self._wake = asyncio.Event()

    async def add(
        self, tx: Transaction, message: Message, *, cause: Envelope | None = None
    ) -> Envelope:
        """Store `message` in the same transaction as the change it reports."""
        envelope = wrap(message, cause=cause)
        await tx.execute(
            _ADD,
            {
                "id": envelope.id,
                "type": envelope.type,
                "body": encode(envelope),
                "created_at": envelope.occurred_at,
            },
        )
        tx.after_commit(self._wake.set)
        return envelope

    async def recent(self, limit: int = 20) -> list[dict[str, object]]:
        rows = await self._db.all(_RECENT, {"limit": limit})
        return [dict(row._mapping) for row in rows]

    async def backlog(self) -> tuple[int, float]:
        """Unpublished messages and the age in seconds of the oldest."""
        count, oldest = (await self._db.one(_BACKLOG)) or (0, None)
        if oldest is not None and oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=UTC)
        age = (datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0
        self._metrics.backlog.set(count)
        self._metrics.oldest_age.set(age)
        return int(count), age

    async def relay_once(self) -> int:
        """Publish one batch of pending messages; how many were published."""
        rows = await self._db.all(_PENDING, {"limit": self._batch})
        if not rows:
            return 0
        await self._broker.publish([Outgoing(r.id, r.type, r.body) for r in rows])
        async with self._db.transaction() as tx:
            await tx.execute(_MARK_SENT, {"seqs": [r.seq for r in rows], "now": datetime.now(UTC)})
        now = datetime.now(UTC)
        for row in rows:
            self._metrics.published.labels(row.type).inc()
            created = (
                row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
            )
            self._metrics.lag.observe(max((now - created).total_seconds(), 0.0))
        return len(rows)

    async def _relay(self) -> None:
        backoff = 0.05
        last_housekeeping = 0.0
        while True:
            self._wake.clear()
            try:
                published = await self.relay_once()
                backoff = 0.05
            except BrokerUnavailable as exc:
                self._metrics.publish_failures.inc()
                log.warning("outbox_publish_failed", error=str(exc), retry_in_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            if time.monotonic() - last_housekeeping > 5:
                last_housekeeping = time.monotonic()
                await self.backlog()
                async with self._db.transaction() as tx:
                    await tx.execute(_PRUNE, {"before": datetime.now(UTC) - self._keep_sent})
            if published < self._batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._sweep_s)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Outbox]:
        """Relay for the duration of the block (a service's lifespan)."""
        task = asyncio.create_task(self._relay(), name="outbox-relay")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def include_admin(app: FastAPI, outbox: Outbox) -> None:
    """GET /v1/admin/outbox: backlog and recent messages, for administrators (`souq events`
    reads it); the app must have `install_auth`."""

    @app.get("/v1/admin/outbox", tags=["messaging admin"], dependencies=[Depends(current_admin)])
    async def outbox_status(limit: Annotated[int, Query(ge=1, le=200)] = 20) -> dict[str, object]:
        backlog, age = await outbox.backlog()
        return {
            "backlog": backlog,
            "oldest_age_s": round(age, 3),
            "recent": await outbox.recent(limit),
        }
