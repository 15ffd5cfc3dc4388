"""A broker that loses its messages (the embedded one, killed and started again) gets
them all again, and a consumer that lived through it, fetching from its old offset,
misses none: the relay fills each partition up to where it was before publishing again.

The old log is made longer than the store's events, as a relay that died between its
publish and its checkpoint leaves it (what the chaos test's faults do): published again
from the first, the newest events would land below a surviving consumer's offset.

A broker that answers late or in part has not lost anything: publishing everything again
is safe for consumers but loads a machine exactly when it is overloaded, so a loss is
concluded only from what the broker states, and the log says which.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from typing import cast

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import RecordMetadata
from structlog.testing import capture_logs

from shared.kit import bus, db
from shared.kit.embedded import Child, start_broker
from shared.kit.eventstore import EventStore
from shared.kit.outbox import Relay
from tests.conftest import eventually
from tests.integration.helpers import envelope, relay_on_new_topic, schema


async def _append(pool: asyncpg.Pool, store: EventStore, versions: range) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await store.append(conn, [envelope("stream-1", v, v) for v in versions])


async def _read(bootstrap: str, topic: str, offset: int, positions: set[int]) -> list[int | None]:
    """The partition's records from `offset` until the events at `positions` are among
    them: each record's store position, None for a filler."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await reader.start()
    tp = TopicPartition(topic, 0)
    reader.assign([tp])
    reader.seek(tp, offset)
    seen: list[int | None] = []
    try:

        async def arrived() -> bool:
            for message in (await reader.getmany(tp, timeout_ms=200)).get(tp, []):
                seen.append(None if message.value is None else bus.decode(message.value).position)
            return positions <= set(seen)

        await eventually(arrived, within=30, what=f"positions {min(positions)}..{max(positions)}")
        # What else is there now (a consumer reads to the end).
        while batch := (await reader.getmany(tp, timeout_ms=500)).get(tp, []):
            seen += [None if m.value is None else bus.decode(m.value).position for m in batch]
    finally:
        await reader.stop()
    return seen


@pytest.mark.parametrize("relay_restarts", [False, True], ids=["relay-lives", "relay-restarts"])
async def test_a_consumer_past_the_new_logs_start_misses_no_event_after_the_broker_loses_them(
    pool: asyncpg.Pool, database_url: str, relay_restarts: bool
) -> None:
    broker: Child = start_broker()
    bootstrap = broker.url
    store = EventStore(schema())
    topic = f"files.test.{uuid.uuid4().hex[:8]}"
    await bus.ensure_topics(bootstrap, 1, [topic])
    producer = bus.producer(bootstrap, idempotence=False)
    await producer.start()
    async with pool.acquire() as conn:
        await store.setup(conn)
        await Relay(store, database_url, producer, topic, bootstrap).setup(conn)
    running: asyncio.Task[None] | None = None

    async def lead() -> None:
        nonlocal running
        running = asyncio.create_task(Relay(store, database_url, producer, topic, bootstrap).run())

    async def stop() -> None:
        if running is not None:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running

    with capture_logs() as logs:
        try:
            await lead()
            await _append(pool, store, range(1, 51))
            # The checkpoint in the table, not `published` (set as its write is sent): a
            # leader stopped before the write landed left no row for the UPDATE below,
            # and the next sent 1..50 again (100 records; once in 8 runs under load).
            checkpoint = f"SELECT position FROM {store.schema}.relay_offsets"
            await eventually(
                lambda: _true_of(pool.fetchval(checkpoint), 50), what="50 events published"
            )
            # The leader dies between publishing 31..50 and its checkpoint: the next sends
            # them again, and the log holds 70 records.
            await stop()
            await pool.execute(f"UPDATE {store.schema}.relay_offsets SET position = 30")
            await lead()
            await eventually(
                lambda: _true_of(pool.fetchval(checkpoint), 50), what="31..50 published again"
            )

            # A consumer reads the whole log: its offset is 70.
            before = await _read(bootstrap, topic, 0, set(range(1, 51)))
            assert len(before) == 70

            if relay_restarts:
                await stop()
            broker = _lose(broker, topic)
            if relay_restarts:
                await _append(pool, store, range(51, 81))
                await lead()
            else:
                # The live relay sees the loss and publishes 1..50 again; then new events.
                await _read(bootstrap, topic, 0, set(range(1, 51)))
                await _append(pool, store, range(51, 81))

            # The consumer goes on from its old offset.
            after = await _read(bootstrap, topic, 70, set(range(51, 81)))
            assert set(range(1, 81)) <= {p for p in before + after if p is not None}
            assert running is not None and not running.done()
            # The operator is told why: the partition, the end the broker stated, the end
            # it had acknowledged before.
            why = [e["lost"] for e in logs if e["event"] == "relay.republishing"]
            assert [{p: (w["end"], w["reached"]) for p, w in lost.items()} for lost in why] == [
                {"0": (0, 70)}
            ]
        finally:
            await stop()
            await producer.stop()
            broker.stop()


