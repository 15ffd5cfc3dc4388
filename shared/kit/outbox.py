"""The relay: publishes what the event store committed, in store order, at least once.

One relay per store runs at a time, elected by a session advisory lock held
on its own connection: when that replica dies, its session ends, the lock is
freed and another replica's relay takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.kit import bus, db, tracing
from shared.kit.db import Conn
from shared.kit.eventstore import EventStore
from shared.kit.logs import log


class Relay:
    def __init__(
        self,
        store: EventStore,
        dsn: str,
        producer: AIOKafkaProducer,
        topic: str,
        bootstrap: str,
        batch: int = 2000,
    ) -> None:
        self.store = store
        self.dsn = dsn
        self.producer = producer
        self.topic = topic
        self.bootstrap = bootstrap
        self.batch = batch
        self.published = 0
        self._wake = asyncio.Event()
        self._lock_key = zlib.crc32(f"files.relay.{store.schema}.{topic}".encode())

    async def setup(self, conn: Conn) -> None:
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {self.store.schema}.relay_offsets (
                topic text PRIMARY KEY, position bigint NOT NULL)"""
        )

    async def run(self) -> None:
        conn = await db.connect(self.dsn)
        try:
            # Standby replicas retry once a second; the lock has no wake-up to wait on.
            while True:
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", self._lock_key):
                    break
                await asyncio.sleep(1.0)
            await conn.add_listener(self.store.channel, lambda *_: self._wake.set())
            self.published = await self._start_position(conn)
            log.info("relay.leading", topic=self.topic, position=self.published)
            while True:
                self._wake.clear()
                if not await self.publish_pending(conn):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=1.0)
        finally:
            await conn.close()

    async def publish_pending(self, conn: Conn) -> int:
        rows = await self.store.read_wire_after(conn, self.published, self.batch)
        if not rows:
            return 0
        with tracing.publishing(self.topic, (r["traceparent"] for r in rows)) as carried:
            sent = [
                await self.producer.send(
                    self.topic,
                    r["wire"].encode(),
                    key=r["stream_id"].encode(),
                    headers=bus.wire_headers(
                        r["type"],
                        r["correlation_id"],
                        carried.get(r["traceparent"], r["traceparent"]),
                    ),
                )
                for r in rows
            ]
            await asyncio.gather(*sent)
        self.published = rows[-1]["position"]
        await conn.execute(
            f"""INSERT INTO {self.store.schema}.relay_offsets (topic, position) VALUES ($1, $2)
                ON CONFLICT (topic) DO UPDATE SET position = EXCLUDED.position""",
            self.topic,
            self.published,
        )
        return len(rows)

    async def _start_position(self, conn: Conn) -> int:
        recorded: int = (
            await conn.fetchval(
                f"SELECT position FROM {self.store.schema}.relay_offsets WHERE topic = $1",
                self.topic,
            )
            or 0
        )
        if recorded and await self._topic_is_empty():
            # The broker lost its messages (the embedded one keeps them in memory):
            # publish everything again; consumers' inboxes drop what they applied.
            log.warning("relay.republishing", topic=self.topic, recorded=recorded)
            return 0
        return recorded

    async def _topic_is_empty(self) -> bool:
        probe = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await probe.start()
        try:
            partitions = await self.producer.partitions_for(self.topic)
            ends = await probe.end_offsets([TopicPartition(self.topic, p) for p in partitions])
            return all(offset == 0 for offset in ends.values())
        finally:
            await probe.stop()
