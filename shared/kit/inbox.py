"""Idempotent consumer: the inbox row and the effect commit together, then the offset.

A batch from Kafka is applied in one transaction; each event id goes into the
inbox first, and only events the inbox had not seen reach the handler. The
Kafka offset is committed after the database commit, so a crash in between
redelivers events the inbox then drops. A batch that fails is retried one
event at a time; an event that keeps failing goes to `<topic>.dlq` and is
logged, never silently dropped.

The consumer also keeps, per source store, a watermark: the highest position
below which it has applied every event. Consistency tokens wait on it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from shared.contracts import topics as topic_names
from shared.contracts.envelope import Envelope
from shared.kit import tracing
from shared.kit.bus import decode
from shared.kit.db import Conn
from shared.kit.logs import log

PRUNE_EVERY_S = 60.0
ADVANCE_PAGE = 5000
# Batches slower than this are logged, with what they held.
SLOW_BATCH_S = 0.5

# A lost database connection (a restart): never a reason to dead-letter an event.
LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)

# Gets consecutive new events of one type together, so a reaction can be set-based.
Handler = Callable[[Conn, Sequence[Envelope]], Awaitable[None]]


class Inbox:
    """The inbox and watermark tables of one consumer, in its service's schema."""

    def __init__(self, schema: str, consumer: str) -> None:
        self.schema = schema
        self.consumer = consumer

    async def setup(self, conn: Conn) -> None:
        s = self.schema
        await conn.execute(
            f"""
            CREATE SCHEMA IF NOT EXISTS {s};
            CREATE TABLE IF NOT EXISTS {s}.inbox (
                consumer text NOT NULL,
                event_id uuid NOT NULL,
                source text NOT NULL,
                position bigint NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (consumer, event_id)
            );
            CREATE INDEX IF NOT EXISTS inbox_position ON {s}.inbox (consumer, source, position);
            CREATE TABLE IF NOT EXISTS {s}.watermarks (
                consumer text NOT NULL,
                source text NOT NULL,
                position bigint NOT NULL,
                PRIMARY KEY (consumer, source)
            );
            """
        )

    async def admit(self, conn: Conn, envelopes: Sequence[Envelope]) -> set[str]:
        """Record the events; returns the ids not seen before (to be applied now).

        An event at or below its source's watermark was applied, whether or not its
        inbox row has been pruned since.
        """
        rows = await conn.fetch(
            f"""INSERT INTO {self.schema}.inbox (consumer, event_id, source, position)
                SELECT $1, e, s, p FROM unnest($2::uuid[], $3::text[], $4::bigint[]) AS x(e, s, p)
                WHERE p > coalesce((SELECT w.position FROM {self.schema}.watermarks w
                                    WHERE w.consumer = $1 AND w.source = x.s), 0)
                ON CONFLICT DO NOTHING RETURNING event_id""",
            self.consumer,
            [e.event_id for e in envelopes],
            [e.source for e in envelopes],
            [e.position for e in envelopes],
        )
        return {str(r["event_id"]) for r in rows}

    async def advance(self, conn: Conn, sources: set[str]) -> None:
        """Move each source's watermark to the end of the run applied right after it.

        Reads positions above the watermark in index order, a page at a time: the
        cost is the run just applied, whatever the inbox's size or its statistics.
        """
        s = self.schema
        # In one order everywhere: replicas iterate a set in different orders (string
        # hashes are seeded per process), and opposite orders of these row locks deadlock.
        for source in sorted(sources):
            await conn.execute(
                f"""INSERT INTO {s}.watermarks (consumer, source, position) VALUES ($1, $2, 0)
                    ON CONFLICT DO NOTHING""",
                self.consumer,
                source,
            )
            mark: int = await conn.fetchval(
                f"""SELECT position FROM {s}.watermarks
                    WHERE consumer = $1 AND source = $2 FOR UPDATE""",
                self.consumer,
                source,
            )
            start = mark
            while True:
                above = await conn.fetch(
                    f"""SELECT position FROM {s}.inbox
                        WHERE consumer = $1 AND source = $2 AND position > $3
                        ORDER BY position LIMIT {ADVANCE_PAGE}""",
                    self.consumer,
                    source,
                    mark,
                )
                run = 0
                for row in above:
                    if row["position"] != mark + run + 1:
                        break
                    run += 1
                mark += run
                if run < ADVANCE_PAGE:
                    break
            if mark != start:
                await conn.execute(
                    f"""UPDATE {s}.watermarks SET position = $3
                        WHERE consumer = $1 AND source = $2""",
                    self.consumer,
                    source,
                    mark,
                )

    async def applied_below(self, conn: Conn, source: str, position: int) -> bool:
        """Whether every event of `source` below `position` is applied, in this
        transaction's view: a handler's read model then shows the source's state just
        before that event. A batch goes in position order, so the events of the batch
        before a handler's run count as applied."""
        s = self.schema
        mark: int = (
            await conn.fetchval(
                f"SELECT position FROM {s}.watermarks WHERE consumer = $1 AND source = $2",
                self.consumer,
                source,
            )
            or 0
        )
        if mark >= position - 1:
            return True
        seen: int = await conn.fetchval(
            f"""SELECT count(*) FROM {s}.inbox
                WHERE consumer = $1 AND source = $2 AND position > $3 AND position < $4""",
            self.consumer,
            source,
            mark,
            position,
        )
        return seen == position - 1 - mark

    async def prune(self, conn: Conn | asyncpg.Pool, keep: timedelta = timedelta(hours=1)) -> int:
        """Forget inbox rows the watermark has passed (kept a while, for inspection)."""
        done: str = await conn.execute(
            f"""DELETE FROM {self.schema}.inbox i USING {self.schema}.watermarks w
                WHERE i.consumer = $1 AND w.consumer = $1 AND w.source = i.source
                  AND i.position <= w.position AND i.applied_at < now() - $2::interval""",
            self.consumer,
            keep,
        )
        return int(done.split()[-1])

    @property
    def channel(self) -> str:
        return f"{self.schema}_watermarks"

    async def watermarks(self, conn: Conn | asyncpg.Pool) -> dict[str, int]:
        rows = await conn.fetch(
            f"SELECT source, position FROM {self.schema}.watermarks WHERE consumer = $1",
            self.consumer,
        )
        return {r["source"]: r["position"] for r in rows}