def _lose(broker: Child, topic: str) -> Child:
    """The broker killed and started again on its port (its messages lost), its topic
    made again before any client of ours reaches it, as the stack restarts it (its
    clients paused meanwhile). The relay, its producer and probe run in this event
    loop, which is held until the topic is made: a look of theirs reaching the new
    broker first has the topic auto-created with the broker's default partitions (4),
    and events published again go to another partition than the one read (3 runs of 8
    under load timed out so, 2026-12-07)."""
    broker.stop(signal.SIGKILL)
    started = start_broker(port=broker.port)
    with ThreadPoolExecutor(1) as making:
        making.submit(asyncio.run, bus.ensure_topics(started.url, 1, [topic])).result()
    return started


async def _true(value: bool) -> bool:
    return value


async def _true_of(read: Awaitable[object], expected: object) -> bool:
    return await read == expected


async def test_a_batch_landing_below_the_end_reached_is_taken_for_a_loss_not_recorded(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str
) -> None:
    """The looks at the ends can miss a loss (the new log regrown past the old listed end
    between two looks); the offsets our own records land at cannot: below the end the
    partition had reached, the log lost records. The batch is not recorded as published,
    and the relay fills and publishes everything again."""
    store, producer, relay = await relay_on_new_topic(database_url, kafka_bootstrap, 1)
    topic = relay.topic
    try:
        async with pool.acquire() as conn:
            await store.setup(conn)
            await relay.setup(conn)
        await _append(pool, store, range(1, 11))
        relay._reached = {0: 25}  # as before a loss: the topic had 25 records
        async with pool.acquire() as conn:
            assert await relay.publish_pending(conn) == 10
        assert relay._lost and relay.published == 0
        # The leading loop goes on from there.
        conn = await db.connect(database_url)
        probe = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
        await probe.start()
        leading = asyncio.create_task(relay._lead(conn, probe))
        try:
            seen = await _read(kafka_bootstrap, topic, 25, set(range(1, 11)))
        finally:
            leading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await leading
            await probe.stop()
            await conn.close()
        assert sorted(p for p in seen if p is not None) == list(range(1, 11))
    finally:
        await producer.stop()


def test_a_record_the_broker_places_without_saying_where_is_no_evidence_of_a_loss() -> None:
    """An idempotent send whose answer came after the producer's timeout goes again; a
    broker that already has it may answer DuplicateSequenceNumber, which aiokafka takes
    for a success at offset -1 (placed; where, not told). That is no record placed below
    the partition's end: nothing is to be published again. One placed below still is."""
    relay = Relay(EventStore(schema()), "", cast(AIOKafkaProducer, None), "files.test", "")
    relay._floor = {0: 25}
    relay._reached = {0: 25}

    def placed(offset: int) -> RecordMetadata:
        return RecordMetadata("files.test", 0, TopicPartition("files.test", 0), offset, -1, 0, 0)

    relay._placed([placed(-1), placed(0), placed(1)])  # a batch's records, from -1 on
    assert not relay._lost
    relay._placed([placed(3)])
    assert relay._lost == {0: {"how": "a record placed below the end", "end": 3, "reached": 25}}


