"""The idempotent consumer: a crash between the database commit and the offset commit."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord, TopicPartition

from shared.contracts.envelope import Envelope
from shared.kit import bus
from shared.kit.inbox import Consumer, Inbox
from tests.conftest import eventually
from tests.integration.conftest import World
from tests.integration.helpers import consuming, envelope, schema


class Killed(Exception):
    pass


class Ahead:
    """A consumer's handler and `prepare` that hold the transaction of the batch with
    event 1 open until the batch with event 2 has been fetched (and made ready) ahead."""

    def __init__(self, world: World, *, hold_second: bool = False) -> None:
        self.world = world
        self.hold_second = hold_second
        self.applying_first = asyncio.Event()
        self.fetched_second = asyncio.Event()

    async def apply(self, conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        for e in events:
            await conn.execute(
                f"INSERT INTO {self.world.schema}.effects VALUES ($1, $2)", e.event_id, e.data["n"]
            )
        if any(e.data["n"] == 1 for e in events):
            self.applying_first.set()
            await asyncio.wait_for(self.fetched_second.wait(), timeout=20)

    async def prepare(self, events: Sequence[Envelope]) -> dict[uuid.UUID, object]:
        if any(e.data["n"] == 2 for e in events):
            self.fetched_second.set()
            if self.hold_second:
                await asyncio.Event().wait()  # until the consumer stops
        return {}

    async def send_second(self) -> None:
        await asyncio.wait_for(self.applying_first.wait(), timeout=20)
        await self.world.send(2)


async def each_applied_once(pool: asyncpg.Pool, world: World, kafka_bootstrap: str) -> None:
    """A new member of the group applies what is left; then each event's effect is
    there once."""
    s = world.schema

    async def apply(conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        await world.record(conn, events)

    again = world.consumer(apply)
    async with consuming(again):

        async def both() -> bool:
            return await world.inbox.watermarks(pool) == {s: 2}

        await eventually(both, within=30, what="both events applied after the restart")
    rows = await pool.fetch(f"SELECT n, count(*) AS c FROM {s}.effects GROUP BY n ORDER BY n")
    assert [(r["n"], r["c"]) for r in rows] == [(1, 1), (2, 1)]


async def test_a_crash_between_commits_with_the_next_batch_fetched_ahead_applies_each_once(
    pool: asyncpg.Pool, kafka_bootstrap: str, world: World
) -> None:
    """The next batch is fetched while this one's transaction runs; a crash after the
    transaction commits, before its offsets do, loses neither batch nor applies one twice:
    the first is redelivered, and the inbox drops it."""
    ahead = Ahead(world)

    async def die_before_offset_commit() -> None:
        raise Killed

    await world.send(1)
    first = world.consumer(
        ahead.apply,
        prepare=ahead.prepare,
        after_db_commit=die_before_offset_commit,
    )
    sending = asyncio.create_task(ahead.send_second())
    with pytest.raises(Killed):
        await asyncio.wait_for(first.run(), timeout=60)
    await sending
    assert ahead.fetched_second.is_set()
    assert await pool.fetchval(f"SELECT array_agg(n) FROM {world.schema}.effects") == [1]
    await each_applied_once(pool, world, kafka_bootstrap)


async def test_a_batch_fetched_ahead_and_not_applied_is_not_committed_with_the_one_before(
    pool: asyncpg.Pool, kafka_bootstrap: str, world: World
) -> None:
    """The consumer stops after the first batch's offsets are committed, with the second
    fetched and not applied: only the first batch's offsets were committed, so a new
    member gets the second."""
    ahead = Ahead(world, hold_second=True)
    committed_first = asyncio.Event()

    class Watched(Consumer):
        async def commit_offsets(self, kafka: Any, messages: Sequence[Any]) -> None:
            await super().commit_offsets(kafka, messages)
            committed_first.set()

    await world.send(1)
    first = world.consumer(ahead.apply, Watched, prepare=ahead.prepare)
    sending = asyncio.create_task(ahead.send_second())
    async with consuming(first):
        await asyncio.wait_for(committed_first.wait(), timeout=30)
    await sending
    assert ahead.fetched_second.is_set()
    assert await pool.fetchval(f"SELECT array_agg(n) FROM {world.schema}.effects") == [1]
    await each_applied_once(pool, world, kafka_bootstrap)


async def test_what_arrives_while_a_batch_is_applied_is_made_ready_before_its_turn(
    pool: asyncpg.Pool, kafka_bootstrap: str, world: World
) -> None:
    """The next batch is gathered while this one's transaction runs, and each event that
    joins it is made ready (`prepare`) as it arrives, also when the first to arrive was
    one passed over: a single fetch ahead stopped there, and the DICOM context then read
    the headers of the instances that came next in the batch's turn, after the
    transaction before it."""
    s = world.schema
    wanted = envelope("w", 1).type
    holding_first, release = asyncio.Event(), asyncio.Event()
    fetched_passed_over, made_third = asyncio.Event(), asyncio.Event()

    class Watched(Consumer):
        async def _decode(self, messages: Sequence[Any]) -> Any:
            fetched = await super()._decode(messages)
            if any(e.position == 2 for e in fetched.envelopes):
                fetched_passed_over.set()
            return fetched

    async def apply(conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        await world.record(conn, events)
        if any(e.data["n"] == 1 for e in events):
            holding_first.set()
            await asyncio.wait_for(release.wait(), timeout=30)

    async def prepare(events: Sequence[Envelope]) -> dict[uuid.UUID, object]:
        if any(e.data["n"] == 3 for e in events):
            made_third.set()
        return {}

    await send_at(world, 1, wanted)
    consumer = world.consumer(apply, Watched, prepare=prepare, wanted=[wanted])
    async with consuming(consumer):
        await asyncio.wait_for(holding_first.wait(), timeout=30)
        await send_at(world, 2, "test.PassedOver")
        await asyncio.wait_for(fetched_passed_over.wait(), timeout=30)
        await send_at(world, 3, wanted)
        # Made ready while the first batch's transaction is still open.
        await asyncio.wait_for(made_third.wait(), timeout=10)
        release.set()

        async def all_three() -> bool:
            return await world.inbox.watermarks(pool) == {s: 3}

        await eventually(all_three, within=30, what="the three events passed or applied")
    rows = await pool.fetch(f"SELECT n FROM {s}.effects ORDER BY n")
    assert [r["n"] for r in rows] == [1, 3]


async def test_the_next_batch_is_applied_while_the_offsets_before_it_are_committed(
    pool: asyncpg.Pool, kafka_bootstrap: str, world: World
) -> None:
    """A batch's offsets go to the broker while the next batch is applied (each batch
    waited for that round trip); the commits still follow each other, and a new member
    applies nothing again."""
    s = world.schema
    committing_first, release = asyncio.Event(), asyncio.Event()
    committed: list[int] = []

    class Held(Consumer):
        async def commit_offsets(self, kafka: Any, messages: Sequence[Any]) -> None:
            if not committing_first.is_set():
                committing_first.set()
                await asyncio.wait_for(release.wait(), timeout=30)
            await super().commit_offsets(kafka, messages)
            committed.append(max(m.offset for m in messages))

    async def apply(conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        await world.record(conn, events)

    async def applied(n: int) -> bool:
        return bool(await pool.fetchval(f"SELECT count(*) FROM {s}.effects WHERE n = $1", n))

    await world.send(1)
    consumer = world.consumer(apply, Held)
    async with consuming(consumer):
        await asyncio.wait_for(committing_first.wait(), timeout=30)
        await world.send(2)
        # Applied while the first batch's offsets are held on their way.
        await eventually(lambda: applied(2), within=10, what="event 2 applied")
        assert committed == []
        release.set()

        async def both_committed() -> bool:
            return committed == [0, 1]

        await eventually(both_committed, within=30, what="both offsets, in order")
    await each_applied_once(pool, world, kafka_bootstrap)


class Arrived:
    """A consumer's broker as its batch's turn comes: these messages have just arrived."""

    def __init__(self, *ns: int) -> None:
        self.messages = [record(n) for n in ns]

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> Any:
        taken, self.messages = self.messages, []
        return {TopicPartition("t", 0): taken} if taken else {}


def record(n: int) -> ConsumerRecord[Any, Any]:
    sent = envelope(f"s-{n}", 1, n=n).model_copy(update={"source": "src", "position": n})
    value = bus.encode(sent)
    return ConsumerRecord("t", 0, n, 0, 0, None, value, None, 0, len(value), ())


async def test_what_needs_making_ready_as_a_turn_comes_starts_the_next_batch() -> None:
    """Events that arrive as a batch's turn comes join it only if they need no making
    ready: else they start the next batch, made ready while this one is applied, not in
    its turn (a DICOM request's headers, read there before its transaction opened)."""
    made: list[int] = []

    async def prepare(events: Sequence[Envelope]) -> dict[uuid.UUID, object]:
        made.extend(e.data["n"] for e in events)
        return {}

    async def apply(conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        pass

    def consumer(**more: Any) -> Consumer:
        return Consumer(
            pool=None,  # type: ignore[arg-type]
            inbox=Inbox("s", "c"),
            topics=["t"],
            handle=apply,
            bootstrap="",
            dead_letters=None,  # type: ignore[arg-type]
            **more,
        )

    reading = consumer(prepare=prepare)
    batch = await reading._made(await reading._decode([record(1)]))
    topped = await reading._topped_up(Arrived(2, 3), batch)  # type: ignore[arg-type]
    assert [e.position for e in topped[0].envelopes] == [1]
    assert topped[1] is None
    late = topped[2]
    assert late is not None and [e.position for e in late.envelopes] == [2, 3]
    assert made == [1]  # 2 and 3 are made in the next batch's gathering
    # Nothing to make ready: what arrived joins the batch, as before.
    plain = consumer()
    batch = await plain._decode([record(1)])
    topped = await plain._topped_up(Arrived(2, 3), batch)  # type: ignore[arg-type]
    assert [e.position for e in topped[0].envelopes] == [1, 2, 3]
    assert topped[1:] == (None, None)


async def fresh_inbox(pool: asyncpg.Pool) -> Inbox:
    inbox = Inbox(schema(), "c")
    async with pool.acquire() as conn:
        await inbox.setup(conn)
    return inbox


def at(position: int) -> Envelope:
    """An event of the source "src" at `position`."""
    return envelope(f"x-{position}", 1).model_copy(update={"source": "src", "position": position})


async def test_watermark_waits_for_gaps(pool: asyncpg.Pool) -> None:
    inbox = await fresh_inbox(pool)

    async def admit(*positions: int) -> dict[str, int]:
        async with pool.acquire() as conn, conn.transaction():
            await inbox.admit(conn, [at(p) for p in positions])
            await inbox.advance(conn, {"src"})
        return await inbox.watermarks(pool)

    assert await admit(1, 2, 4) == {"src": 2}
    assert await admit(6) == {"src": 2}
    assert await admit(3) == {"src": 4}
    assert await admit(5) == {"src": 6}


async def test_waiters_are_woken_by_the_batches_that_move_a_watermark(
    pool: asyncpg.Pool, world: World
) -> None:
    # A consistency wait wakes on the consumer's channel; a batch that moved no watermark
    # changed nothing a waiter reads, and wakes nobody.
    consumer = world.consumer(world.record)
    heard: list[str] = []

    async def ended() -> bool:
        return "end" in heard

    def sent(n: int) -> Envelope:
        return envelope(f"s-{n}", 1, n=n).model_copy(update={"source": "src", "position": n})

    def hear(*args: Any) -> None:
        heard.append(args[-1])

    async with pool.acquire() as listener:
        await listener.add_listener(world.inbox.channel, hear)
        for n in (1, 3, 2):  # moved to 1; a gap before 3; moved to 3
            await consumer._apply([sent(n)])
        # Notifications come in commit order: once this one is heard, the batches' have.
        await pool.execute(f"NOTIFY {world.inbox.channel}, 'end'")
        await eventually(ended, what="the last notification")
        await listener.remove_listener(world.inbox.channel, hear)
    assert await world.inbox.watermarks(pool) == {"src": 3}
    assert heard == ["", "", "end"]


async def test_a_watermark_made_in_a_batch_rolled_back_is_made_again(pool: asyncpg.Pool) -> None:
    # The inbox remembers which sources have a watermark row (their batches lock it
    # without inserting it first): a row that went with a rolled-back batch is made again.
    inbox = await fresh_inbox(pool)
    with contextlib.suppress(Killed):
        async with pool.acquire() as conn, conn.transaction():
            await inbox.admit(conn, [at(1)])
            await inbox.advance(conn, {"src"})
            raise Killed
    assert await inbox.watermarks(pool) == {}
    async with pool.acquire() as conn, conn.transaction():
        assert len(await inbox.admit(conn, [at(1), at(2)])) == 2
        await inbox.advance(conn, {"src"})
    assert await inbox.watermarks(pool) == {"src": 2}


async def test_a_batch_waiting_on_the_watermark_sees_the_rows_the_holder_committed(
    pool: asyncpg.Pool,
) -> None:
    inbox = await fresh_inbox(pool)
    async with pool.acquire() as conn, conn.transaction():
        await inbox.admit(conn, [at(1)])
        await inbox.advance(conn, {"src"})
    async with pool.acquire() as holder:
        first = holder.transaction()
        await first.start()
        await inbox.admit(holder, [at(3)])  # a gap at 2: the watermark stays at 1
        await inbox.advance(holder, {"src"})

        async def second() -> None:
            async with pool.acquire() as conn, conn.transaction():
                await inbox.admit(conn, [at(2)])
                await inbox.advance(conn, {"src"})

        waiting = asyncio.create_task(second())

        async def blocked() -> bool:
            waits: int = await pool.fetchval(
                f"""SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'
                    AND query LIKE '%{inbox.schema}.watermarks%'"""
            )
            return waits > 0

        await eventually(blocked, what="the second batch waiting on the watermark's lock")
        await first.commit()
        await waiting
    # 2 fills the gap: the run goes on through 3, which the first batch committed.
    assert await inbox.watermarks(pool) == {"src": 3}


async def test_pruned_events_are_still_recognised_as_applied(pool: asyncpg.Pool) -> None:
    inbox = await fresh_inbox(pool)
    events = [at(p) for p in (1, 2, 3, 5)]
    async with pool.acquire() as conn, conn.transaction():
        assert len(await inbox.admit(conn, events)) == 4
        await inbox.advance(conn, {"src"})
    assert await inbox.prune(pool, keep=timedelta(0)) == 3  # 5 waits for 4
    async with pool.acquire() as conn, conn.transaction():
        # The broker lost its messages and the relay sent everything again.
        assert await inbox.admit(conn, events) == set()


async def test_an_event_published_twice_in_one_batch_is_applied_once(
    pool: asyncpg.Pool, kafka_bootstrap: str, world: World
) -> None:
    """A relay that lost track of the broker (the memory broker restarted empty) publishes
    again what it had published, after fillers (no value) up to where the partition was:
    a consumer may find the same event twice in one batch, and passes over the fillers
    (no dead letter)."""
    s = world.schema
    twice = envelope("s-1", 1, n=1).model_copy(update={"source": s, "position": 1})
    for _ in range(3):
        await world.producer.send_and_wait(
            world.topic, None, key=b"relay.Filler", headers=[("type", bus.FILLER.encode())]
        )
    for _ in range(2):
        await world.producer.send_and_wait(world.topic, bus.encode(twice), key=b"s-1")
    applied: list[int] = []

    async def apply(conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        applied.append(len(events))
        await world.record(conn, events)

    consumer = world.consumer(apply)
    async with consuming(consumer):

        async def caught_up() -> bool:
            return await world.inbox.watermarks(pool) == {s: 1}

        await eventually(caught_up, within=20, what="the event applied")
    assert await pool.fetchval(f"SELECT count(*) FROM {s}.effects") == 1
    assert consumer.retried == 0
    assert consumer.dead_lettered == 0
    assert await pool.fetchval(f"SELECT count(*) FROM {s}.dead_letters") == 0


async def test_events_no_reaction_wants_move_the_watermark_without_an_inbox_row(
    pool: asyncpg.Pool,
) -> None:
    """A consumer passes over the types it has no reaction to: the watermark moves past
    them all the same, and only one stranded behind a gap gets a row (so that a later
    run passes it)."""
    inbox = await fresh_inbox(pool)

    async def batch(used: Sequence[int], passed: Sequence[int]) -> dict[str, int]:
        async with pool.acquire() as conn, conn.transaction():
            await inbox.admit(conn, [at(p) for p in used])
            await inbox.advance(conn, {"src"}, [at(p) for p in passed])
        return await inbox.watermarks(pool)

    async def rows() -> list[int]:
        found = await pool.fetch(f"SELECT position FROM {inbox.schema}.inbox ORDER BY position")
        return [r["position"] for r in found]

    async def applied_below(position: int) -> bool:
        async with pool.acquire() as conn:
            return await inbox.applied_below(conn, "src", position)

    assert await batch(used=[1], passed=[2, 4]) == {"src": 2}
    assert await rows() == [1, 4]  # 2 needed no row; 4 waits behind the gap at 3
    assert not await applied_below(4)
    assert await batch(used=[3], passed=[]) == {"src": 4}
    assert await applied_below(5)
    assert await batch(used=[], passed=[5, 6]) == {"src": 6}
    assert await batch(used=[8], passed=[7, 9]) == {"src": 9}
    assert await rows() == [1, 3, 4, 8]


async def send_at(world: World, n: int, event_type: str) -> None:
    """An event of `event_type` at position n of the world's source, on its topic with
    the relay's headers."""
    sent = envelope(f"s-{n}", 1, n=n).model_copy(
        update={"source": world.schema, "position": n, "type": event_type}
    )
    await world.producer.send_and_wait(
        world.topic,
        bus.encode(sent),
        key=f"s-{n}".encode(),
        headers=bus.wire_headers(sent.type, sent.correlation_id, None),
    )


async def test_a_consumer_applies_only_the_types_it_wants(
    pool: asyncpg.Pool, kafka_bootstrap: str, world: World
) -> None:
    s, topic, inbox, producer = world.schema, world.topic, world.inbox, world.producer
    wanted = envelope("w", 1).type
    for n in range(1, 7):
        # The unwanted are read only as far as their position.
        await send_at(world, n, wanted if n % 2 else "test.Unwanted")
    seen: list[str] = []

    async def apply(conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        seen.extend(e.type for e in events)
        await world.record(conn, events)

    consumer = Consumer(
        pool=pool,
        inbox=inbox,
        topics=[topic],
        handle=apply,
        bootstrap=kafka_bootstrap,
        dead_letters=producer,
        wanted={wanted},
    )
    async with consuming(consumer):

        async def caught_up() -> bool:
            return await inbox.watermarks(pool) == {s: 6}

        await eventually(caught_up, within=20, what="the watermark past all six")
    assert set(seen) == {wanted}
    assert sorted(r["n"] for r in await pool.fetch(f"SELECT * FROM {s}.effects")) == [1, 3, 5]
    assert await pool.fetchval(f"SELECT count(*) FROM {s}.inbox") == 3


async def test_types_idle_for_now_are_passed_over_until_a_reaction_would_act(
    pool: asyncpg.Pool, kafka_bootstrap: str, world: World
) -> None:
    """A type the consumer reacts to, but that no reaction would act on now (ingest's
    webhooks' triggers with no webhook registered), is passed over like an unwanted one:
    not handled, no inbox row. Once a reaction would act, it is applied again."""
    s, topic, inbox, producer = world.schema, world.topic, world.inbox, world.producer
    wanted = envelope("w", 1).type
    idle_now = {wanted}

    seen: list[int] = []

    async def apply(conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
        seen.extend(e.data["n"] for e in events)

    async def idle(_: asyncpg.Pool) -> frozenset[str]:
        return frozenset(idle_now)

    consumer = Consumer(
        pool=pool,
        inbox=inbox,
        topics=[topic],
        handle=apply,
        bootstrap=kafka_bootstrap,
        dead_letters=producer,
        wanted={wanted},
        idle=idle,
    )
    async with consuming(consumer):

        def past(position: int) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return (await inbox.watermarks(pool)).get(s, 0) >= position

            return check

        for n in (1, 2, 3):
            await send_at(world, n, wanted)
        await eventually(past(3), within=20, what="the watermark past the idle three")
        assert seen == []
        assert await pool.fetchval(f"SELECT count(*) FROM {s}.inbox") == 0
        idle_now.clear()
        for n in (4, 5, 6):
            await send_at(world, n, wanted)
        await eventually(past(6), within=20, what="the watermark past the wanted three")
    assert sorted(seen) == [4, 5, 6]
    assert await pool.fetchval(f"SELECT count(*) FROM {s}.inbox") == 3


async def test_a_batch_gathered_ahead_leaves_no_fetch_open_when_its_turn_comes(
    kafka_bootstrap: str,
) -> None:
    """The next batch's gathering ends at its turn without a fetch left in progress:
    aiokafka counts fetches in progress, and while one is counted the group's
    `max_poll_interval_ms` guard (a member whose batches stopped coming back leaves
    the group, and another replica takes its partitions) never fires. A `getmany`
    cancelled at the turn stayed counted for the consumer's life."""
    topic = f"files.{schema()}"
    await bus.ensure_topics(kafka_bootstrap, 1, [topic])
    kafka = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    await kafka.start()
    kafka.assign([TopicPartition(topic, 0)])
    try:
        turn = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, turn.set)
        assert await Consumer._fetched_before(kafka, turn, 10) == []
        # Idle since: nothing is being fetched for the application.
        assert kafka._subscription.fetcher_idle_time > 0
    finally:
        await kafka.stop()


async def test_a_consumer_stopped_in_its_groups_first_generation_leaves_the_group(
    pool: asyncpg.Pool, kafka_bootstrap: str, world: World
) -> None:
    """tansu numbers a group's first generation 0, from which aiokafka sends no
    LeaveGroup: the stopped member stayed in the group until its session ended, and the
    next one (its restart) waited on it, about 8 s more before it got its partitions."""
    await world.send(1)
    first = world.consumer(world.record)
    async with consuming(first):

        async def applied() -> bool:
            return await world.inbox.watermarks(pool) == {world.schema: 1}

        await eventually(applied, within=30, what="the event applied")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_consumer_groups([world.inbox.consumer])
    finally:
        await admin.close()
    [group] = described.groups
    assert group[1] == world.inbox.consumer
    assert group[2] == "Empty" and group[5] == [], group
