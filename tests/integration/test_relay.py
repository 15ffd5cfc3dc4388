"""The outbox relay against the real broker: nothing skipped, per-stream order kept."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer

from shared.kit import bus, db
from tests.conftest import eventually
from tests.integration.helpers import envelope, relay_on_new_topic


async def test_relay_publishes_every_event_of_200_concurrent_transactions_in_stream_order(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str
) -> None:
    store, producer, relay = await relay_on_new_topic(database_url, kafka_bootstrap)
    topic = relay.topic
    async with pool.acquire() as conn:
        await store.setup(conn)
        await relay.setup(conn)
    running = asyncio.create_task(relay.run())

    streams = [f"stream-{i % 20}" for i in range(200)]
    versions: dict[str, int] = defaultdict(int)
    lock = asyncio.Lock()

    async def transaction(i: int) -> None:
        stream = streams[i]
        async with pool.acquire() as conn, conn.transaction():
            async with lock:  # take the next version of the stream, as a decider would
                versions[stream] += 1
                version = versions[stream]
            # The store lock serialises appends; version order follows acquisition.
            await store.append(conn, [envelope(stream, version, i)])

    # Appends of one stream must arrive in version order for the unique key; send
    # them per stream in sequence, across streams concurrently.
    async def stream_writer(name: str) -> None:
        for i, s in enumerate(streams):
            if s == name:
                await transaction(i)

    await asyncio.gather(*(stream_writer(f"stream-{k}") for k in range(20)))

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=f"check-{uuid.uuid4().hex[:6]}",
    )
    await consumer.start()
    seen: list = []
    try:

        async def all_arrived() -> bool:
            batch = await consumer.getmany(timeout_ms=200)
            seen.extend(bus.decode(m.value) for msgs in batch.values() for m in msgs)
            return len({e.event_id for e in seen}) >= 200

        await eventually(all_arrived, within=20, what="200 events on the topic")
    finally:
        await consumer.stop()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await producer.stop()

    assert sorted({e.position for e in seen}) == list(range(1, 201))
    # What travels is the stored envelope, field for field.
    stored = {e.event_id: e for e in await store.read_after(pool, 0, 1000)}
    assert all(stored[e.event_id] == e for e in seen)
    per_stream: dict[str, list[int]] = defaultdict(list)
    for e in seen:
        per_stream[e.stream_id].append(e.stream_version)
    for stream, got in per_stream.items():
        assert got == sorted(got), f"{stream} out of order: {got}"
        assert got == list(range(1, len(got) + 1))


async def test_the_relay_sends_only_events_whose_commit_is_durable(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str
) -> None:
    """Appends commit asynchronously and are flushed by their own transaction's end, but
    the relay may read them in between: it flushes the WAL before it sends. Seen from the
    producer: at every send, the WAL is flushed past the append's commit (committed here
    asynchronously and never flushed by the writer, as in that gap)."""
    store, producer, relay = await relay_on_new_topic(database_url, kafka_bootstrap)
    writer, reader = await db.connect(database_url), await db.connect(database_url)
    flushed_at_send: list[int] = []
    send = producer.send

    async def observed_send(*args: Any, **kwargs: Any) -> Any:
        flushed_at_send.append(await pool.fetchval("SELECT pg_current_wal_flush_lsn()"))
        return await send(*args, **kwargs)

    producer.send = observed_send  # type: ignore[method-assign]
    try:
        await store.setup(writer)
        await relay.setup(writer)
        for version in range(1, 11):
            async with writer.transaction():
                await writer.execute("SET LOCAL synchronous_commit = off")
                await store.append(writer, [envelope("relayed", version)])
            committed = await writer.fetchval("SELECT pg_current_wal_insert_lsn()")
            flushed_at_send.clear()
            assert await relay.publish_pending(reader) == 1
            assert flushed_at_send and min(flushed_at_send) >= committed, f"round {version}"
    finally:
        await writer.close()
        await reader.close()
        await producer.stop()
