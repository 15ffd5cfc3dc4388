"""Events bigger than the bus carries: refused at append with a named error; one already
in a store (recorded before the guard) is set aside by the relay while the rest flows,
and consumers record its stand-in as a dead letter and move on."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from typing import ClassVar

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from shared.contracts.envelope import Envelope, Event, new_envelope
from shared.contracts.limits import MAX_EVENT_BYTES, MAX_MESSAGE_BYTES
from shared.kit import bus
from shared.kit.eventstore import COPY_FROM, EventStore, EventTooLarge
from shared.kit.inbox import Consumer, Inbox
from shared.kit.outbox import Relay
from shared.kit.retry import Policy
from tests.conftest import eventually
from tests.integration.helpers import CAUSE, envelope, schema


class Listed(Event):
    type: ClassVar[str] = "test.Listed"
    ids: list[str]


def listing(stream: str, ids: int) -> Envelope:
    event = Listed(ids=[str(uuid.UUID(int=i)) for i in range(ids)])
    return new_envelope(event, stream_id=stream, stream_version=1, cause=CAUSE)


@pytest.fixture
async def store(pool: asyncpg.Pool) -> EventStore:
    s = EventStore(schema())
    async with pool.acquire() as conn:
        await s.setup(conn)
    return s


@pytest.mark.parametrize("company", [0, COPY_FROM])
async def test_an_event_too_big_for_the_bus_is_refused_at_append(
    pool: asyncpg.Pool, store: EventStore, company: int
) -> None:
    """Alone or among a COPY-sized batch: EventTooLarge, and nothing of it is written."""
    fits = listing("fits", 10_000)  # 390 KB: under the limit
    too_big = listing("too-big", 20_000)
    others = [envelope(f"other-{n}", 1) for n in range(company)]
    async with pool.acquire() as conn, conn.transaction():
        await store.append(conn, [fits])
    with pytest.raises(EventTooLarge) as refused:
        async with pool.acquire() as conn, conn.transaction():
            await store.append(conn, [*others, too_big])
    assert refused.value.event_type == "test.Listed" and refused.value.stream_id == "too-big"
    assert refused.value.size > MAX_EVENT_BYTES == refused.value.limit
    assert [e.stream_id for e in await store.read_after(pool, 0)] == ["fits"]
    assert await store.head(pool) == 1


async def test_the_relay_sets_aside_what_it_cannot_publish_and_the_rest_flows(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, store: EventStore
) -> None:
    s = store.schema
    topic = f"files.{s}"
    await bus.ensure_topics(kafka_bootstrap, 1, [topic])
    async with pool.acquire() as conn, conn.transaction():
        await store.append(conn, [envelope("before", 1, n=1)])
    # An event recorded before the store refused such events: 2 MiB of JSON.
    huge = listing("huge", 55_000).model_copy(update={"data": {"ids": ["x" * 40] * 55_000}})
    await pool.execute(
        f"""INSERT INTO {s}.events (position, event_id, stream_id, stream_version, type,
                                     schema_version, data, metadata, occurred_at)
            VALUES (2, $1, 'huge', 1, 'test.Listed', 1, $2,
                    '{{"actor": "test", "correlation_id": "test"}}', now())""",
        huge.event_id,
        huge.data,
    )
    await pool.execute(f"UPDATE {s}.head SET position = 2")
    async with pool.acquire() as conn, conn.transaction():
        await store.append(conn, [envelope("after", 1, n=3)])

    producer = bus.producer(kafka_bootstrap, idempotence=False)
    await producer.start()
    relay = Relay(store, database_url, producer, topic, kafka_bootstrap)
    inbox = Inbox(s, f"consumer-{s}")
    applied: list[str] = []

    async def handle(conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        applied.extend(e.stream_id for e in events)

    consumer = Consumer(
        pool=pool,
        inbox=inbox,
        topics=[topic],
        handle=handle,
        bootstrap=kafka_bootstrap,
        dead_letters=producer,
        policy=Policy(first_s=0.01, cap_s=0.1, poison_tries=2),
    )
    async with pool.acquire() as conn:
        await relay.setup(conn)
        await inbox.setup(conn)
    tasks = [asyncio.create_task(relay.run()), asyncio.create_task(consumer.run())]
    try:

        async def consumer_passed_all() -> bool:
            return (await inbox.watermarks(pool)).get(s) == 3

        await eventually(consumer_passed_all, within=30, what="the consumer past all three")
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await producer.stop()
    assert applied == ["before", "after"]
    assert relay.parked == 1
    parked = await pool.fetchrow(f"SELECT * FROM {s}.relay_parked")
    assert (parked["position"], parked["type"], parked["event_id"]) == (
        2,
        "test.Listed",
        huge.event_id,
    )
    assert parked["size"] > MAX_MESSAGE_BYTES
    dead = await pool.fetchrow(f"SELECT * FROM {s}.dead_letters")
    assert dead["event_id"] == huge.event_id and dead["type"] == "relay.EventParked"
    assert "set it aside" in dead["error"] and "test.Listed" in dead["error"]

    # On the topic: the event before, the stand-in at position 2, the event after.
    reader = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await reader.start()
    seen: list[Envelope] = []
    try:

        async def three() -> bool:
            batch = await reader.getmany(timeout_ms=200)
            seen.extend(bus.decode(m.value) for msgs in batch.values() for m in msgs)
            return len(seen) >= 3

        await eventually(three, within=20, what="three messages on the topic")
    finally:
        await reader.stop()
    assert [(e.position, e.type) for e in seen] == [
        (1, "test.Happened"),
        (2, "relay.EventParked"),
        (3, "test.Happened"),
    ]


async def test_topics_are_created_with_the_bus_limit(kafka_bootstrap: str) -> None:
    """A record of MAX_MESSAGE_BYTES goes; the producer refuses a bigger one."""
    topic = f"files.limit.{uuid.uuid4().hex[:8]}"
    await bus.ensure_topics(kafka_bootstrap, 1, [topic])
    producer = bus.producer(kafka_bootstrap, idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"x" * (MAX_MESSAGE_BYTES - 200), key=b"k")
        with pytest.raises(Exception, match="larger than the maximum request size"):
            await producer.send_and_wait(topic, b"x" * MAX_MESSAGE_BYTES, key=b"k")
    finally:
        await producer.stop()
