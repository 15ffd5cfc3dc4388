"""Read models as disposable tables, fed by events, rebuildable from the store.

A projection maps event types to batch handlers. The same handlers serve the
live path (inline in a write transaction, or from a consumer) and a rebuild,
which is why a rebuild gives the same rows.
"""

from __future__ import annotations

import itertools
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


async def rebuild(pool: asyncpg.Pool, store: EventStore, projection: Projection) -> int:
    """Drop the projection's rows and replay the store into it; returns events replayed.

    Runs in one transaction, holding the store's append lock, so no write
    interleaves with the replay and readers see the old rows until it commits.
    """
    replayed = 0
    async with pool.acquire() as conn, conn.transaction():
        await store.lock(conn)
        await conn.execute(f"TRUNCATE {', '.join(projection.tables)}")
        async for envelopes in store.read_all(conn):
            await projection.apply(conn, envelopes)
            replayed += len(envelopes)
    return replayed
