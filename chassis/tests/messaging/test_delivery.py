"""Outbox → broker → consumer → inbox, on every broker: arrival, exactly one effect, dead
letters and replay, and trace context across the broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import messaging_harness as harness
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from souq_chassis.messaging.broker import Broker, Outgoing
from souq_chassis.messaging.envelope import encode, new_id, wrap
from souq_chassis.messaging.outbox import Outbox

BrokerFactory = Callable[[], Awaitable[Broker]]


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s: {what}")


async def test_every_committed_message_arrives_and_has_exactly_one_effect(
    brokers: BrokerFactory, tmp_path: Path
) -> None:
    producer_db = harness.create_database(tmp_path / "producer.db")
    consumer_db = harness.create_database(tmp_path / "consumer.db")
    outbox = Outbox(producer_db, await brokers(), CollectorRegistry())
    worker = harness.consumer("inventory", consumer_db, await brokers(), CollectorRegistry())
    async with outbox.running(), worker.running():
        ids = await harness.produce(producer_db, outbox, range(300))

        async def all_arrived() -> bool:
            return len(await harness.effect_counts(consumer_db)) >= len(ids)

        await eventually(all_arrived, 30, "every message handled")
    counts = await harness.effect_counts(consumer_db)
    assert set(counts) == set(ids)
    assert set(counts.values()) == {1}
    assert (await outbox.backlog())[0] == 0


async def test_a_redelivered_message_has_no_second_effect(
    brokers: BrokerFactory, tmp_path: Path
) -> None:
    consumer_db = harness.create_database(tmp_path / "consumer.db")
    broker = await brokers()
    worker = harness.consumer("inventory", consumer_db, broker, CollectorRegistry())
    envelope = wrap(harness.product(1))
    body = encode(envelope)
    async with worker.running():
        # The same message twice, as a broker redelivers after a lost ack (a distinct
        # broker id each time, so the broker's own deduplication does not hide it).
        await broker.publish([Outgoing(new_id(), envelope.type, body)])
        await broker.publish([Outgoing(new_id(), envelope.type, body)])
        later = wrap(harness.product(2))
        await broker.publish([Outgoing(later.id, later.type, encode(later))])

        async def later_one_handled() -> bool:
            return later.id in await harness.effect_counts(consumer_db)

        await eventually(later_one_handled, 20, "the message after the duplicates")
    assert await harness.effect_counts(consumer_db) == {envelope.id: 1, later.id: 1}


async def test_an_invalid_message_is_dead_lettered_at_once_and_blocks_nothing(
    brokers: BrokerFactory, tmp_path: Path
) -> None:
    consumer_db = harness.create_database(tmp_path / "consumer.db")
    broker = await brokers()
    worker = harness.consumer("inventory", consumer_db, broker, CollectorRegistry())
    good = wrap(harness.product(5))
    garbage = Outgoing(new_id(), good.type, b'{"this": "is not an envelope"}')
    async with worker.running():
        await broker.publish([garbage, Outgoing(good.id, good.type, encode(good))])

        async def good_one_handled() -> bool:
            return good.id in await harness.effect_counts(consumer_db)

        await eventually(good_one_handled, 20, "the valid message behind the invalid one")

        async def dead_lettered() -> bool:
            return len(await broker.dead_letters(["inventory"])) == 1

        await eventually(dead_lettered, 10, "the invalid message in the dead letters")
    [letter] = await broker.dead_letters(["inventory"])
    assert letter.attempts == 1 and "invalid message" in letter.error
    assert letter.consumer == "inventory" and letter.body == garbage.body


async def test_a_poison_message_is_dead_lettered_after_n_tries_and_replay_delivers_it_once(
    brokers: BrokerFactory, tmp_path: Path
) -> None:
    consumer_db = harness.create_database(tmp_path / "consumer.db")
    producer_db = harness.create_database(tmp_path / "producer.db")
    broker = await brokers()
    failing = {"TST-00002"}
    worker = harness.consumer(
        "poisoned", consumer_db, broker, CollectorRegistry(), failing=failing, max_attempts=3
    )
    outbox = Outbox(producer_db, await brokers(), CollectorRegistry())
    async with outbox.running(), worker.running():
        ids = await harness.produce(producer_db, outbox, range(1, 6), per_tx=5)
        poison_id = ids[1]

        async def others_handled() -> bool:
            return set(await harness.effect_counts(consumer_db)) == set(ids) - {poison_id}

        await eventually(others_handled, 20, "the messages around the poison one")

        async def dead_lettered() -> bool:
            return any(d.id == poison_id for d in await broker.dead_letters(["poisoned"]))

        await eventually(dead_lettered, 20, "the poison message in the dead letters")
        [letter] = [d for d in await broker.dead_letters(["poisoned"]) if d.id == poison_id]
        assert letter.attempts == 3
        assert "cannot handle TST-00002" in letter.error

        failing.clear()  # the bug is fixed; replay it
        assert await broker.replay(["poisoned"], poison_id)
        assert not await broker.replay(["poisoned"], "no-such-id")

        async def replayed() -> bool:
            return poison_id in await harness.effect_counts(consumer_db)

        await eventually(replayed, 20, "the replayed message handled")
        await asyncio.sleep(0.3)  # room for a second delivery, if there were one
    counts = await harness.effect_counts(consumer_db)
    assert counts[poison_id] == 1 and set(counts.values()) == {1}
    assert not any(d.id == poison_id for d in await broker.dead_letters(["poisoned"]))


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


async def test_the_consumer_span_is_a_child_of_the_publishing_span(
    brokers: BrokerFactory, tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    producer_db = harness.create_database(tmp_path / "producer.db")
    consumer_db = harness.create_database(tmp_path / "consumer.db")
    outbox = Outbox(producer_db, await brokers(), CollectorRegistry())
    worker = harness.consumer("traced", consumer_db, await brokers(), CollectorRegistry())
    tracer = trace.get_tracer("test")
    async with outbox.running(), worker.running():
        with tracer.start_as_current_span("create product") as publishing:
            [message_id] = await harness.produce(producer_db, outbox, range(1), per_tx=1)

        async def handled() -> bool:
            return message_id in await harness.effect_counts(consumer_db)

        await eventually(handled, 20, "the traced message handled")
    [consuming] = [
        s
        for s in spans.get_finished_spans()
        if s.kind == trace.SpanKind.CONSUMER
        and s.attributes.get("messaging.message.id") == message_id
    ]
    assert consuming.parent is not None
    assert consuming.context.trace_id == publishing.get_span_context().trace_id
    assert consuming.parent.span_id == publishing.get_span_context().span_id
