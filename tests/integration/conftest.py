"""What the integration tests of the consumer share: a schema with an effects table,
its topic, and a producer to send on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from shared.contracts.envelope import Envelope
from shared.kit import bus
from shared.kit.inbox import Consumer, Handler, Inbox
from tests.integration.helpers import envelope, schema


@dataclass
class World:
    """A consumer's schema with an effects table, its topic, and a producer to send on it."""

    schema: str
    topic: str
    inbox: Inbox
    producer: AIOKafkaProducer
    pool: asyncpg.Pool
    bootstrap: str

    def consumer(self, handle: Handler, kind: type[Consumer] = Consumer, **more: Any) -> Any:
        """A consumer of the world's topic into its inbox (`kind`, a test's subclass)."""
        return kind(
            pool=self.pool,
            inbox=self.inbox,
            topics=[self.topic],
            handle=handle,
            bootstrap=self.bootstrap,
            dead_letters=self.producer,
            **more,
        )

    async def record(self, conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        """What a test's handler does: a row an event in the effects table."""
        for e in events:
            await conn.execute(
                f"INSERT INTO {self.schema}.effects VALUES ($1, $2)", e.event_id, e.data["n"]
            )

    async def send(self, n: int) -> None:
        sent = envelope(f"s-{n}", 1, n=n).model_copy(update={"source": self.schema, "position": n})
        await self.producer.send_and_wait(self.topic, bus.encode(sent), key=f"s-{n}".encode())


@pytest.fixture
async def world(pool: asyncpg.Pool, kafka_bootstrap: str) -> AsyncIterator[World]:
    s = schema()
    topic = f"files.{s}"
    await bus.ensure_topics(kafka_bootstrap, 1, [topic])
    inbox = Inbox(s, f"consumer-{s}")
    async with pool.acquire() as conn:
        await inbox.setup(conn)
        await conn.execute(f"CREATE TABLE {s}.effects (event_id uuid, n int)")
    producer = bus.producer(kafka_bootstrap, idempotence=False)
    await producer.start()
    yield World(s, topic, inbox, producer, pool, kafka_bootstrap)
    await producer.stop()
