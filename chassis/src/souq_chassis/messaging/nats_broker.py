"""NATS JetStream: one durable stream of events, a durable pull consumer per service, and a
dead-letter stream. Publisher confirms are JetStream acks; `Nats-Msg-Id` deduplicates a
message the relay publishes twice (a crash between publish and marking it sent).

Declaring checks first and changes only what is missing or differs, so a service whose user
may only read the streams' and consumers' settings starts on a topology the administrator
declared (`souq up` does); only the administrator may create, change or delete them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import nats
import structlog
from nats.js import api
from nats.js.errors import BadRequestError, NotFoundError

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

DEDUP_WINDOW_S = 600.0
# How long JetStream waits for a fetched message's ack before delivering it again: what a
# consumer's crash costs. Short, so a crash costs seconds; a slow batch keeps its messages by
# telling the server it is still at them (an in-progress ack) every PROGRESS_EVERY_S.
ACK_WAIT_S = 5.0
PROGRESS_EVERY_S = 1.0
log = structlog.get_logger("souq.broker")


def _user_of(url: str) -> str:
    return unquote(urlsplit(url).username or "")


def without_credentials(url: str) -> str:
    """The URL as it may be logged or shown: no user or password in it."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))


def inbox_prefix(user: str) -> str:
    """Replies to a user come to inboxes of its own (`_INBOX_catalog.…`), so permissions can
    keep other users from subscribing to them."""
    return f"_INBOX_{user}" if user else "_INBOX"


class TopologyNotDeclared(Exception):
    """A stream or consumer is missing or differs from ours, and this user may not declare it."""


