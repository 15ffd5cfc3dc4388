"""The event store on a real PostgreSQL: optimistic concurrency and ordering."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from shared.kit import db
from shared.kit.eventstore import COPY_FROM, ConcurrencyConflict, EventStore
from tests.integration.helpers import envelope, schema


@pytest.fixture
async def store(pool: asyncpg.Pool) -> EventStore:
    s = EventStore(schema())
    async with pool.acquire() as conn:
        await s.setup(conn)
    return s


async def test_concurrent_appends_to_one_stream_give_one_winner_and_one_conflict(
    pool: asyncpg.Pool, store: EventStore
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await store.append(conn, [envelope("order-1", 1)])
    both_read = asyncio.Barrier(2)

    async def writer(n: int) -> str:
        async with pool.acquire() as conn:
            try:
                async with conn.transaction():
                    # Both decided on version 1 before either wrote.
                    await both_read.wait()
                    await store.append(conn, [envelope("order-1", 2, n)])
                return "won"
            except ConcurrencyConflict:
                return "conflict"

    outcomes = sorted(await asyncio.gather(writer(1), writer(2)))
    assert outcomes == ["conflict", "won"]
    events = await store.read_stream(pool, "order-1")
    assert [e.stream_version for e in events] == [1, 2]


async def test_positions_are_dense_and_follow_commit_order(
    pool: asyncpg.Pool, store: EventStore
) -> None:
    async def append(i: int) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await store.append(conn, [envelope(f"s-{i}", 1), envelope(f"s-{i}", 2)])

    await asyncio.gather(*(append(i) for i in range(50)))
    events = await store.read_after(pool, 0, 1000)
    assert [e.position for e in events] == list(range(1, 101))
    # Events of one transaction stay together and in order.
    for first, second in zip(events[::2], events[1::2], strict=True):
        assert first.stream_id == second.stream_id
        assert (first.stream_version, second.stream_version) == (1, 2)


async def test_a_late_commit_is_never_passed_by_a_reader(
    pool: asyncpg.Pool, store: EventStore
) -> None:
    slow = await pool.acquire()
    tx = slow.transaction()
    await tx.start()
    await store.append(slow, [envelope("slow", 1)])

    async def fast() -> None:
        async with pool.acquire() as conn, conn.transaction():
            await store.append(conn, [envelope("fast", 1)])

    racing = asyncio.create_task(fast())
    done, _ = await asyncio.wait({racing}, timeout=0.3)
    # The fast writer waits for the slow one: a reader sees no later position first.
    assert not done
    assert await store.read_after(pool, 0) == []
    await tx.commit()
    await pool.release(slow)
    await racing
    assert [e.stream_id for e in await store.read_after(pool, 0)] == ["slow", "fast"]


async def test_a_big_append_goes_by_copy_with_the_same_guarantees(
    pool: asyncpg.Pool, store: EventStore
) -> None:
    """Appends of COPY_FROM events or more take another path: positions stay dense
    around small appends, what is read back is what was written, and a stream
    conflict is still a ConcurrencyConflict that writes nothing."""
    big = [envelope(f"big-{i}", 1, i) for i in range(COPY_FROM + 5)]
    async with pool.acquire() as conn, conn.transaction():
        await store.append(conn, [envelope("small", 1)])
    async with pool.acquire() as conn, conn.transaction():
        last = await store.append(conn, big)
    async with pool.acquire() as conn, conn.transaction():
        await store.append(conn, [envelope("small", 2)])
    assert last == len(big) + 1
    events = await store.read_after(pool, 0, 5000)
    assert [e.position for e in events] == list(range(1, len(big) + 3))
    read_back = events[1:-1]
    assert [(e.event_id, e.stream_id, e.data, e.occurred_at) for e in read_back] == [
        (e.event_id, e.stream_id, e.data, e.occurred_at) for e in big
    ]
    clash = [envelope(f"other-{i}", 1) for i in range(COPY_FROM)] + [envelope("big-7", 1)]
    with pytest.raises(ConcurrencyConflict):
        async with pool.acquire() as conn, conn.transaction():
            await store.append(conn, clash)
    assert await store.head(pool) == len(big) + 2


async def wal_flushed(pool: asyncpg.Pool) -> int:
    """How far the WAL is flushed, seen from another session."""
    flushed: int = await pool.fetchval("SELECT pg_current_wal_flush_lsn()")
    return flushed


async def test_a_durable_head_is_read_with_the_wal_flushed_past_what_it_saw(
    pool: asyncpg.Pool, store: EventStore
) -> None:
    """What a consistency answer tells a caller it may read: the head, with the WAL
    flushed past every commit before it, also a commit left unflushed (the WAL writer
    would get there only within 200 ms: most rounds would fail without the flush)."""
    async with pool.acquire() as conn:
        for version in range(1, 21):
            async with conn.transaction():
                # Asynchronous already: the append owes no flush of its own.
                await conn.execute("SET LOCAL synchronous_commit = off")
                last = await store.append(conn, [envelope("durable", version)])
                written = await conn.fetchval("SELECT pg_current_wal_insert_lsn()")
            types = None if version % 2 else ["test.Happened"]
            assert await store.durable_head(pool, types) == last, f"round {version}"
            assert await wal_flushed(pool) >= written, f"round {version}"
    assert await store.durable_head(pool, ["test.NeverHappened"]) == 0


async def test_an_append_is_durable_when_its_transaction_returns(
    pool: asyncpg.Pool, store: EventStore
) -> None:
    """Appends commit asynchronously (so the store's lock is not held through the WAL
    flush) and their transaction flushes before it returns: every time, the WAL is
    flushed past what the transaction wrote. Without the flush, the WAL writer lags
    behind (it flushes every 200 ms): most rounds would fail."""
    async with pool.acquire() as conn:
        for version in range(1, 21):
            async with conn.transaction():
                await store.append(conn, [envelope("durable", version)])
                assert await conn.fetchval("SHOW synchronous_commit") == "off"
                written = await conn.fetchval("SELECT pg_current_wal_insert_lsn()")
            assert await wal_flushed(pool) >= written, f"round {version}"
        # A transaction opened by hand and committed by hand (a keyed request's) too.
        tx = conn.transaction()
        await tx.start()
        await store.append(conn, [envelope("durable", 21)])
        written = await conn.fetchval("SELECT pg_current_wal_insert_lsn()")
        await tx.commit()
        assert await wal_flushed(pool) >= written


async def test_only_the_outer_commit_flushes_and_a_rollback_owes_nothing(
    pool: asyncpg.Pool, store: EventStore
) -> None:
    async with pool.acquire() as conn:
        owes = lambda: conn._con._owes_flush  # noqa: E731 - the connection's debt
        async with conn.transaction():
            async with conn.transaction():  # a savepoint: its end is not the commit
                await store.append(conn, [envelope("nested", 1)])
            assert owes()
        assert not owes()
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await store.append(conn, [envelope("nested", 2)])
                raise RuntimeError("the handler failed")
        assert not owes()
        assert [e.stream_version for e in await store.read_stream(pool, "nested")] == [1]


async def test_appends_outside_a_pooled_transaction_commit_synchronously(
    pool: asyncpg.Pool, store: EventStore, database_url: str
) -> None:
    """No one would flush after them: a plain connection, or a BEGIN by hand."""
    plain = await db.connect(database_url)
    try:
        async with plain.transaction():
            await store.append(plain, [envelope("sync", 1)])
            assert await plain.fetchval("SHOW synchronous_commit") == "on"
    finally:
        await plain.close()
    async with pool.acquire() as conn:
        await conn.execute("BEGIN")
        await store.append(conn, [envelope("sync", 2)])
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
        await conn.execute("COMMIT")
        assert not conn._con._owes_flush
        # Commits asynchronous already (an operator's choice): left so, nothing owed.
        async with conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit = off")
            await store.append(conn, [envelope("sync", 3)])
            assert not conn._con._owes_flush
