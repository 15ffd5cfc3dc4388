"""Read models as disposable tables, fed by events, rebuildable from the store.

A projection maps event types to batch handlers. The same handlers serve the
live path (inline in a write transaction, or from a consumer) and a rebuild,
which is why a rebuild gives the same rows.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import asyncpg

from shared.contracts.envelope import Envelope
from shared.kit.db import Conn
from shared.kit.eventstore import EventStore

BatchHandler = Callable[[Conn, Sequence[Envelope]], Awaitable[None]]


@dataclass
class Projection:
    name: str
    ddl: str
    tables: Sequence[str]
    handlers: dict[str, BatchHandler] = field(default_factory=dict)

    def on(self, event_type: str) -> Callable[[BatchHandler], BatchHandler]:
        def register(handler: BatchHandler) -> BatchHandler:
            self.handlers[event_type] = handler
            return handler

        return register

    async def setup(self, conn: Conn) -> None:
        await conn.execute(self.ddl)

    async def apply(self, conn: Conn, envelopes: Sequence[Envelope]) -> None:
        # Consecutive events of one type go to their handler together, set-based;
        # runs keep the store's order between types.
        for event_type, run in itertools.groupby(envelopes, key=lambda e: e.type):
            handler = self.handlers.get(event_type)
            if handler is not None:
                await handler(conn, list(run))


# Writers project, then append: they lock a read model's tables, then the store's head
# row. A rebuild takes them in the same order (a TRUNCATE after the head lock would
# deadlock with a writer caught in between), and waits at most LOCK_WAIT for them, less
# than PostgreSQL's deadlock check (deadlock_timeout, 1 s), so that if it ever meets a
# writer the other way round, it is the rebuild that lets go, and tries again.
LOCK_WAIT = "500ms"
REBUILD_TRIES_S = 120.0


async def rebuild(pool: asyncpg.Pool, store: EventStore, projection: Projection) -> int:
    """Drop the projection's rows and replay the store into it; returns events replayed.

    Runs in one transaction holding the tables and the store's append lock, so no write
    interleaves with the replay; readers of the tables wait until it commits.
    """
    tables = ", ".join(projection.tables)
    deadline = time.monotonic() + REBUILD_TRIES_S
    while True:
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT}'")
                await conn.execute(f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE")
                await store.lock(conn)
                await conn.execute("SET LOCAL lock_timeout = 0")
                await conn.execute(f"TRUNCATE {tables}")
                replayed = 0
                async for envelopes in store.read_all(conn):
                    await projection.apply(conn, envelopes)
                    replayed += len(envelopes)
                return replayed
        except (asyncpg.LockNotAvailableError, asyncpg.DeadlockDetectedError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(random.uniform(0.05, 0.25))  # let the writers through