class NatsBroker:
    def __init__(self, url: str, client_name: str = "souq", namespace: str = "") -> None:
        self._url = url  # may carry a user and password: never logged
        self.url = without_credentials(url)
        self._user = _user_of(url)
        self._name = client_name
        self._nc: Any = None
        self._js: Any = None
        self._closing = False
        self._ready = asyncio.Event()  # set once connected and declared
        self._denied = asyncio.Event()  # the server refused a JetStream API request of ours
        prefix = f"{namespace}." if namespace else ""
        self.stream = f"{namespace.upper()}_SOUQ_EVENTS" if namespace else "SOUQ_EVENTS"
        self.dlq_stream = f"{namespace.upper()}_SOUQ_DLQ" if namespace else "SOUQ_DLQ"
        self._events = f"{prefix}souq.events"
        self._dead = f"{prefix}souq.dlq"

    def _subject(self, message_type: str) -> str:
        return f"{self._events}.{message_type}"

    async def connect(self) -> None:
        self._nc = await with_backoff(
            lambda: nats.connect(
                self._url,
                name=self._name,
                inbox_prefix=inbox_prefix(self._user),
                connect_timeout=2,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            ),
            self.url,
        )
        self._js = self._nc.jetstream(timeout=5)
        # Until the administrator has declared them (souq up does as soon as NATS is ready).
        await with_backoff(self._ensure_streams, self.url)
        self._ready.set()

    async def _ensure_streams(self) -> None:
        await self._ensure_stream(self.stream, [f"{self._events}.>"])
        await self._ensure_stream(self.dlq_stream, [f"{self._dead}.>"])

    async def _on_error(self, error: Exception) -> None:
        text = str(error).lower()
        if "permissions violation" in text and "$js.api." in text:
            self._denied.set()
        log.warning("broker_error", url=self.url, error=str(error) or type(error).__name__)

    async def _on_disconnected(self) -> None:
        if not self._closing:
            log.warning("broker_disconnected", url=self.url)

    async def _on_reconnected(self) -> None:
        log.info("broker_reconnected", url=self.url)

    async def _ensure_stream(self, name: str, subjects: list[str]) -> None:
        config = api.StreamConfig(
            name=name,
            subjects=subjects,
            storage=api.StorageType.FILE,
            duplicate_window=DEDUP_WINDOW_S,
        )
        try:
            found = (await self._js.stream_info(name)).config
        except NotFoundError:
            await self._change(f"stream {name} is missing", self._js.add_stream(config))
            return
        if (
            sorted(found.subjects or []) != sorted(subjects)
            or found.storage != config.storage
            or found.duplicate_window != config.duplicate_window
            or found.republish is not None
            or found.subject_transform is not None
        ):
            await self._change(f"stream {name} differs", self._js.update_stream(config))

    async def _change(self, what: str, request: Awaitable[Any]) -> Any:
        """Make a JetStream API request that changes the topology; refused (this user may only
        read it) → TopologyNotDeclared at once, not after the request's timeout."""
        self._denied.clear()
        change = asyncio.ensure_future(request)
        denied = asyncio.create_task(self._denied.wait())
        try:
            await asyncio.wait({change, denied}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            denied.cancel()
        if change.done():
            return change.result()
        change.cancel()
        raise TopologyNotDeclared(
            f"{what}, and NATS user {self._user!r} may not declare it: the administrator "
            "declares the topology (souq up does, as souq-admin)"
        )

    async def close(self) -> None:
        self._closing = True
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None

    async def publish(self, messages: Sequence[Outgoing], timeout_s: float = 5.0) -> None:
        if not self._ready.is_set() or not self._nc.is_connected:
            raise BrokerUnavailable("not connected")
        futures = []
        try:
            for m in messages:
                headers = {"Nats-Msg-Id": m.id, "Souq-Type": m.type}
                futures.append(
                    await self._js.publish_async(self._subject(m.type), m.body, headers=headers)
                )
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*futures)
        except Exception as exc:
            for future in futures:
                future.cancel()
            raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def declare(self, subscriptions: Mapping[str, Sequence[str]]) -> None:
        for consumer, types in subscriptions.items():
            await self._declare(consumer, types)

    async def _declare(self, consumer: str, types: Sequence[str]) -> None:
        config = api.ConsumerConfig(
            durable_name=consumer,
            filter_subjects=[self._subject(t) for t in types],
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_wait=ACK_WAIT_S,
            max_ack_pending=1000,
        )
        try:
            found = (await self._js.consumer_info(self.stream, consumer)).config
        except NotFoundError:
            what = f"consumer {consumer} is missing"
            await self._change(what, self._js.add_consumer(self.stream, config))
            return
        filters = found.filter_subjects or ([found.filter_subject] if found.filter_subject else [])
        if (
            sorted(filters) == sorted(config.filter_subjects or [])
            and found.ack_policy == config.ack_policy
            and found.deliver_policy == config.deliver_policy
            and found.ack_wait == config.ack_wait
            and found.max_ack_pending == config.max_ack_pending
        ):
            return
        what = f"consumer {consumer} differs"
        try:
            # An existing durable consumer is updated in place (its ack wait, its filters), so
            # a store made by an older version gets the new settings and keeps its position.
            await self._change(what, self._js.add_consumer(self.stream, config))
        except BadRequestError:  # a change the server cannot update: start it over (inbox dedups)
            await self._change(what, self._js.delete_consumer(self.stream, consumer))
            await self._change(what, self._js.add_consumer(self.stream, config))

    async def consume(
        self, consumer: str, types: Sequence[str], handle: Handler, batch: int = 256
    ) -> None:
        await self._ready.wait()  # a service may start before its broker
        # The administrator declares it, maybe a moment after the streams: check until it has.
        await with_backoff(lambda: self._declare(consumer, types), self.url)
        subscription = await self._js.pull_subscribe_bind(durable=consumer, stream=self.stream)
        # nats-py's fetch, once it has to wait, returns when the batch is full or at expiry.
        # So once caught up (a short batch) ask for one message, which returns the moment it
        # comes; after a full batch ask for a full one, which returns at once with what waits.
        size = 1
        while True:
            try:
                messages = await subscription.fetch(size, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                size = 1
                continue
            except Exception as exc:  # disconnected: the client reconnects by itself
                log.warning("broker_fetch_failed", consumer=consumer, error=str(exc))
                await asyncio.sleep(0.25)
                continue
            size = batch if len(messages) >= size else 1
            deliveries = [Delivery(m.data, m.metadata.num_delivered) for m in messages]
            unsettled = list(messages)
            try:
                progress = asyncio.create_task(_in_progress(messages))
                try:
                    verdicts = await handle(deliveries)
                finally:
                    progress.cancel()
                for msg, verdict, delivery in zip(messages, verdicts, deliveries, strict=True):
                    try:
                        if isinstance(verdict, Ack):
                            await msg.ack()
                        elif isinstance(verdict, Retry):
                            await msg.nak(delay=verdict.delay_s)
                        else:
                            await self._dead_letter(consumer, msg, verdict.reason, delivery.attempt)
                            await msg.term()
                    except Exception as exc:  # not acked: it comes again; the inbox dedups it
                        log.warning("broker_ack_failed", consumer=consumer, error=str(exc))
                    unsettled.remove(msg)
            except BaseException:  # stopping (or failing) mid-batch: give them back at once
                await self._give_back(unsettled)
                raise

    async def _give_back(self, messages: Sequence[Any]) -> None:
        """Nak `messages` (no delay), so another consumer gets them now, not after the ack
        wait; what was handled of them comes again and the inbox dedups it."""
        with contextlib.suppress(Exception):
            for msg in messages:
                await msg.nak()
            await self._nc.flush(timeout=1)

    async def _dead_letter(self, consumer: str, msg: Any, reason: str, attempt: int) -> None:
        headers = dict(msg.headers or {})
        message_id = headers.get("Nats-Msg-Id", "")
        headers.update(
            {
                "Nats-Msg-Id": f"dead:{consumer}:{message_id}:{attempt}",
                "Souq-Id": message_id,
                "Souq-Consumer": consumer,
                "Souq-Error": reason[:1000].replace("\n", " "),
                "Souq-Attempts": str(attempt),
                "Souq-Subject": msg.subject,
            }
        )
        await self._js.publish(f"{self._dead}.{consumer}", msg.data, headers=headers)

    async def lag(self, consumer: str) -> int:
        info = await self._js.consumer_info(self.stream, consumer)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def destinations(self, consumers: Sequence[str]) -> list[Destination]:
        found = []
        for name in (self.stream, self.dlq_stream):
            info = await self._js.stream_info(name)
            found.append(Destination(name, int(info.state.messages), "stream"))
        for consumer in consumers:
            with contextlib.suppress(NotFoundError):
                pending = await self.lag(consumer)
                found.append(Destination(f"{self.stream}/{consumer}", pending, "pending"))
        return found

    async def delete_everything(self, consumers: Sequence[str]) -> None:
        """Remove this namespace's streams, consumers included (tests)."""
        for name in (self.stream, self.dlq_stream):
            with contextlib.suppress(NotFoundError):
                await self._js.delete_stream(name)

    async def _dead_messages(self, limit: int) -> list[tuple[int, Any]]:
        info = await self._js.stream_info(self.dlq_stream)
        found: list[tuple[int, Any]] = []
        seq = max(int(info.state.first_seq), int(info.state.last_seq) - limit * 4, 1)
        while seq <= info.state.last_seq and len(found) < limit:
            with contextlib.suppress(NotFoundError):
                found.append((seq, await self._js.get_msg(self.dlq_stream, seq)))
            seq += 1
        return found

    async def dead_letters(self, consumers: Sequence[str], limit: int = 100) -> list[DeadLetter]:
        letters = []
        for _, raw in await self._dead_messages(limit):
            h = raw.headers or {}
            letters.append(
                DeadLetter(
                    id=h.get("Souq-Id", ""),
                    type=h.get("Souq-Type", ""),
                    consumer=h.get("Souq-Consumer", ""),
                    error=h.get("Souq-Error", ""),
                    attempts=int(h.get("Souq-Attempts", "0")),
                    body=raw.data or b"",
                )
            )
        return letters

    async def replay(self, consumers: Sequence[str], message_id: str) -> bool:
        for seq, raw in await self._dead_messages(10_000):
            h = raw.headers or {}
            if h.get("Souq-Id") != message_id:
                continue
            headers = {"Nats-Msg-Id": f"{message_id}:replay:{seq}", "Souq-Type": h["Souq-Type"]}
            await self._js.publish(h["Souq-Subject"], raw.data, headers=headers)
            await self._js.delete_msg(self.dlq_stream, seq)
            return True
        return False


def service_permissions(
    user: str,
    publishes: Sequence[str],
    consumes: Sequence[str],
    checks: Sequence[str],
    namespace: str = "",
) -> dict[str, Any]:
    """nats-server permissions of a service's user: publish only message types under its
    own prefixes (`publishes`, e.g. `catalog` for `catalog.*`), fetch, ack and dead-letter
    only for its own consumers (`consumes`), read the settings of the streams and of the
    topology's consumers (`checks`) but never create, change or delete any (the administrator
    declares them); subscribe only to its own inboxes, so neither the events nor other users'
    replies can be read but through its own consumers."""
    names = NatsBroker("nats://", namespace=namespace)
    api, stream = "$JS.API", names.stream
    allow = [f"{names._events}.{prefix}.>" for prefix in publishes]
    allow.append(f"{api}.INFO")
    allow += [f"{api}.STREAM.INFO.{name}" for name in (names.stream, names.dlq_stream)]
    allow += [f"{api}.CONSUMER.INFO.{stream}.{consumer}" for consumer in checks]
    for consumer in consumes:
        allow += [
            f"{api}.CONSUMER.MSG.NEXT.{stream}.{consumer}",
            f"$JS.ACK.{stream}.{consumer}.>",
            f"{names._dead}.{consumer}",
        ]
    return {
        "publish": {"allow": allow},
        "subscribe": {"allow": [f"{inbox_prefix(user)}.>"]},
    }


async def _in_progress(messages: Sequence[Any]) -> None:
    """While a batch is being handled, tell the server every PROGRESS_EVERY_S that its
    messages are still being worked on, so their ack wait starts over."""
    while True:
        await asyncio.sleep(PROGRESS_EVERY_S)
        for msg in messages:
            with contextlib.suppress(Exception):
                await msg.in_progress()
