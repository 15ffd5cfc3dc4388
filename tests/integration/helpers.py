from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import ClassVar

from aiokafka import AIOKafkaProducer

from shared.contracts.envelope import Cause, Envelope, Event, new_envelope
from shared.kit import bus
from shared.kit.eventstore import EventStore
from shared.kit.inbox import Consumer
from shared.kit.outbox import Relay


class Happened(Event):
    type: ClassVar[str] = "test.Happened"
    n: int


CAUSE = Cause(actor="test", correlation_id="test")


@contextlib.asynccontextmanager
async def consuming(consumer: Consumer) -> AsyncIterator[None]:
    """The consumer running for the block, stopped (cancelled) after it."""
    running = asyncio.create_task(consumer.run())
    try:
        yield
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


def envelope(stream_id: str, version: int, n: int = 0) -> Envelope:
    return new_envelope(Happened(n=n), stream_id=stream_id, stream_version=version, cause=CAUSE)


def schema() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


async def relay_on_new_topic(
    database_url: str, kafka_bootstrap: str, partitions: int = 3
) -> tuple[EventStore, AIOKafkaProducer, Relay]:
    """A store of its own and its relay on a new topic, with a started producer (the
    caller stops it; the store's and relay's tables are the caller's to set up)."""
    store = EventStore(schema())
    topic = f"files.test.{uuid.uuid4().hex[:8]}"
    await bus.ensure_topics(kafka_bootstrap, partitions, [topic])
    producer = bus.producer(kafka_bootstrap, idempotence=False)
    await producer.start()
    return store, producer, Relay(store, database_url, producer, topic, kafka_bootstrap)
