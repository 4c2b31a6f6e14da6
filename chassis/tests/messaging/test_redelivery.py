"""What a consumer had fetched and not acked when it died comes again within seconds, not after
JetStream's default ack wait of 30 s: the ack wait is short, slow handlers keep their messages
with progress acks, and a consumer that is stopped gives its messages back at once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import messaging_harness as harness
import pytest
from prometheus_client import CollectorRegistry
from souq.events import ProductCreated
from souq_chassis.messaging.broker import Broker, connected, open_broker
from souq_chassis.messaging.nats_broker import ACK_WAIT_S, NatsBroker
from souq_chassis.messaging.outbox import Outbox

HARNESS = Path(harness.__file__)
NAME = "redelivered"
REDELIVERY_BOUND_S = 10.0


async def existing_topology(broker: Broker) -> None:
    """The consumer's queue, or its durable consumer as the previous version made it (ack
    wait 30 s), as an existing data directory has it."""
    if not isinstance(broker, NatsBroker):
        await broker.declare({NAME: [ProductCreated.type_name()]})
        return
    from nats.js import api

    config = api.ConsumerConfig(
        durable_name=NAME,
        filter_subjects=[f"{broker._events}.{ProductCreated.type_name()}"],
        ack_policy=api.AckPolicy.EXPLICIT,
        deliver_policy=api.DeliverPolicy.ALL,
        ack_wait=30,
        max_ack_pending=1000,
    )
    await broker._js.add_consumer(broker.stream, config)


async def wait_for(path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await asyncio.to_thread(path.exists):
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {path}"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "stopped"])
async def test_messages_a_dead_consumer_held_come_again_within_seconds(
    broker_url: str, tmp_path: Path, stop: signal.Signals
) -> None:
    producer_db = harness.create_database(tmp_path / "producer.db")
    consumer_path, replica_path = tmp_path / "consumer.db", tmp_path / "replica.db"
    harness.create_database(consumer_path)
    # The replica has a database of its own: the held message's transaction keeps SQLite's
    # write lock until its process dies.
    replica_db = harness.create_database(replica_path)
    started = tmp_path / "started"
    topology = {NAME: [ProductCreated.type_name()]}
    publisher, admin = open_broker(broker_url), open_broker(broker_url)
    outbox = Outbox(producer_db, publisher, CollectorRegistry())

    def start_consumer(path: Path, *options: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, str(HARNESS), broker_url, str(path), NAME, *options]
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    await admin.connect()
    await existing_topology(admin)
    # A handler that takes two minutes: the consumer holds what it fetched, unacked.
    process = start_consumer(consumer_path, "--delay-s", "120", "--started", str(started))
    replica: subprocess.Popen[bytes] | None = None
    try:
        async with connected(publisher, topology), outbox.running():
            ids = await harness.produce(producer_db, outbox, range(20), per_tx=20)
            await wait_for(started, 60)
            if isinstance(admin, NatsBroker):
                # Longer than the ack wait: a slow handler keeps its message (progress acks).
                await asyncio.sleep(ACK_WAIT_S + 2)
                info = await admin._js.consumer_info(admin.stream, NAME)
                assert info.config.ack_wait == ACK_WAIT_S, "the old consumer was not updated"
                assert info.num_ack_pending >= 1, "the consumer holds no message"
                assert info.num_redelivered == 0, "a live, slow handler lost its message"

            # A second consumer (a replica) takes whatever the first does not hold.
            replica = start_consumer(replica_path)

            async def handled() -> int:
                return len(await harness.effect_counts(replica_db))

            # Under way once nothing changed for 3 s (RabbitMQ's prefetch may leave it none).
            deadline, last, steady_since = time.monotonic() + 60, -1, time.monotonic()
            while time.monotonic() - steady_since < 3:
                assert time.monotonic() < deadline, "the replica never settled"
                if (now := await handled()) != last:
                    last, steady_since = now, time.monotonic()
                await asyncio.sleep(0.1)
            held = len(ids) - last
            assert held >= 1, "the first consumer holds nothing: nothing to prove"

            stopped_at = time.monotonic()
            process.send_signal(stop)
            deadline = stopped_at + 60
            while await handled() < len(ids):
                assert time.monotonic() < deadline, "the held messages never came again"
                await asyncio.sleep(0.05)
            redelivered_in_s = time.monotonic() - stopped_at
            print(f"\n{stop.name}: {held} held message(s) handled {redelivered_in_s:.2f} s later")
            assert redelivered_in_s < REDELIVERY_BOUND_S, (
                f"{stop.name}: the held messages came again after {redelivered_in_s:.1f} s"
            )
    finally:
        for running in (process, replica):
            if running is not None:
                running.terminate()
                running.wait(30)
        await admin.delete_everything([NAME])
        await admin.close()
    counts = await harness.effect_counts(replica_db)
    assert set(counts) == set(ids)
    assert set(counts.values()) == {1}, "a message had a second effect"
