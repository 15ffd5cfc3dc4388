"""The relay: publishes what the event store committed, in store order, at least once.

One relay per store runs at a time, elected by a session advisory lock held
on its own connection: when that replica dies, its session ends, the lock is
freed and another replica's relay takes over.

An event the bus will not carry (bigger than MAX_MESSAGE_BYTES; the store refuses
those at append, so this is the second guard) is set aside, never retried for ever:
a row in `<schema>.relay_parked`, an error log, the `parked` count, and in its place
on the topic a small `relay.EventParked` stand-in at the same position, so consumers'
watermarks move past it (their inboxes record it as a dead letter) and the rest flows.

A broker that lost its messages (the embedded one keeps them in memory) gets them all
again, from the first. Its partitions start again at offset 0, while a consumer that lived
through the restart fetches from its old offset: what the new log holds below that offset
it would never read. So before publishing again, the relay fills each partition up to
the end offset it had reached before the loss with fillers (`bus.FILLER`: no value, which
consumers pass over), and every event published again lands past any consumer's offset.
The ends reached are kept with the relay's position, for a relay that starts after the
loss.

A loss is concluded only from what the broker states: a partition's end, read, below an
end it had reached (acknowledged, listed or read before), or one of our records placed
below it. A slow broker is not one that lost its messages: an answer that is late or
missing concludes nothing (publishing everything again is safe for consumers, but it loads
a machine exactly when it is overloaded). Each republishing logs why (`relay.republishing`:
per partition, the end the broker stated and the end it had reached).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError
from aiokafka.structs import RecordMetadata

from shared.contracts.limits import MAX_MESSAGE_BYTES
from shared.kit import bus, db, faults, tracing
from shared.kit.db import Conn
from shared.kit.eventstore import EventStore
from shared.kit.logs import log

# What a producer or broker says of a record too big for it.
TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)
FILLER = bus.FILLER.encode()
# Fillers in flight at once when a partition is padded after a loss.
FILL_SLICE = 10_000
# How long reading a partition's last batch may take (_last_offsets).
LAST_BATCH_WITHIN_S = 10.0


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
        # The topic's end offsets per partition, as last listed (growing, from a broker
        # that lost nothing). One listed lower is a suspicion, settled by reading the ends
        # (`_broker_lost_messages`); while a read has not come, nothing is sent.
        self._ends: dict[int, int] = {}
        self._suspect = False
        # The highest end offset each partition reached, as the broker stated it to us
        # (an ack, a listing, a read; a look can precede the last batch): what fillers pad
        # up to after a loss, and what a partition's end read is held against.
        self._reached: dict[int, int] = {}
        # The ends reached before the batch being sent: one of its records landing below
        # them means the broker lost records (`_landed`).
        self._floor: dict[int, int] = {}
        # Why the broker is taken to have lost records, by partition (what the
        # `relay.republishing` log says); empty while none is seen.
        self._lost: dict[int, dict[str, int | str]] = {}
        self._lock_key = zlib.crc32(f"files.relay.{store.schema}.{topic}".encode())

    async def setup(self, conn: Conn) -> None:
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {self.store.schema}.relay_offsets (
                topic text PRIMARY KEY, position bigint NOT NULL);
            ALTER TABLE {self.store.schema}.relay_offsets
                ADD COLUMN IF NOT EXISTS ends jsonb NOT NULL DEFAULT '{{}}';
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
            if self._lost:
                await self._publish_again(conn, probe)
            # Before every batch is sent, the broker's ends are looked at: a batch sent to
            # a broker that lost the earlier ones would hide the loss from a leader started
            # after it. The look (a broker round trip) goes on while the batch is read and
            # its WAL flushed (database round trips): one after the other, they were both
            # part of every hop's latency.
            suspect = self._suspect
            looking = asyncio.ensure_future(self._broker_lost_messages(probe))
            try:
                # While a loss is suspected nothing is sent: no batch is read for nothing.
                rows = [] if suspect else await self._pending(conn)
            except BaseException:
                looking.cancel()
                with contextlib.suppress(BaseException):
                    await looking
                raise
            if await looking:
                await self._publish_again(conn, probe)
                continue  # the rows read are sent again from the first: read them again
            if suspect or self._suspect:
                # An end went down and its read did not come: look again before sending
                # (or, the suspicion settled, read the batch now).
                continue
            if not rows or not await self._send(conn, rows):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=1.0)

    async def publish_pending(self, conn: Conn) -> int:
        rows = await self._pending(conn)
        return await self._send(conn, rows) if rows else 0

    async def _pending(self, conn: Conn) -> list[asyncpg.Record]:
        """The next batch to publish, its WAL flushed."""
        rows = await self.store.read_wire_after(conn, self.published, self.batch)
        if rows:
            # Appends commit before their WAL is flushed (kit/eventstore.py): what the
            # bus carries must be durable, or a crash could lose an event consumers
            # applied and give its position to another. (Flushed already, mostly, when
            # catching up.)
            await db.flush(conn, rows[0]["wal_at"])
        return rows

    async def _send(self, conn: Conn, rows: list[asyncpg.Record]) -> int:
        self._floor = dict(self._reached)
        with tracing.publishing(self.topic, (r["traceparent"] for r in rows)) as carried:
            sent: list[asyncio.Future[Any]] = []
            parked: set[int] = set()
            stand_ins: list[RecordMetadata] = []
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
                    stand_ins.append(await self._park(conn, r, len(value), repr(error)))
                    continue
                sent.append(future)
            # Every record that went counts toward the ends, even when others failed.
            results = await asyncio.gather(*sent, return_exceptions=True)
            self._placed([*stand_ins, *(r for r in results if not isinstance(r, BaseException))])
            for result in results:
                if isinstance(result, BaseException) and not isinstance(result, TOO_LARGE):
                    raise result
            # The broker refused records (its limit is below ours): each goes alone, or
            # is set aside.
            went = [r for r in rows if r["position"] not in parked]
            for r, result in zip(went, results, strict=True):
                if isinstance(result, TOO_LARGE):
                    await self._send_alone(conn, r, carried)
        if self._lost:
            return len(rows)  # not recorded: everything goes again (_publish_again)
        faults.strike(f"relay.{self.topic}")  # the chaos tests: dead before the checkpoint
        await self._record(conn, rows[-1]["position"])
        return len(rows)

    def _placed(self, written: list[RecordMetadata]) -> None:
        """Where the broker placed records of ours (`_landed`). A send whose answer came
        after the producer's timeout goes again, and a broker that already has it may
        answer DuplicateSequenceNumber: aiokafka gives that batch's records offsets from
        -1 on (placed; where, not told). A partition with such a record has no placements
        to go by this time."""
        untold = {w.partition for w in written if w.offset < 0}
        for w in written:
            if w.partition not in untold:
                self._landed(w)

    def _landed(self, written: RecordMetadata) -> None:
        """One of our records is at this offset. Below an end reached before its batch,
        the broker lost records: only the leading relay writes to its topic, and a
        partition's offsets never go back (this catches a loss the looks at the ends
        missed, such as one the new log regrew past between two looks). The records of
        a batch may answer in any order (a stand-in is sent while the batch is)."""
        floor = self._floor.get(written.partition, 0)
        if written.offset < floor:
            seen = self._lost.get(written.partition)
            if seen is None or written.offset < int(seen["end"]):
                self._lost[written.partition] = {
                    "how": "a record placed below the end",
                    "end": written.offset,
                    "reached": floor,
                }
        elif written.offset >= self._reached.get(written.partition, 0):
            self._reached[written.partition] = written.offset + 1

    async def _record(self, conn: Conn, position: int) -> None:
        """How far the topic has the store's events. Set back to 0 when the broker lost
        them, at once: a leader that dies while publishing them again leaves the next
        one to go on with it, not to forget it."""
        self.published = position
        # A checkpoint past 0 commits asynchronously (no WAL flush a batch sent): lost in
        # a crash, the relay sends again from the one before, with the ends recorded with
        # it (consumers' inboxes drop what they applied). Back to 0 it is durable at once.
        await conn.execute(
            f"""INSERT INTO {self.store.schema}.relay_offsets (topic, position, ends)
                SELECT $1::text, $2::bigint, $3::jsonb
                WHERE CASE WHEN $2::bigint = 0 THEN true
                           ELSE set_config('synchronous_commit', 'off', true) IS NOT NULL END
                ON CONFLICT (topic) DO UPDATE
                SET position = EXCLUDED.position, ends = EXCLUDED.ends""",
            self.topic,
            position,
            {str(p): end for p, end in self._reached.items()},
        )

    async def _publish_again(self, conn: Conn, probe: AIOKafkaConsumer) -> None:
        """After the broker lost messages: fillers up to the ends reached before, then
        every event again from the first (the consumers' inboxes drop what they applied).
        Position 0 is recorded first, with the ends to fill up to: a relay that dies while
        filling leaves the next one to find the partitions short of them, fill the rest
        and publish everything again; one that dies after, to publish everything again."""
        lost, self._lost = self._lost, {}
        log.warning(
            "relay.republishing",
            topic=self.topic,
            published=self.published,
            lost={str(p): why for p, why in sorted(lost.items())},
        )
        await self._record(conn, 0)
        partitions = sorted(await self.producer.partitions_for(self.topic))
        # A partition whose end was not read in time is filled from its listed end (below
        # the true one with the embedded broker): fillers more than needed, which consumers
        # pass over, rather than an event landing below a consumer's offset.
        ends, read = await self._last_offsets(probe, partitions)
        short = {
            p: self._reached.get(p, 0) - end
            for p, end in ends.items()
            if self._reached.get(p, 0) > end
        }
        if short:
            log.warning(
                "relay.filling",
                topic=self.topic,
                fillers=sum(short.values()),
                unread=sorted(set(ends) - read),
            )
        for partition, count in short.items():
            # In slices: a filler costs a future until it is sent.
            for start in range(0, count, FILL_SLICE):
                filled = [
                    await self.producer.send(
                        self.topic,
                        None,
                        key=FILLER,
                        partition=partition,
                        headers=[("type", FILLER)],
                    )
                    for _ in range(min(FILL_SLICE, count - start))
                ]
                await asyncio.gather(*filled)
        self._ends = await self._listed_ends(probe, partitions)
        self._reached = {
            p: max(ends.get(p, 0), self._reached.get(p, 0)) for p in {*ends, *self._reached}
        }

    async def _listed_ends(self, probe: AIOKafkaConsumer, partitions: list[int]) -> dict[int, int]:
        ends = await probe.end_offsets([TopicPartition(self.topic, p) for p in partitions])
        return {tp.partition: offset for tp, offset in ends.items()}

    async def _last_offsets(
        self, probe: AIOKafkaConsumer, partitions: list[int]
    ) -> tuple[dict[int, int], set[int]]:
        """Each partition's end offset, and the partitions whose end was read. Listed ends
        are the broker's cheap answer, and the embedded broker (tansu) lists one past the
        first offset of its last batch, not of its last record (Kafka lists the latter):
        so the last batch is fetched, and the end read is past its last record (or the
        fetch's high watermark, if higher). A partition is read only from records, or,
        listed empty (its first offset is its end: 0 on a new log, above 0 once Kafka's
        retention removed every record), from a fetch's high watermark at that end (the
        broker's word, twice, that it holds nothing past it). A fetch that answered
        without records at a partition listed with some gave a high watermark below the
        true end, twice under load in the CI of 2026-12-06 (taken for the end, a loss
        concluded at a leader's start: a takeover's, then a restart's), whether tansu
        gives it as it lists or answers an empty fetch with 0.
        Where no such answer comes within the deadline, the listed end stands (lower than
        the true one), not read."""
        listed = await self._listed_ends(probe, partitions)
        ends = dict(listed)
        read: set[int] = set()
        pending = {TopicPartition(self.topic, p) for p in listed}
        if not pending:
            return ends, read
        # An empty log above 0 has no last batch to fetch (below its first offset is out
        # of range): unread, a lower listing of it was suspected for ever.
        firsts = await probe.beginning_offsets(list(pending))
        empty = {
            tp.partition
            for tp, first in firsts.items()
            if first == listed[tp.partition] or listed[tp.partition] == 0
        }
        probe.assign(list(pending))
        try:
            for tp in pending:
                end = listed[tp.partition]
                probe.seek(tp, end if tp.partition in empty else max(end - 1, 0))
            deadline = time.monotonic() + LAST_BATCH_WITHIN_S
            while pending and time.monotonic() < deadline:
                fetched = await probe.getmany(*pending, timeout_ms=500)
                for tp in list(pending):
                    # Known once a fetch of this assignment has answered, records or not.
                    highwater = probe.highwater(tp)
                    records = fetched.get(tp)
                    if not records and (
                        tp.partition not in empty or highwater != listed[tp.partition]
                    ):
                        continue
                    last = records[-1].offset + 1 if records else 0
                    ends[tp.partition] = max(highwater or 0, last)
                    read.add(tp.partition)
                    pending.discard(tp)
        finally:
            probe.unsubscribe()
        return ends, read

    def _short(self, ends: dict[int, int], read: set[int]) -> dict[int, dict[str, int | str]]:
        """The partitions whose end, read, is below the end they had reached: the broker
        lost records (only it can state an end below one it stated before)."""
        return {
            p: {"how": "an end read below the end", "end": ends[p], "reached": reached}
            for p, reached in sorted(self._reached.items())
            if p in read and ends[p] < reached
        }

    async def _send_alone(
        self, conn: Conn, r: asyncpg.Record, carried: dict[str | None, str | None]
    ) -> None:
        value = r["wire"].encode()
        headers = bus.wire_headers(
            r["type"], r["correlation_id"], carried.get(r["traceparent"], r["traceparent"])
        )
        try:
            written = await self.producer.send_and_wait(
                self.topic, value, key=r["stream_id"].encode(), headers=headers
            )
        except TOO_LARGE as error:
            written = await self._park(conn, r, len(value), repr(error))
        self._placed([written])

    async def _park(self, conn: Conn, r: asyncpg.Record, size: int, reason: str) -> RecordMetadata:
        """Set the event aside and publish its stand-in, which does fit: where it went."""
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
        written: RecordMetadata = await (
            await self.producer.send(
                self.topic,
                orjson.dumps(stand_in),
                key=r["stream_id"].encode(),
                headers=bus.wire_headers(bus.PARKED, r["correlation_id"], None),
            )
        )
        return written

    async def _start_position(self, conn: Conn, probe: AIOKafkaConsumer) -> int:
        row = await conn.fetchrow(
            f"SELECT position, ends FROM {self.store.schema}.relay_offsets WHERE topic = $1",
            self.topic,
        )
        recorded: int = row["position"] if row else 0
        self.published = recorded
        self._reached = {int(p): end for p, end in (row["ends"] if row else {}).items()}
        if await self._broker_lost_messages(probe):
            await self._publish_again(conn, probe)
            return 0
        # A partition short of the end it reached, or (recorded before ends were) an
        # empty topic although events were published: the broker lost messages.
        # (Where a partition's end was not read in time, or not listed at all, no loss is
        # concluded: should there be one, our next send lands below the end reached,
        # `_landed`.)
        listed = sorted(self._ends)
        ends, read = await self._last_offsets(probe, listed)
        self._lost.update(self._short(ends, read))
        every_one_read_empty = listed and read == set(listed) and not any(ends.values())
        if recorded and not self._reached and every_one_read_empty:
            self._lost.update(
                {
                    p: {"how": "every partition empty", "end": 0, "published": recorded}
                    for p in listed
                }
            )
        if self._lost:
            await self._publish_again(conn, probe)
            return 0
        return recorded

    async def _broker_lost_messages(self, probe: AIOKafkaConsumer) -> bool:
        """Whether the broker lost records (then `_lost` says where). The ends are listed
        before every batch (one round trip); one listed lower than seen before (only a
        broker that lost messages lists that, or one answering oddly) is a suspicion,
        settled by reading those partitions' ends (`_short`). An answer that is late or
        missing concludes nothing: the suspicion stands, nothing is sent meanwhile, and
        the next look reads again."""
        partitions = sorted(await self.producer.partitions_for(self.topic))
        now = await self._listed_ends(probe, partitions)
        lower = sorted(p for p, seen in self._ends.items() if p in now and now[p] < seen)
        if lower:
            ends, read = await self._last_offsets(probe, lower)
            if short := self._short(ends, read):
                self._lost.update(short)
                self._ends, self._suspect = now, False
                return True
            self._suspect = read != set(lower)
            if self._suspect:
                log.warning(
                    "relay.suspecting",
                    topic=self.topic,
                    listed={str(p): now[p] for p in lower},
                    seen={str(p): self._ends[p] for p in lower},
                    unread=sorted(set(lower) - read),
                )
                return False  # the baseline stays; look again
        self._suspect = False
        self._ends = {**self._ends, **now}
        for p, end in now.items():
            if end > self._reached.get(p, 0):
                self._reached[p] = end
        return False
