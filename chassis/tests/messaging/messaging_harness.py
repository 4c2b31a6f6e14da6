"""A producer and a consumer with their own SQLite databases, as two services would have.

Run as a program it is a consumer process (for tests that kill it):
    python harness.py BROKER_URL DB_PATH CONSUMER [--delay-s S] [--fail-sku SKU]
    (`--started FILE`: the handler creates FILE as it begins, so a test knows it holds messages)
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from prometheus_client import CollectorRegistry
from souq.events import ProductCreated
from souq_chassis.db import Database, Transaction, open_database
from souq_chassis.messaging.broker import Broker, connected, open_broker
from souq_chassis.messaging.consumer import Consumer, Subscription
from souq_chassis.messaging.envelope import Envelope
from souq_chassis.messaging.outbox import Outbox
from souq_chassis.messaging.tables import inbox_table, outbox_table
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, func, insert, select

metadata = MetaData()
outbox_table(metadata)
inbox_table(metadata)
# One row per handling: a second effect of one message would be a second row.
effects = Table(
    "effects",
    metadata,
    Column("n", Integer, primary_key=True, autoincrement=True),
    Column("message_id", String(32), nullable=False),
    Column("sku", String(40), nullable=False),
)
_EFFECT = insert(effects)
_COUNTS = select(effects.c.message_id, func.count()).group_by(effects.c.message_id)


def create_database(path: Path) -> Database:
    engine = create_engine(f"sqlite:///{path}")
    metadata.create_all(engine)
    engine.dispose()
    return open_database(f"sqlite+aiosqlite:///{path}")


def product(n: int, sku: str | None = None) -> ProductCreated:
    return ProductCreated.model_validate(
        {
            "product_id": n,
            "sku": sku or f"TST-{n:05d}",
            "name": f"Test product {n}",
            "category": "kitchen",
            "price": {"amount_cents": 100 + n, "currency": "USD"},
        }
    )


async def effect_counts(db: Database) -> dict[str, int]:
    return {row[0]: row[1] for row in await db.all(_COUNTS)}


def consumer(
    name: str,
    db: Database,
    broker: Broker,
    registry: CollectorRegistry,
    *,
    delay_s: float = 0.0,
    failing: set[str] | None = None,
    max_attempts: int = 5,
    started: Path | None = None,
) -> Consumer:
    async def record(tx: Transaction, event: ProductCreated, envelope: Envelope) -> None:
        if failing is not None and event.sku in failing:
            raise RuntimeError(f"cannot handle {event.sku}")
        if started is not None:
            await asyncio.to_thread(started.touch)
        if delay_s:
            await asyncio.sleep(delay_s)
        await tx.execute(_EFFECT, {"message_id": envelope.id, "sku": event.sku})

    return Consumer(
        name,
        db,
        broker,
        [Subscription(ProductCreated, record)],
        registry,
        max_attempts=max_attempts,
        backoff_s=0.05,
        backoff_max_s=0.2,
    )


async def produce(db: Database, outbox: Outbox, numbers: range, per_tx: int = 10) -> list[str]:
    """Commit one ProductCreated per number, `per_tx` to a transaction; their envelope ids."""
    ids = []
    items = list(numbers)
    for start in range(0, len(items), per_tx):
        async with db.transaction() as tx:
            for n in items[start : start + per_tx]:
                ids.append((await outbox.add(tx, product(n))).id)
    return ids


async def _main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("broker_url")
    parser.add_argument("db_path", type=Path)
    parser.add_argument("name")
    parser.add_argument("--delay-s", type=float, default=0.0)
    parser.add_argument("--started", type=Path, default=None)
    args = parser.parse_args()
    db = open_database(f"sqlite+aiosqlite:///{args.db_path}")
    broker = open_broker(args.broker_url)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    worker = consumer(
        args.name, db, broker, CollectorRegistry(), delay_s=args.delay_s, started=args.started
    )
    async with connected(broker, {args.name: [ProductCreated.type_name()]}), worker.running():
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(_main())
