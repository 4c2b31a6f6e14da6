"""The outbox relay outlives faults that are not the broker's (a locked SQLite file, a
PostgreSQL that turned read-only and dropped its connections): it logs and counts them, the
backlog gauge shows what is stuck, readiness fails while it is stuck and recovers, and what is
committed after the fault is published without a restart."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
import messaging_harness as harness
import pytest
import structlog
from prometheus_client import CollectorRegistry
from souq_chassis.app import create_app
from souq_chassis.db import Database, ServerDatabase, open_database
from souq_chassis.messaging import outbox as outbox_module
from souq_chassis.messaging.broker import Broker, Outgoing, connected, open_broker
from souq_chassis.messaging.outbox import Outbox
from souq_chassis.metrics import Metrics
from souq_chassis.testing import EmbeddedNats, reachable, serving_listeners
from sqlalchemy import event
from sqlalchemy.ext.asyncio import create_async_engine

TOPOLOGY = {"outage": ["catalog.ProductCreated.v1"]}
POSTGRES = ("127.0.0.1", 5432)
PRODUCER = "souq-test-producer"  # application_name of the connections the fault spares


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s}s: {what}")


@dataclass
class Relay:
    """A producer's outbox and relay, a consumer of what it publishes, and the producer's
    detailed /readyz (the internal listener) served by the chassis app with the outbox's
    readiness check."""

    outbox: Outbox
    registry: CollectorRegistry
    consumer_db: Database
    http: aiohttp.ClientSession
    logs: list[dict[str, Any]]

    async def readiness(self) -> tuple[int, dict[str, Any]]:
        async with self.http.get("/readyz") as reply:
            return reply.status, await reply.json(content_type=None)

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.registry.get_sample_value(name, labels or {}) or 0.0

    def relay_errors(self) -> float:
        families = self.registry.collect()
        return sum(
            s.value
            for family in families
            if family.name == "outbox_relay_errors"
            for s in family.samples
            if s.name == "outbox_relay_errors_total" and s.labels["stage"] == "relay"
        )

    async def handled(self, ids: list[str]) -> bool:
        return set(ids) <= set(await harness.effect_counts(self.consumer_db))


@pytest.fixture
def broker_url(embedded_nats: EmbeddedNats) -> str:
    return f"{embedded_nats.url}?namespace=t{os.urandom(4).hex()}"


def relay_running(
    broker_url: str, producer_db: Database, consumer_db: Database, monkeypatch: pytest.MonkeyPatch
) -> AbstractAsyncContextManager[Relay]:
    """The relay of `producer_db` publishing to a consumer on `consumer_db`, for the block."""

    @asynccontextmanager
    async def run() -> AsyncIterator[Relay]:
        registry = CollectorRegistry()
        publisher, receiver = open_broker(broker_url), open_broker(broker_url)
        outbox = Outbox(producer_db, publisher, registry)
        worker = harness.consumer("outage", consumer_db, receiver, CollectorRegistry())
        app = create_app(
            title="relay",
            version="0",
            metrics=Metrics(registry),
            readiness={"outbox": outbox.ready},
        )
        # A logger of its own, so an earlier test's cached logging setup does not hide it.
        monkeypatch.setattr(outbox_module, "log", structlog.get_logger("souq.outbox"))
        with structlog.testing.capture_logs() as logs:
            async with (
                connected(publisher, TOPOLOGY),
                connected(receiver, TOPOLOGY),
                outbox.running(),
                worker.running(),
                serving_listeners(app) as (_, internal_url),
                aiohttp.ClientSession(
                    internal_url, timeout=aiohttp.ClientTimeout(total=30)
                ) as http,
            ):
                try:
                    yield Relay(outbox, registry, consumer_db, http, logs)
                finally:
                    await publisher.delete_everything(list(TOPOLOGY))

    return run()


async def prove_relay_survives(
    relay: Relay,
    producer_db: Database,
    start_fault: Callable[[], Awaitable[list[str]]],
    clear_fault: Callable[[], Awaitable[None]],
    error_text: str,
) -> None:
    """Events before, during (stuck) and after a fault all arrive; on the way the relay
    logged and counted the error, the backlog showed the stuck rows and readiness failed
    and came back."""
    before = await harness.produce(producer_db, relay.outbox, range(0, 10))
    await eventually(lambda: relay.handled(before), 30, "the events before the fault")
    assert (await relay.readiness())[0] == 200

    stuck = await start_fault()
    assert stuck, "the fault left no message stuck: nothing to prove"

    async def unready() -> bool:
        status, body = await relay.readiness()
        return status == 503 and error_text in body.get("checks", {}).get("outbox", "")

    await eventually(unready, 90, f"readiness fails with the relay's error ({error_text})")
    status, body = await relay.readiness()
    assert status == 503, body
    assert body["checks"]["outbox"].startswith("failed: RelayStalled"), body
    assert relay.sample("outbox_backlog") >= len(stuck), "the backlog gauge hides stuck rows"
    assert relay.sample("outbox_relay_healthy") == 0
    assert relay.relay_errors() >= 1, "the relay's errors are not counted"
    failures = [e for e in relay.logs if e["event"] == "outbox_relay_failed"]
    assert any(error_text in e["error"] for e in failures), relay.logs
    assert {e["log_level"] for e in failures} == {"error"}

    await clear_fault()
    after = await harness.produce(producer_db, relay.outbox, range(20, 30))
    await eventually(
        lambda: relay.handled(before + stuck + after), 60, "every event after the fault cleared"
    )

    async def ready() -> bool:
        return (await relay.readiness())[0] == 200

    await eventually(ready, 30, "readiness back once the relay got through")
    assert relay.sample("outbox_relay_healthy") == 1
    counts = await harness.effect_counts(relay.consumer_db)
    assert set(counts.values()) == {1}, "an event had a second effect"


async def test_a_relay_survives_a_locked_sqlite_database(
    broker_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    producer_path = tmp_path / "producer.db"
    producer_db = harness.create_database(producer_path)
    consumer_db = harness.create_database(tmp_path / "consumer.db")
    locker = sqlite3.connect(producer_path, isolation_level=None, timeout=30)

    async def start_fault() -> list[str]:
        # Commit and lock with no await in between (SQLite runs inline on this thread): the
        # relay is woken by the commit but cannot run before the lock is held.
        ids = await harness.produce(producer_db, relay.outbox, range(10, 20))
        locker.execute("BEGIN EXCLUSIVE")  # readers go on (WAL), writers get "locked"
        (waiting,) = locker.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        assert waiting[0] == len(ids), "the relay got through before the lock"
        return ids

    async def clear_fault() -> None:
        locker.execute("COMMIT")

    try:
        async with relay_running(broker_url, producer_db, consumer_db, monkeypatch) as relay:
            await prove_relay_survives(
                relay, producer_db, start_fault, clear_fault, "database is locked"
            )
    finally:
        locker.close()


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A database of this test's own on the machine's PostgreSQL, dropped at the end."""
    if not reachable(*POSTGRES):
        pytest.skip("postgresql: nothing listens on 127.0.0.1:5432 (CI has it)")
    import asyncpg

    name = f"souq_t{os.urandom(4).hex()}"
    admin = await asyncpg.connect(user="postgres", host=POSTGRES[0], port=POSTGRES[1])
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = f"postgresql+asyncpg://postgres@{POSTGRES[0]}:{POSTGRES[1]}/{name}"
        engine = create_async_engine(url)
        async with engine.begin() as connection:
            await connection.run_sync(harness.metadata.create_all)
        await engine.dispose()
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def producer_database(url: str) -> ServerDatabase:
    """Another replica of the producer, on connections the fault spares (still writable)."""
    db = ServerDatabase(url, pool_size=2)

    @event.listens_for(db.engine.sync_engine, "connect")
    def spared(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.run_async(
            lambda c: c.execute(
                f"SET application_name = '{PRODUCER}'; SET default_transaction_read_only = off"
            )
        )

    return db


async def test_a_relay_survives_postgresql_dropping_its_connections(
    broker_url: str, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncpg

    database = postgres_url.rsplit("/", 1)[1]
    relay_db = open_database(postgres_url)
    producer_db = producer_database(postgres_url)
    consumer_db = harness.create_database(tmp_path / "consumer.db")
    admin = await asyncpg.connect(user="postgres", host=POSTGRES[0], port=POSTGRES[1])
    terminate = """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                   WHERE datname = $1 AND application_name <> $2"""

    async def start_fault() -> list[str]:
        # A failover as the relay sees it: its connections are cut, the new ones are to a
        # read-only server. Reads (and the backlog) go on, marking messages sent fails.
        await admin.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
        assert await admin.fetchval(terminate, database, PRODUCER) >= 1
        return await harness.produce(producer_db, relay.outbox, range(10, 20))

    async def clear_fault() -> None:
        await admin.execute(f'ALTER DATABASE "{database}" RESET default_transaction_read_only')
        await admin.fetchval(terminate, database, PRODUCER)  # back to a writable primary

    try:
        async with relay_running(broker_url, relay_db, consumer_db, monkeypatch) as relay:
            await prove_relay_survives(
                relay, producer_db, start_fault, clear_fault, "read-only transaction"
            )
    finally:
        await admin.close()
        await relay_db.dispose()
        await producer_db.dispose()


class StrayCancellation:
    """The real broker, but its first publish raises CancelledError though nobody cancelled
    the relay (as awaiting a future that something else cancelled does)."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self.url = broker.url
        self.raised = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._broker, name)

    async def publish(self, messages: Sequence[Outgoing], timeout_s: float = 5.0) -> None:
        if not self.raised:
            self.raised = True
            raise asyncio.CancelledError
        await self._broker.publish(messages, timeout_s)


async def test_a_relay_that_ends_is_started_again(broker_url: str, tmp_path: Path) -> None:
    producer_db = harness.create_database(tmp_path / "producer.db")
    consumer_db = harness.create_database(tmp_path / "consumer.db")
    real, receiver = open_broker(broker_url), open_broker(broker_url)
    publisher = StrayCancellation(real)
    outbox = Outbox(producer_db, cast(Broker, publisher), CollectorRegistry())
    worker = harness.consumer("outage", consumer_db, receiver, CollectorRegistry())
    async with connected(real, TOPOLOGY), connected(receiver, TOPOLOGY):
        async with outbox.running(), worker.running():
            ids = await harness.produce(producer_db, outbox, range(0, 10))

            async def handled() -> bool:
                return set(ids) <= set(await harness.effect_counts(consumer_db))

            await eventually(handled, 30, "the events after the relay ended once")
        assert publisher.raised
        await real.delete_everything(list(TOPOLOGY))
