"""Transactional outbox: messages commit with the state change that emits them; a relay
publishes them in commit order, in batches, right after each commit (and on a slow timer for
whatever a crash left behind), and marks them sent only once the broker confirmed.

The relay outlives any error (a broker outage, a dropped or locked database): it logs and
counts it, backs off with jitter and tries again, and is restarted should it ever end. The
backlog gauges are read on their own timer, so they tell the truth while the relay fails, and
readiness (`ready`) fails while messages wait and the relay has not got through for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
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
        self.errors = Counter(
            "outbox_relay_errors_total",
            "Failed relay passes (stage relay) and backlog reads or prunes, by error type.",
            ["stage", "error"],
            registry=registry,
        )
        self.healthy = Gauge(
            "outbox_relay_healthy",
            "1 if the relay's last pass got through, 0 if it failed.",
            registry=registry,
        )
        self.last_success = Gauge(
            "outbox_relay_last_success_timestamp_seconds",
            "When a relay pass last got through (Unix time).",
            registry=registry,
        )
        self.backlog_read = Gauge(
            "outbox_backlog_read_timestamp_seconds",
            "When outbox_backlog was last read from the database (Unix time); it keeps its "
            "last value while the database cannot be read.",
            registry=registry,
        )


class RelayStalled(Exception):
    """Messages wait in the outbox and the relay has not got through for a while."""


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
        backlog_every_s: float = 1.0,
        prune_every_s: float = 60.0,
        unready_after_s: float = 5.0,
        backoff_max_s: float = 2.0,
    ) -> None:
        self._db = db
        self._broker = broker
        self._metrics = OutboxMetrics(registry)
        self._batch = batch
        self._sweep_s = sweep_s
        self._keep_sent = keep_sent
        self._backlog_every_s = backlog_every_s
        self._prune_every_s = prune_every_s
        self._unready_after_s = unready_after_s
        self._backoff_max_s = backoff_max_s
        self._wake = asyncio.Event()
        # What readiness judges by: when a relay pass last got through, the error of the last
        # failed one, and the last backlog read (None: it could not be read since).
        self._last_success = time.monotonic()
        self._last_error = ""
        self._waiting: int | None = 0

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
        self._metrics.backlog_read.set(time.time())
        self._waiting = int(count)
        return int(count), age

    async def ready(self) -> None:
        """Readiness: raise RelayStalled while messages wait (or the backlog cannot be read)
        and no relay pass has got through for more than `unready_after_s`."""
        stalled_s = time.monotonic() - self._last_success
        if stalled_s <= self._unready_after_s or self._waiting == 0:
            return
        waiting = "unknown" if self._waiting is None else self._waiting
        raise RelayStalled(
            f"{waiting} waiting, none sent for {stalled_s:.0f} s: "
            f"{self._last_error or 'a relay pass still under way'}"
        )

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
        failures = 0
        while True:
            self._wake.clear()
            try:
                published = await self.relay_once()
            except Exception as exc:
                failures += 1
                self._relay_failed(exc, failures)
                delay = min(0.05 * 2 ** min(failures - 1, 16), self._backoff_max_s)
                await asyncio.sleep(delay * (0.5 + random.random()))  # jitter
                continue
            if failures:
                log.info("outbox_relay_recovered", failures=failures)
                failures = 0
            self._last_success = time.monotonic()
            self._last_error = ""
            self._metrics.healthy.set(1)
            self._metrics.last_success.set(time.time())
            if published < self._batch:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._sweep_s):
                        await self._wake.wait()

    def _relay_failed(self, exc: Exception, failures: int) -> None:
        error = _describe(exc)
        self._last_error = error
        self._metrics.healthy.set(0)
        self._metrics.errors.labels("relay", type(exc).__name__).inc()
        if isinstance(exc, BrokerUnavailable):
            self._metrics.publish_failures.inc()
            log.warning("outbox_publish_failed", error=error, failures=failures)
        else:  # the traceback once per streak: an unknown error needs it, a repeat does not
            log.error("outbox_relay_failed", error=error, failures=failures, exc_info=failures == 1)

    async def _housekeep(self) -> None:
        """Read the backlog every `backlog_every_s` and prune sent messages every
        `prune_every_s`, whatever the relay is doing."""
        last_prune = float("-inf")
        failing = {"backlog": False, "prune": False}

        async def attempt(stage: str, work: Callable[[], Awaitable[object]]) -> None:
            try:
                await work()
            except Exception as exc:
                if stage == "backlog":
                    self._waiting = None  # unknown: the gauge keeps its last value
                self._metrics.errors.labels(stage, type(exc).__name__).inc()
                if not failing[stage]:
                    log.error(f"outbox_{stage}_failed", error=_describe(exc))
                failing[stage] = True
            else:
                if failing[stage]:
                    log.info(f"outbox_{stage}_recovered")
                failing[stage] = False

        while True:
            await attempt("backlog", self.backlog)
            if time.monotonic() - last_prune > self._prune_every_s:
                last_prune = time.monotonic()
                await attempt("prune", self._prune)
            await asyncio.sleep(self._backlog_every_s)

    async def _prune(self) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(_PRUNE, {"before": datetime.now(UTC) - self._keep_sent})

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Outbox]:
        """Relay for the duration of the block (a service's lifespan)."""
        self._last_success = time.monotonic()
        tasks = [
            asyncio.create_task(_supervised("outbox-relay", self._relay), name="outbox-relay"),
            asyncio.create_task(
                _supervised("outbox-housekeeping", self._housekeep), name="outbox-housekeeping"
            ),
        ]
        try:
            yield self
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def _describe(exc: BaseException) -> str:
    """`Type: message` of the root cause (SQLAlchemy wraps the driver's error, which wraps
    the server's), first line only: short enough for a readiness reason."""
    root = exc
    while root.__cause__ is not None:
        root = root.__cause__
    message = str(root).strip().splitlines()
    return f"{type(root).__name__}: {message[0] if message else ''}"[:160]


async def _supervised(name: str, work: Callable[[], Awaitable[None]]) -> None:
    """Run `work` until cancelled; should it ever end (a bug, a stray CancelledError from a
    cancelled future), log it and start it again a moment later."""
    while True:
        try:
            await work()
            log.error("outbox_task_ended", task=name)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # we are being stopped
            log.error("outbox_task_ended", task=name, error="CancelledError", exc_info=True)
        except Exception as exc:
            log.error("outbox_task_ended", task=name, error=str(exc), exc_info=True)
        await asyncio.sleep(1.0)


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