class Consumer:
    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        inbox: Inbox,
        topics: Sequence[str],
        handle: Handler,
        bootstrap: str,
        dead_letters: AIOKafkaProducer,
        attempts: int = 3,
        max_batch: int = 10_000,
        after_db_commit: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.pool = pool
        self.inbox = inbox
        self.topics = tuple(topics)
        self.handle = handle
        self.bootstrap = bootstrap
        self.dead_letters = dead_letters
        self.attempts = attempts
        self.max_batch = max_batch
        # A seam for tests that kill the consumer between the two commits.
        self.after_db_commit = after_db_commit
        self.ready = asyncio.Event()

    async def run(self) -> None:
        kafka = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.bootstrap,
            group_id=self.inbox.consumer,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,
            # Large batches: a folder deletion sends one event per file.
            max_poll_records=self.max_batch,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        await kafka.start()
        next_prune = time.monotonic() + PRUNE_EVERY_S
        try:
            while True:
                batches = await kafka.getmany(timeout_ms=500)
                self.ready.set()
                if time.monotonic() > next_prune:
                    await self.inbox.prune(self.pool)
                    next_prune = time.monotonic() + PRUNE_EVERY_S
                messages = [m for batch in batches.values() for m in batch]
                if not messages:
                    continue
                await self.apply_messages(messages)
                if self.after_db_commit is not None:
                    await self.after_db_commit()
                await kafka.commit()
        finally:
            await kafka.stop()

    async def apply_messages(self, messages: Sequence[ConsumerRecord[Any, Any]]) -> None:
        envelopes: list[Envelope] = []
        # With tracing on, the trace context of each message's headers, by event id.
        carried: dict[uuid.UUID, str | None] | None = {} if tracing.enabled else None
        for message in messages:
            try:
                envelope = decode(message.value)
            except Exception as error:  # malformed on the wire: nothing to apply
                await self._dead_letter(message.topic, message.value, repr(error))
                continue
            envelopes.append(envelope)
            if carried is not None:
                carried[envelope.event_id] = tracing.carried(message.headers)
        # Partitions interleave; within a batch, apply each source's events in the
        # order its store recorded them.
        envelopes.sort(key=lambda e: (e.source, e.position))
        try:
            await self._apply(envelopes, carried)
        except Exception:
            log.warning("consumer.batch_failed", consumer=self.inbox.consumer, exc_info=True)
            for envelope in envelopes:
                await self._apply_alone(envelope, carried)

    async def _apply(
        self, envelopes: Sequence[Envelope], carried: Mapping[uuid.UUID, str | None] | None = None
    ) -> None:
        started = time.monotonic()
        async with self.pool.acquire() as conn, conn.transaction():
            fresh = await self.inbox.admit(conn, envelopes)
            new = [e for e in envelopes if str(e.event_id) in fresh]
            for event_type, run in itertools.groupby(new, key=lambda e: e.type):
                batch = list(run)
                with (
                    structlog.contextvars.bound_contextvars(
                        correlation_id=batch[0].correlation_id,
                        causation_id=str(batch[0].event_id),
                        event_type=event_type,
                        events=len(batch),
                    ),
                    tracing.reacting(f"{self.inbox.consumer} {event_type}", batch, carried),
                ):
                    await self.handle(conn, batch)
            await self.inbox.advance(conn, {e.source for e in envelopes})
            await conn.execute(f"NOTIFY {self.inbox.channel}")
        took = time.monotonic() - started
        if took > SLOW_BATCH_S:
            log.info(
                "consumer.slow_batch",
                consumer=self.inbox.consumer,
                events=len(envelopes),
                new=len(new),
                types=sorted({e.type for e in new}),
                seconds=round(took, 3),
            )

    async def _apply_alone(
        self, envelope: Envelope, carried: Mapping[uuid.UUID, str | None] | None = None
    ) -> None:
        for attempt in range(1, self.attempts + 1):
            try:
                await self._apply([envelope], carried)
                return
            except Exception as error:
                if isinstance(error, LOST):
                    # Not the event's fault: the consumer starts again and the event is
                    # delivered again (its offset was not committed).
                    raise
                if attempt == self.attempts:
                    log.error(
                        "consumer.dead_letter",
                        consumer=self.inbox.consumer,
                        event_id=str(envelope.event_id),
                        event_type=envelope.type,
                        exc_info=True,
                    )
                    await self._dead_letter(
                        f"files.{envelope.source}",
                        envelope.model_dump_json().encode(),
                        repr(error),
                    )
                    # Mark it seen so the watermark can move past it.
                    async with self.pool.acquire() as conn, conn.transaction():
                        await self.inbox.admit(conn, [envelope])
                        await self.inbox.advance(conn, {envelope.source})
                else:
                    await asyncio.sleep(0.05 * attempt)

    async def _dead_letter(self, topic: str, value: bytes, reason: str) -> None:
        await self.dead_letters.send_and_wait(
            topic_names.dead_letters(topic),
            value,
            headers=[("consumer", self.inbox.consumer.encode()), ("reason", reason.encode())],
        )
        log.error("consumer.dead_lettered", topic=topic, reason=reason)
