"""The event store on a real PostgreSQL: optimistic concurrency and ordering."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

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