class _RetainedKafka:
    """A Kafka partition whose records retention removed: its first offset is its end.
    Fetched from below its first offset (out of range), the consumer resets to the end;
    either way the fetch answers no records and the end as high watermark."""

    def __init__(self, first_and_end: int) -> None:
        self.end = first_and_end
        self.partitions_for = self._partitions_for  # the producer's question, too

    async def _partitions_for(self, topic: str) -> set[int]:
        return {0}

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, self.end)

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, self.end)

    def assign(self, tps: list[TopicPartition]) -> None:
        pass

    def seek(self, tp: TopicPartition, offset: int) -> None:
        pass

    async def getmany(self, *tps: TopicPartition, timeout_ms: int) -> dict[TopicPartition, list]:
        await asyncio.sleep(0.01)  # the broker's long poll, short
        return {}

    def highwater(self, tp: TopicPartition) -> int:
        return self.end

    def unsubscribe(self) -> None:
        pass


def _relay_on(broker: _RetainedKafka) -> Relay:
    producer = cast(AIOKafkaProducer, broker)
    return Relay(EventStore(schema()), "", producer, "files.test", "")


async def test_a_log_emptied_by_retention_is_read_at_a_leaders_start_nothing_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kafka's retention removes old records: the partition is empty, its first offset at
    its end, above 0. That end is read (the listing and an empty fetch's high watermark
    agree on it): at the end the relay had reached, nothing was lost, and the leader goes
    on from its checkpoint (before, the partition was left unread, after waiting for a
    last batch that is not there)."""
    monkeypatch.setattr("shared.kit.outbox.LAST_BATCH_WITHIN_S", 1.0)
    broker = _RetainedKafka(100)
    relay = _relay_on(broker)
    probe = cast(AIOKafkaConsumer, broker)
    relay._reached = {0: 100}
    assert await relay._last_offsets(probe, [0]) == ({0: 100}, {0})

    class Checkpoint:
        async def fetchrow(self, query: str, *args: object) -> dict[str, object]:
            return {"position": 40, "ends": {"0": 100}}

    assert await relay._start_position(cast(db.Conn, Checkpoint()), probe) == 40
    assert not relay._lost and not relay._suspect


async def test_an_empty_log_above_0_listed_lower_is_settled_not_suspected_for_ever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A partition listed below the end it reached is read before anything is sent.
    Empty, its first offset at that lower end, it has no last batch to read: it was
    suspected for ever (nothing sent, `relay.suspecting` every 10 s). Its end is the
    broker's word, twice, so the suspicion is settled: below the end the broker had
    acknowledged, records were lost (not by retention, which never lowers an end), and
    the relay publishes again what is missing."""
    monkeypatch.setattr("shared.kit.outbox.LAST_BATCH_WITHIN_S", 1.0)
    broker = _RetainedKafka(60)
    relay = _relay_on(broker)
    relay._ends, relay._reached = {0: 100}, {0: 100}
    assert await relay._broker_lost_messages(cast(AIOKafkaConsumer, broker))
    assert not relay._suspect
    assert relay._lost == {0: {"how": "an end read below the end", "end": 60, "reached": 100}}


