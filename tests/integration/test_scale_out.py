"""Replicas of one service, as separate processes on the real PostgreSQL and broker.

Consumers of one group share the partitions and apply every event once, also when a
member dies between its database commit and its offset commit; the relay of a store
runs on one replica at a time and another takes over when the leader dies.

Run as a module, this file is the replica: `python -m tests.integration.test_scale_out
consume|relay ...` (the tests spawn it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from shared.contracts.envelope import Envelope
from shared.kit import bus, db
from shared.kit.eventstore import EventStore
from shared.kit.inbox import Consumer, Inbox
from shared.kit.outbox import Relay
from shared.kit.service import supervised
from tests.conftest import eventually
from tests.integration.helpers import envelope, schema

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 4
Spawn = Callable[..., "subprocess.Popen[bytes]"]
# A member that dies without leaving is evicted after the session timeout (10 s).
TAKEOVER_S = 60.0


# ---------------------------------------------------------------- the replicas


class CountingInbox(Inbox):
    """Records, per replica, how many events it was handed and how many were new."""

    def __init__(self, schema: str, consumer: str, replica: str) -> None:
        super().__init__(schema, consumer)
        self.replica = replica

    async def admit(self, conn: db.Conn, envelopes: Sequence[Envelope]) -> set[str]:
        fresh = await super().admit(conn, envelopes)
        await conn.execute(
            f"INSERT INTO {self.schema}.deliveries VALUES ($1, $2, $3)",
            self.replica,
            len(envelopes),
            len(fresh),
        )
        return fresh


async def consume(dsn: str, bootstrap: str, s: str, topic: str, replica: str) -> None:
    """One consumer replica of group `group-<schema>`, until killed.

    Once `<schema>.stall` names it, it stops after its next database commit, before
    committing the offset (and keeps heartbeating), so the test can kill it there.
    """
    pool = await db.connect_pool(dsn, max_size=4)
    producer = bus.producer(bootstrap, idempotence=False)
    await producer.start()

    async def apply(conn: db.Conn, events: Sequence[Envelope]) -> None:
        await conn.executemany(
            f"INSERT INTO {s}.effects (event_id, n, replica) VALUES ($1, $2, $3)",
            [(e.event_id, e.data["n"], replica) for e in events],
        )

    async def maybe_stall() -> None:
        if await pool.fetchval(f"SELECT count(*) FROM {s}.stall WHERE replica = $1", replica):
            await pool.execute(f"UPDATE {s}.stall SET stalled = true WHERE replica = $1", replica)
            await asyncio.Event().wait()  # until killed

    consumer = Consumer(
        pool=pool,
        inbox=CountingInbox(s, f"group-{s}", replica),
        topics=[topic],
        handle=apply,
        bootstrap=bootstrap,
        dead_letters=producer,
        after_db_commit=maybe_stall,
    )
    await supervised("replica", "consumer", consumer.run)


async def relay(dsn: str, bootstrap: str, s: str, topic: str) -> None:
    """One relay replica of store `<schema>`, until killed."""
    producer = bus.producer(bootstrap, idempotence=False)
    await producer.start()
    await supervised("replica", "relay", Relay(EventStore(s), dsn, producer, topic, bootstrap).run)


# ---------------------------------------------------------------- the tests


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.test_scale_out", *args],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.DEVNULL,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


@pytest.fixture
async def admin(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await client.start()
    yield client
    await client.close()


async def members(admin: AIOKafkaAdminClient, group: str) -> int:
    described = await admin.describe_consumer_groups([group])
    (found,) = described[0].groups
    error, _, state, *_, listed = found
    return len(listed) if error == 0 and state == "Stable" else 0


async def test_consumer_replicas_share_partitions_and_apply_each_event_once(
    pool: asyncpg.Pool,
    database_url: str,
    kafka_bootstrap: str,
    spawn: Spawn,
    admin: AIOKafkaAdminClient,
) -> None:
    s = schema()
    topic = f"files.{s}"
    group = f"group-{s}"
    await bus.ensure_topics(kafka_bootstrap, PARTITIONS, [topic])
    async with pool.acquire() as conn:
        await Inbox(s, group).setup(conn)
        await conn.execute(
            f"""CREATE TABLE {s}.effects (event_id uuid NOT NULL, n int NOT NULL,
                    replica text NOT NULL);
                CREATE TABLE {s}.deliveries (replica text, offered int, fresh int);
                CREATE TABLE {s}.stall (replica text, stalled bool NOT NULL DEFAULT false)"""
        )
    producer = bus.producer(kafka_bootstrap, idempotence=False)
    await producer.start()

    async def publish(numbers: range) -> None:
        for n in numbers:  # 40 streams over the partitions; positions as a store numbers them
            sent = envelope(f"s-{n % 40}", n, n=n).model_copy(update={"source": s, "position": n})
            await producer.send(topic, bus.encode(sent), key=sent.stream_id.encode())
        await producer.flush()

    async def applied() -> int:
        return int(await pool.fetchval(f"SELECT count(DISTINCT event_id) FROM {s}.effects"))

    try:
        a = spawn("consume", database_url, kafka_bootstrap, s, topic, "a")
        spawn("consume", database_url, kafka_bootstrap, s, topic, "b")

        async def both_joined() -> bool:
            return await members(admin, group) == 2

        await eventually(both_joined, within=30, what="two members in the group")

        await publish(range(1, 101))

        async def first_hundred() -> bool:
            return await applied() == 100

        await eventually(first_hundred, within=30, what="100 events applied")
        rows = await pool.fetch(f"SELECT replica, count(*) FROM {s}.effects GROUP BY replica")
        by_replica = {r["replica"]: r["count"] for r in rows}
        assert set(by_replica) == {"a", "b"}, f"one replica did all the work: {by_replica}"

        # Replica a stops between its next database commit and its offset commit, and
        # is killed there: b gets its partitions and that batch again.
        await pool.execute(f"INSERT INTO {s}.stall (replica) VALUES ('a')")
        await publish(range(101, 201))

        async def a_stalled() -> bool:
            return bool(await pool.fetchval(f"SELECT count(*) FROM {s}.stall WHERE stalled"))

        await eventually(a_stalled, within=30, what="replica a stalled after a commit")
        a.kill()
        a.wait()
        await publish(range(201, 301))  # half of them on partitions only a had

        async def b_took_over() -> bool:
            got = await pool.fetchrow(
                f"SELECT sum(offered) AS offered, sum(fresh) AS fresh FROM {s}.deliveries"
                " WHERE replica = 'b'"
            )
            assert got is not None
            # a's batch came again (its offset was never committed) and was dropped.
            return await applied() == 300 and got["offered"] > got["fresh"]

        await eventually(b_took_over, within=TAKEOVER_S, what="b taking over a's partitions")
    finally:
        await producer.stop()

    effects = await pool.fetchval(f"SELECT count(*) FROM {s}.effects")
    assert effects == 300, f"{effects} effects for 300 events"
    assert await pool.fetchval(f"SELECT count(*) FROM {s}.inbox") == 300
    assert await Inbox(s, group).watermarks(pool) == {s: 300}


async def test_the_relay_leads_on_one_replica_and_another_takes_over(
    pool: asyncpg.Pool, database_url: str, kafka_bootstrap: str, spawn: Spawn
) -> None:
    s = schema()
    topic = f"files.{s}"
    await bus.ensure_topics(kafka_bootstrap, 1, [topic])  # one partition: one total order
    store = EventStore(s)
    probe = Relay(store, database_url, None, topic, kafka_bootstrap)  # type: ignore[arg-type,unused-ignore]
    async with pool.acquire() as conn:
        await store.setup(conn)
        await probe.setup(conn)

    def dsn(replica: str) -> str:
        return f"{database_url}{'&' if '?' in database_url else '?'}application_name={replica}"

    replicas = {name: spawn("relay", dsn(name), kafka_bootstrap, s, topic) for name in "ab"}

    async def holders() -> list[str]:
        """The replicas holding the store's relay lock."""
        rows = await pool.fetch(
            """SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)
               WHERE l.locktype = 'advisory' AND l.granted AND l.objid::bigint = $1""",
            probe._lock_key,
        )
        return [r["application_name"] for r in rows]

    async def leader_and_standby() -> bool:
        connected = await pool.fetch(
            "SELECT application_name FROM pg_stat_activity WHERE application_name IN ('a', 'b')"
        )
        return len(await holders()) == 1 and {r[0] for r in connected} == {"a", "b"}

    async def append(numbers: range) -> None:
        for n in numbers:
            async with pool.acquire() as conn, conn.transaction():
                await store.append(conn, [envelope(f"s-{n}", 1, n=n)])

    seen: list[Envelope] = []
    reader = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=f"check-{uuid.uuid4().hex[:6]}",
    )
    await reader.start()

    def arrived(count: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            batch = await reader.getmany(timeout_ms=100)
            seen.extend(bus.decode(m.value) for msgs in batch.values() for m in msgs)
            return len(seen) >= count

        return check

    try:
        await eventually(leader_and_standby, within=30, what="a leader and a standby")
        (leader,) = await holders()
        await append(range(1, 11))
        await eventually(arrived(10), within=30, what="10 events published")

        replicas[leader].kill()  # its session ends with it, and the lock with the session
        replicas[leader].wait()
        other = {"a": "b", "b": "a"}[leader]

        async def other_leads() -> bool:
            return await holders() == [other]

        await eventually(other_leads, within=30, what="the standby taking the lock")
        await append(range(11, 21))

        async def last_arrived() -> bool:
            await arrived(20)()
            return bool(seen) and seen[-1].position == 20

        await eventually(last_arrived, within=30, what="events 11 to 20 published")
        # A sentinel: one partition keeps order, so any copy sent before it shows up first.
        await append(range(21, 22))
        await eventually(arrived(21), within=30, what="the sentinel")
    finally:
        await reader.stop()

    assert [e.position for e in seen] == list(range(1, 22))
    assert [e.data["n"] for e in seen] == list(range(1, 22))


async def test_replicas_advance_the_watermarks_of_two_sources_without_deadlock(
    pool: asyncpg.Pool, database_url: str
) -> None:
    """Catalog and DICOM consume two sources each. Their replicas iterate a set of
    sources in different orders (string hashes are seeded per process); the watermark
    rows must still be locked in one order, else two batches deadlock."""
    s = schema()
    inbox = Inbox(s, "c")
    async with pool.acquire() as conn:
        await inbox.setup(conn)
        await conn.execute(
            f"INSERT INTO {s}.watermarks VALUES ('c', 'catalog', 0), ('c', 'ingest', 0)"
        )
    blocker, one, other = [await db.connect(database_url) for _ in range(3)]  # one each
    pids = {await c.fetchval("SELECT pg_backend_pid()") for c in (one, other)}

    async def waiting() -> int:
        return int(
            await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = any($1::int[])"
                " AND wait_event_type = 'Lock'",
                list(pids),
            )
        )

    async def replica(conn: db.Conn, order: list[str]) -> None:
        async with conn.transaction():
            await inbox.advance(conn, order)  # type: ignore[arg-type]  # a set, as iterated

    try:
        # Hold `ingest` so that both replicas queue up mid-advance.
        async with blocker.transaction():
            await blocker.execute(
                f"SELECT 1 FROM {s}.watermarks WHERE source = 'ingest' FOR UPDATE"
            )
            first = asyncio.create_task(replica(one, ["ingest", "catalog"]))

            async def first_waits() -> bool:
                return await waiting() == 1

            await eventually(first_waits, what="the first replica waiting on a lock")
            second = asyncio.create_task(replica(other, ["catalog", "ingest"]))

            async def both_wait() -> bool:
                return await waiting() == 2

            await eventually(both_wait, what="both replicas waiting on locks")
        # Unsorted, the first now takes `ingest` and waits for `catalog`, which the
        # second holds while it waits for `ingest`: PostgreSQL aborts one of them.
        await asyncio.gather(first, second)
    finally:
        for c in (blocker, one, other):
            await c.close()


if __name__ == "__main__":
    role, *rest = sys.argv[1:]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(consume(*rest) if role == "consume" else relay(*rest))
