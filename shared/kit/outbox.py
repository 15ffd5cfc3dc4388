"""The relay: publishes what the event store committed, in store order, at least once.

One relay per store runs at a time, elected by a session advisory lock held
on its own connection: when that replica dies, its session ends, the lock is
freed and another replica's relay takes over.

An event the bus will not carry (bigger than MAX_MESSAGE_BYTES; the store refuses
those at append, so this is the second guard) is set aside, never retried for ever:
a row in `<schema>.relay_parked`, an error log, the `parked` count, and in its place
on the topic a small `relay.EventParked` stand-in at the same position, so consumers'
watermarks move past it (their inboxes record it as a dead letter) and the rest flows.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError

from shared.contracts.limits import MAX_MESSAGE_BYTES
from shared.kit import bus, db, faults, tracing
from shared.kit.db import Conn
from shared.kit.eventstore import EventStore
from shared.kit.logs import log

# What a producer or broker says of a record too big for it.
TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)


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
        # Events set aside since this relay started (also logged, and in relay_parked).
        self.parked = 0
        self._wake = asyncio.Event()
        # The topic's end offsets per partition, as last seen (they only ever grow), and
        # how many looks in a row have seen one lower.
        self._ends: dict[int, int] = {}
        self._dropped = 0
        self._lock_key = zlib.crc32(f"files.relay.{store.schema}.{topic}".encode())

    async def setup(self, conn: Conn) -> None:
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {self.store.schema}.relay_offsets (
                topic text PRIMARY KEY, position bigint NOT NULL);
            CREATE TABLE IF NOT EXISTS {self.store.schema}.relay_parked (
                topic text NOT NULL,
                position bigint NOT NULL,
                event_id uuid NOT NULL,
                stream_id text NOT NULL,
                type text NOT NULL,
                size integer NOT NULL,
                reason text NOT NULL,
                parked_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (topic, position))"""
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
            probe = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
            await probe.start()
            try:
                self.published = await self._start_position(conn, probe)
                log.info("relay.leading", topic=self.topic, position=self.published)
                await self._lead(conn, probe)
            finally:
                await probe.stop()
        finally:
            await conn.close()

    async def _lead(self, conn: Conn, probe: AIOKafkaConsumer) -> None:
        while True:
            self._wake.clear()
            # Before every batch: a batch sent to a broker that lost the earlier ones
            # would hide the loss from a leader started after it.
            if await self._broker_lost_messages(probe):
                await self._record(conn, 0)
            if not await self.publish_pending(conn):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=1.0)

    async def publish_pending(self, conn: Conn) -> int:
        rows = await self.store.read_wire_after(conn, self.published, self.batch)
        if not rows:
            return 0
        # Appends commit before their WAL is flushed (kit/eventstore.py): what the bus
        # carries must be durable, or a crash could lose an event consumers applied and
        # give its position to another. (Flushed already, mostly, when catching up.)
        await db.flush(conn, rows[0]["wal_at"])
        with tracing.publishing(self.topic, (r["traceparent"] for r in rows)) as carried:
            sent: list[asyncio.Future[Any]] = []
            parked: set[int] = set()
            keys = [r["stream_id"].encode() for r in rows]
            # The default partitioner's choice, made for the batch at once.
            partitions = bus.partitions_of(
                keys, sorted(await self.producer.partitions_for(self.topic))
            )
            for r, key, partition in zip(rows, keys, partitions, strict=True):
                value = r["wire"].encode()
                try:
                    # The producer measures the record against MAX_MESSAGE_BYTES here.
                    future = await self.producer.send(
                        self.topic,
                        value,
                        key=key,
                        partition=partition,
                        headers=bus.wire_headers(
                            r["type"],
                            r["correlation_id"],
                            carried.get(r["traceparent"], r["traceparent"]),
                        ),
                    )
                except TOO_LARGE as error:
                    parked.add(r["position"])
                    await self._park(conn, r, len(value), repr(error))
                    continue
                sent.append(future)
            try:
                await asyncio.gather(*sent)
            except TOO_LARGE:
                # The broker refused a batch (its limit is below ours): each record it
                # refused goes alone, or is set aside.
                results = await asyncio.gather(*sent, return_exceptions=True)
                went = [r for r in rows if r["position"] not in parked]
                for r, result in zip(went, results, strict=True):
                    if isinstance(result, TOO_LARGE):
                        await self._send_alone(conn, r, carried)
                    elif isinstance(result, BaseException):
                        raise result from None
        faults.strike(f"relay.{self.topic}")  # the chaos tests: dead before the checkpoint
        await self._record(conn, rows[-1]["position"])
        return len(rows)

    async def _record(self, conn: Conn, position: int) -> None:
        """How far the topic has the store's events. Set back to 0 when the broker lost
        them, at once: a leader that dies while publishing them again leaves the next
        one to go on with it, not to forget it."""
        self.published = position
        await conn.execute(
            f"""INSERT INTO {self.store.schema}.relay_offsets (topic, position) VALUES ($1, $2)
                ON CONFLICT (topic) DO UPDATE SET position = EXCLUDED.position""",
            self.topic,
            position,
        )

    async def _send_alone(
        self, conn: Conn, r: asyncpg.Record, carried: dict[str | None, str | None]
    ) -> None:
        value = r["wire"].encode()
        headers = bus.wire_headers(
            r["type"], r["correlation_id"], carried.get(r["traceparent"], r["traceparent"])
        )
        try:
            await self.producer.send_and_wait(
                self.topic, value, key=r["stream_id"].encode(), headers=headers
            )
        except TOO_LARGE as error:
            await self._park(conn, r, len(value), repr(error))

    async def _park(self, conn: Conn, r: asyncpg.Record, size: int, reason: str) -> None:
        """Set the event aside and publish its stand-in, which does fit."""
        envelope = orjson.loads(r["wire"])
        await conn.execute(
            f"""INSERT INTO {self.store.schema}.relay_parked
                (topic, position, event_id, stream_id, type, size, reason)
                VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING""",
            self.topic,
            r["position"],
            envelope["event_id"],
            r["stream_id"],
            r["type"],
            size,
            reason,
        )
        self.parked += 1
        log.error(
            "relay.parked",
            topic=self.topic,
            position=r["position"],
            event_id=envelope["event_id"],
            event_type=r["type"],
            size=size,
            limit=MAX_MESSAGE_BYTES,
            reason=reason,
        )
        stand_in = {
            **envelope,
            "type": bus.PARKED,
            "data": {"type": r["type"], "size": size, "reason": reason},
        }
        await (
            await self.producer.send(
                self.topic,
                orjson.dumps(stand_in),
                key=r["stream_id"].encode(),
                headers=bus.wire_headers(bus.PARKED, r["correlation_id"], None),
            )
        )

    async def _start_position(self, conn: Conn, probe: AIOKafkaConsumer) -> int:
        recorded: int = (
            await conn.fetchval(
                f"SELECT position FROM {self.store.schema}.relay_offsets WHERE topic = $1",
                self.topic,
            )
            or 0
        )
        await self._broker_lost_messages(probe)
        if recorded and not any(self._ends.values()):
            # The topic is empty although events were published: the broker lost its
            # messages (the embedded one keeps them in memory). Publish them all again;
            # the consumers' inboxes drop what they applied.
            log.warning("relay.republishing", topic=self.topic, recorded=recorded)
            await self._record(conn, 0)
            return 0
        return recorded

    async def _broker_lost_messages(self, probe: AIOKafkaConsumer) -> bool:
        """Whether a partition's end offset went down since the last look: only a broker
        that lost messages does that (the embedded one, started again, has none). Seen
        twice in a row before it is believed: a broker going away can answer oddly once,
        and a false alarm would publish everything again for nothing."""
        partitions = await self.producer.partitions_for(self.topic)
        ends = await probe.end_offsets([TopicPartition(self.topic, p) for p in partitions])
        now = {tp.partition: offset for tp, offset in ends.items()}
        if any(p in now and now[p] < seen for p, seen in self._ends.items()):
            self._dropped += 1
            if self._dropped < 2:
                return False  # the baseline stays; look again
            log.warning("relay.republishing", topic=self.topic, published=self.published)
            self._ends, self._dropped = now, 0
            return True
        self._dropped = 0
        self._ends = {**self._ends, **now}
        return False
