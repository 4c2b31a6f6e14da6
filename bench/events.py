"""Benchmark: events from a committed outbox row to a committed effect in a consumer's inbox.

    .venv/bin/python bench/events.py                       # embedded NATS JetStream
    .venv/bin/python bench/events.py --broker amqp://guest:guest@127.0.0.1:5672/

Two processes, as two services: this one commits events to its SQLite outbox and relays them;
a consumer process handles each in one transaction with its inbox record and an effect row.
Prints (1) the end-to-end rate for a burst of --count events and (2) commit-to-effect latency
p50/p99 at a fixed offered --rate for --seconds. Bounded in count and time; 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import CollectorRegistry
from souq.events import ProductCreated
from souq_chassis.db import Database, Transaction, open_database
from souq_chassis.logs import configure_logging
from souq_chassis.messaging.broker import connected, open_broker
from souq_chassis.messaging.consumer import Consumer, Subscription
from souq_chassis.messaging.envelope import Envelope
from souq_chassis.messaging.outbox import Outbox
from souq_chassis.messaging.tables import inbox_table, outbox_table
from souq_chassis.testing import EmbeddedNats
from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    func,
    insert,
    select,
)

metadata = MetaData()
outbox_table(metadata)
inbox_table(metadata)
effects = Table(
    "effects",
    metadata,
    Column("message_id", String(32), primary_key=True),
    Column("product_id", Integer, nullable=False),
    Column("latency_s", Float, nullable=False),
)
TOPOLOGY = {"bench": [ProductCreated.type_name()]}
STEADY_FROM = 10_000_000  # product ids of the steady phase


def database(path: Path) -> Database:
    engine = create_engine(f"sqlite:///{path}")
    metadata.create_all(engine)
    engine.dispose()
    return open_database(f"sqlite+aiosqlite:///{path}")


def event(n: int) -> ProductCreated:
    return ProductCreated.model_validate(
        {
            "product_id": n,
            "sku": f"BEN-{n:07d}",
            "name": f"Bench product {n}",
            "category": "kitchen",
            "price": {"amount_cents": 1000, "currency": "USD"},
        }
    )


async def consume(broker_url: str, db_path: Path) -> None:
    db = database(db_path)
    broker = open_broker(broker_url, client_name="bench-consumer")
    record = insert(effects)

    async def handle(tx: Transaction, event: ProductCreated, envelope: Envelope) -> None:
        latency = (datetime.now(UTC) - envelope.occurred_at).total_seconds()
        row = {"message_id": envelope.id, "product_id": event.product_id, "latency_s": latency}
        await tx.execute(record, row)

    consumer = Consumer(
        "bench", db, broker, [Subscription(ProductCreated, handle)], CollectorRegistry()
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with connected(broker, TOPOLOGY), consumer.running():
        await stop.wait()


async def wait_for_effects(db: Database, count: int, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await db.scalar(select(func.count()).select_from(effects)) >= count:
            return time.monotonic()
        await asyncio.sleep(0.01)
    raise TimeoutError(f"fewer than {count} effects after {timeout_s}s")


async def produce(broker_url: str, work: Path, count: int, rate: float, seconds: float) -> None:
    db = database(work / "producer.db")
    consumer_db = database(work / "consumer.db")
    broker = open_broker(broker_url, client_name="bench-producer")
    outbox = Outbox(db, broker, CollectorRegistry(), batch=500)
    consumer = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--role",
        "consumer",
        "--broker",
        broker_url,
        "--work",
        str(work),
    )
    try:
        async with connected(broker, TOPOLOGY), outbox.running():
            # Warm-up: connections, consumer, caches.
            async with db.transaction() as tx:
                for n in range(100):
                    await outbox.add(tx, event(n))
            await wait_for_effects(consumer_db, 100, 60)

            start = time.monotonic()
            for first in range(100, 100 + count, 100):
                async with db.transaction() as tx:
                    for n in range(first, first + 100):
                        await outbox.add(tx, event(n))
            committed = time.monotonic()
            while (await outbox.backlog())[0] > 0:  # noqa: ASYNC110 - polling the database
                await asyncio.sleep(0.01)
            relayed = time.monotonic()
            done = await wait_for_effects(consumer_db, 100 + count, 120)
            print(
                f"burst: {count} events committed in {committed - start:.2f}s, all published "
                f"(broker-confirmed) in {relayed - start:.2f}s, all effects in {done - start:.2f}s"
                f" -> {count / (done - start):,.0f} events/s end to end"
            )

            base = await consumer_db.scalar(select(func.count()).select_from(effects))
            total = int(rate * seconds)
            start = time.monotonic()
            for i in range(total):
                async with db.transaction() as tx:
                    await outbox.add(tx, event(STEADY_FROM + i))
                delay = start + (i + 1) / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await wait_for_effects(consumer_db, base + total, 60)
            steady = select(effects.c.latency_s).where(effects.c.product_id >= STEADY_FROM)
            latencies = sorted(r[0] for r in await consumer_db.all(steady))
            assert len(latencies) == total
            q = statistics.quantiles([x * 1000 for x in latencies], n=100)
            print(
                f"steady: {total} events at {rate:.0f}/s offered, one per transaction -> "
                f"commit-to-effect p50 {q[49]:.1f} ms, p99 {q[98]:.1f} ms, "
                f"max {max(latencies) * 1000:.1f} ms"
            )
            await broker.delete_everything(list(TOPOLOGY))
    finally:
        consumer.send_signal(signal.SIGTERM)
        await asyncio.wait_for(consumer.wait(), 30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--broker", default="", help="broker URL (default: an embedded NATS)")
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--role", default="producer", choices=["producer", "consumer"])
    parser.add_argument("--work", default="")
    args = parser.parse_args()
    # As a service is set up: warnings and errors only (a debug line per event would be the
    # benchmark's biggest cost).
    configure_logging(f"bench-{args.role}", "0", "WARNING")
    if args.role == "consumer":
        asyncio.run(consume(args.broker, Path(args.work) / "consumer.db"))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        namespace = f"bench{os.urandom(3).hex()}"
        if args.broker:
            url = f"{args.broker}?namespace={namespace}"
            print(f"broker: {args.broker} (namespace {namespace})")
            asyncio.run(produce(url, work, args.count, args.rate, args.seconds))
            return
        with EmbeddedNats(work / "nats") as nats:
            print(f"broker: embedded NATS JetStream {nats.address}")
            asyncio.run(produce(nats.url, work, args.count, args.rate, args.seconds))


if __name__ == "__main__":
    main()