async def test_a_partition_missing_from_the_brokers_answer_is_not_taken_for_an_empty_one(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str
) -> None:
    """A leader starting while the broker's answer about the topic names only some of its
    partitions (a late or partial metadata answer) concludes nothing about the others: it
    goes on from the position recorded, and every event is on the topic once."""
    store, producer, relay = await relay_on_new_topic(database_url, kafka_bootstrap, 3)
    topic = relay.topic
    try:
        async with pool.acquire() as conn:
            await store.setup(conn)
            await relay.setup(conn)
            async with conn.transaction():
                await store.append(conn, [envelope(f"stream-{n}", 1, n) for n in range(1, 31)])
            assert await relay.publish_pending(conn) == 30
        ends = await pool.fetchval(f"SELECT ends FROM {store.schema}.relay_offsets")
        assert len(ends) == 3  # every partition had some

        answers = iter([{0}])
        complete = producer.partitions_for

        async def in_part(name: str) -> set[int]:
            return next(answers, None) or await complete(name)

        producer.partitions_for = in_part  # type: ignore[method-assign]
        leader = Relay(store, database_url, producer, topic, kafka_bootstrap)
        running = asyncio.create_task(leader.run())
        try:
            await eventually(lambda: _true(leader.published > 0), what="the leader started")
            async with pool.acquire() as conn, conn.transaction():
                await store.append(conn, [envelope(f"stream-{n}", 1, n) for n in range(31, 41)])
            await eventually(lambda: _true(leader.published == 40), what="31..40 published")
            assert not running.done()
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        assert sorted(await _read_all(kafka_bootstrap, topic, 3, set(range(1, 41)))) == list(
            range(1, 41)
        )
    finally:
        await producer.stop()


async def test_an_end_listed_lower_is_checked_by_reading_the_partition_before_any_republishing(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listed end is the broker's cheap answer (the embedded one lists one past the
    first offset of its last batch, chosen by the time it was written): one lower than
    before is a suspicion only. Read, the partition holds everything it acknowledged:
    nothing is published again, the relay goes on."""
    store, producer, relay = await relay_on_new_topic(database_url, kafka_bootstrap, 1)
    topic = relay.topic
    async with pool.acquire() as conn:
        await store.setup(conn)
        await relay.setup(conn)
    running = asyncio.create_task(relay.run())
    try:
        await _append(pool, store, range(1, 11))
        await eventually(lambda: _true(relay.published == 10), what="1..10 published")
        odd: list[int] = []  # three listings in a row say the partition is empty
        listed = AIOKafkaConsumer.end_offsets

        async def oddly(
            self: AIOKafkaConsumer, partitions: list[TopicPartition]
        ) -> dict[TopicPartition, int]:
            ends: dict[TopicPartition, int] = await listed(self, partitions)
            if any(tp.topic == topic for tp in ends) and len(odd) < 3:
                odd.append(1)
                return dict.fromkeys(ends, 0)
            return ends

        monkeypatch.setattr(AIOKafkaConsumer, "end_offsets", oddly)
        await _append(pool, store, range(11, 21))
        # The relay looks before each batch and at rest: the three odd listings are met
        # before, between or after 11..20 go (a look follows the batch at its own pace).
        await eventually(
            lambda: _true(relay.published == 20 and len(odd) == 3),
            what="11..20 published, and three odd listings met",
        )
        assert not running.done()
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await producer.stop()
    assert sorted(await _read_all(kafka_bootstrap, topic, 1, set(range(1, 21)))) == list(
        range(1, 21)
    )


async def _read_all(bootstrap: str, topic: str, partitions: int, positions: set[int]) -> list[int]:
    """Every event's position on the topic's partitions, once the events at `positions`
    are among them, and what else is there then."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await reader.start()
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    reader.assign(tps)
    await reader.seek_to_beginning(*tps)
    seen: list[int] = []

    async def fetched() -> list[int]:
        batches = await reader.getmany(*tps, timeout_ms=500)
        return [bus.decode(m.value).position for ms in batches.values() for m in ms if m.value]

    try:

        async def arrived() -> bool:
            seen.extend(await fetched())
            return positions <= set(seen)

        await eventually(arrived, within=30, what="every event on the topic")
        while more := await fetched():
            seen += more
    finally:
        await reader.stop()
    return seen
