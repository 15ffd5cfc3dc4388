"""Idempotent consumer: the inbox row and the effect commit together, then the offset.

A batch from Kafka is applied in one transaction; each event id goes into the
inbox first, and only events the inbox had not seen reach the handler. The
batch's Kafka offsets are committed after the database commit, so a crash in between
redelivers events the inbox then drops. The next batch is fetched (and its `ahead`
work done) while this one's transaction runs; its offsets wait for its own turn.

Failures (`Consumer._transiently` is the one place that retries; shared/kit/retry.py
says what is transient): a transient failure (lost connection, restart, deadlock,
serialization failure, timeout...) retries the same batch with backoff and jitter for
`Policy.retry_for_s`, never passing it; past that the consumer stops (`Stalled`) and
its supervisor starts it again from the last committed offset. Any other failure
splits the batch to find the event at fault, which is tried `Policy.poison_tries`
times and then dead-lettered: a row in `<schema>.dead_letters` and a message on
`<topic>.dlq`, logged. A dead letter counts as handled for the watermark, so
consistency waits do not hang on it; `files dlq replay` re-drives it through the
same handler, once (its row's status changes in the handler's transaction).

The consumer also keeps, per source store, a watermark: the highest position
below which it has handled every event (applied, or dead-lettered). Consistency
tokens wait on it, held short of events a service handled but set aside (`held`).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, TopicPartition

from shared.contracts import topics as topic_names
from shared.contracts.envelope import Envelope
from shared.kit import tracing
from shared.kit.bus import PARKED, decode
from shared.kit.db import Conn
from shared.kit.logs import log
from shared.kit.reactions import made_ahead
from shared.kit.retry import Backoff, Policy, transient

T = TypeVar("T")

PRUNE_EVERY_S = 60.0
# How long a stopping consumer waits for the broker to take its leaving the group.
LEAVE_GROUP_S = 5.0
# How often a consumer looks for dead letters someone asked to replay.
REPLAYS_EVERY_S = 1.0
# How long the broker may hold a fetch that finds nothing. tansu does not answer a held
# fetch the moment data arrives (measured on this machine: a message was seen a median
# 5 ms after its send at 20 ms, 18 ms at 100, 103 ms at 500), and an idle consumer asks
# again this often: a whole platform at rest took 45% of a core at 20 ms, 17% at 100 ms.
FETCH_MAX_WAIT_MS = 100
# While a batch is applied, how long the next one's gathering waits at a time for more
# (on the fetcher's buffer, no broker round trip): the most its turn can come late.
TURN_POLL_MS = 10
ADVANCE_PAGE = 5000
# Batches slower than this are logged, with what they held.
SLOW_BATCH_S = 0.5

# Gets consecutive new events of one type together, so a reaction can be set-based.
Handler = Callable[[Conn, Sequence[Envelope]], Awaitable[None]]


class Inbox:
    """The inbox and watermark tables of one consumer, in its service's schema."""

    def __init__(self, schema: str, consumer: str, held: str = "") -> None:
        self.schema = schema
        self.consumer = consumer
        # A service's events handled but not applied yet (set aside until something else
        # comes, as the catalog's arrivals waiting for their folder): SQL for the first
        # position of the source `w.source` such an event has, or null. What consistency
        # waits read stops short of it; the watermark itself (what is admitted, pruned)
        # passes it, so the batches after go on.
        self.held = held
        # Sources whose watermark row this process has seen: their batches lock it
        # without first inserting it (a statement a source and batch; rows are never
        # deleted, and one found missing is inserted again).
        self._marked: set[str] = set()

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
            -- Events a consumer gave up on (`files dlq`): the envelope (null for a message
            -- that was none: then `raw`), why, how often and when it failed, and what
            -- became of it: dead, replay_requested, replayed or replay_failed.
            CREATE TABLE IF NOT EXISTS {s}.dead_letters (
                id uuid PRIMARY KEY,
                consumer text NOT NULL,
                topic text NOT NULL,
                event_id uuid,
                type text,
                source text,
                position bigint,
                envelope jsonb,
                raw bytea,
                error text NOT NULL,
                tries integer NOT NULL,
                first_failed_at timestamptz NOT NULL,
                last_failed_at timestamptz NOT NULL,
                status text NOT NULL DEFAULT 'dead',
                replay_requested_at timestamptz,
                replayed_at timestamptz,
                replay_error text,
                UNIQUE (consumer, event_id)
            );
            CREATE INDEX IF NOT EXISTS dead_letters_requested ON {s}.dead_letters (consumer)
                WHERE status = 'replay_requested';
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

    async def advance(self, conn: Conn, sources: set[str], passed: Sequence[Envelope] = ()) -> None:
        """Move each source's watermark to the end of the run applied right after it.

        Reads positions above the watermark in index order, a page at a time: the
        cost is the run just applied, whatever the inbox's size or its statistics.
        `passed` are events of this batch the consumer has no use for: they count as
        applied without an inbox row, unless they are above the watermark when it stops
        (a gap before them): then they get their row, so that a later run passes them.
        A watermark moved notifies the consumer's channel (at commit).
        """
        s = self.schema
        skipped: dict[str, set[int]] = {}
        for e in passed:
            skipped.setdefault(e.source, set()).add(e.position)
        # In one order everywhere: replicas iterate a set in different orders (string
        # hashes are seeded per process), and opposite orders of these row locks deadlock.
        for source in sorted(sources):
            mark = await self._lock_mark(conn, source)
            start = mark
            mine = skipped.get(source, set())
            while True:
                above = await self._page(conn, source, mark)
                # Passed-over positions up to the last the page reached (beyond it, the
                # inbox may hold rows this page did not read).
                reach = above[-1] if len(above) == ADVANCE_PAGE else None
                present = sorted(
                    {*above, *(p for p in mine if p > mark and (reach is None or p <= reach))}
                )
                run = 0
                for position in present:
                    if position != mark + run + 1:
                        break
                    run += 1
                mark += run
                if run < len(present) or len(above) < ADVANCE_PAGE:
                    break
            if left := {p for p in mine if p > mark}:
                await conn.execute(
                    f"""INSERT INTO {s}.inbox (consumer, event_id, source, position)
                        SELECT $1, e, $2, p FROM unnest($3::uuid[], $4::bigint[]) AS x(e, p)
                        ON CONFLICT DO NOTHING""",
                    self.consumer,
                    source,
                    [e.event_id for e in passed if e.source == source and e.position in left],
                    [e.position for e in passed if e.source == source and e.position in left],
                )
            if mark != start:
                # Waiters (kit/consistency.py) are woken in the same round trip, and only
                # by a batch that moved a watermark: one that moved none changed nothing
                # they read. (Notifications of one transaction are sent once, at commit.)
                await conn.execute(
                    f"""WITH moved AS (
                            UPDATE {s}.watermarks SET position = $3
                            WHERE consumer = $1 AND source = $2 RETURNING 1)
                        SELECT pg_notify($4, '') FROM moved""",
                    self.consumer,
                    source,
                    mark,
                    self.channel,
                )

    async def _page(self, conn: Conn, source: str, mark: int) -> list[int]:
        """Positions of the source's inbox rows above `mark`, a page of them in order."""
        rows = await conn.fetch(
            f"""SELECT position FROM {self.schema}.inbox
                WHERE consumer = $1 AND source = $2 AND position > $3
                ORDER BY position LIMIT {ADVANCE_PAGE}""",
            self.consumer,
            source,
            mark,
        )
        return [r["position"] for r in rows]

    async def _lock_mark(self, conn: Conn, source: str) -> int:
        """The source's watermark, its row locked for this transaction (made at 0 if
        there is none: for a source seen before, a statement fewer a source and batch,
        which runs for every batch of every consumer). The page above it is read by a
        statement of its own, after the lock: read in the locking statement, its
        snapshot would be older than the lock and miss the inbox rows of a batch that
        committed in between, stopping the watermark short of them until the source's
        next batch."""
        s = self.schema
        if source in self._marked:
            known: int | None = await conn.fetchval(
                f"""SELECT position FROM {s}.watermarks
                    WHERE consumer = $1 AND source = $2 FOR UPDATE""",
                self.consumer,
                source,
            )
            if known is not None:
                return known
        await conn.execute(
            f"""INSERT INTO {s}.watermarks (consumer, source, position)
                VALUES ($1, $2, 0) ON CONFLICT DO NOTHING""",
            self.consumer,
            source,
        )
        mark: int = await conn.fetchval(
            f"""SELECT position FROM {s}.watermarks
                WHERE consumer = $1 AND source = $2 FOR UPDATE""",
            self.consumer,
            source,
        )
        # Known from now on, even should this transaction roll back its insert: then the
        # lock above finds no row, and the insert comes again.
        self._marked.add(source)
        return mark

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
        """How far each source is applied, as consistency waits read it: the watermark,
        or short of the first event `held` names (in the same statement)."""
        position = f"least(w.position, ({self.held}) - 1)" if self.held else "w.position"
        rows = await conn.fetch(
            f"""SELECT w.source, {position} AS position FROM {self.schema}.watermarks w
                WHERE w.consumer = $1""",
            self.consumer,
        )
        return {r["source"]: r["position"] for r in rows}


@dataclass
class Fetched:
    """A batch as fetched: its messages (for their offsets), its events to apply in
    order, and what is set aside of it (malformed messages, parked events)."""

    messages: list[ConsumerRecord[Any, Any]]
    envelopes: list[Envelope]
    carried: dict[uuid.UUID, str | None] | None
    idle: frozenset[str]
    malformed: list[tuple[str, bytes, str]]
    parked: list[Envelope]
    # What `prepare` made of it ahead of its turn (None: not made, or it failed).
    made: Mapping[uuid.UUID, Any] | None = None


class Stalled(Exception):
    """A transient failure outlasted the retry policy: the consumer stops, without
    passing the event, and its supervisor starts it again."""


def in_causal_order(envelopes: Iterable[Envelope]) -> list[Envelope]:
    """A batch's events in the order they are applied: each source's in the order its
    store recorded them (partitions interleave), and the sources merged by when their
    events occurred, so that an event is applied after those of other sources that led
    to it. (By source name, `dicom` came before `ingest`: the catalog applied a DICOM
    series before the synced folder it goes into, which ingest had asked for first, and
    rejected it as if that folder were deleted; CI, 2026-12-06.) Each source's order is
    kept whatever its times say: the merge only ever takes a source's next event."""
    by_source: dict[str, list[Envelope]] = {}
    for envelope in envelopes:
        by_source.setdefault(envelope.source, []).append(envelope)
    if len(by_source) == 1:
        [only] = by_source.values()
        return sorted(only, key=lambda e: e.position)
    return list(
        heapq.merge(
            *(sorted(events, key=lambda e: e.position) for events in by_source.values()),
            # As a number: an aware and a naive time (an event of some older writer)
            # compare, where as datetimes they would stop the consumer.
            key=lambda e: e.occurred_at.timestamp(),
        )
    )


async def _stop_leaving_the_group(kafka: AIOKafkaConsumer) -> None:
    """Stopped, and out of its group. aiokafka leaves a group only from a generation
    above 0, and tansu numbers a group's first generation 0: a consumer stopped in it
    stayed a member until its session ended, and the next one (its own restart, a test's
    second consumer) joined, waited 5 s on the gone leader's assignment, and joined
    again: 8 s more before it got its partitions. LeaveGroup names no generation."""
    coordinator = getattr(kafka, "_coordinator", None)
    leave = getattr(coordinator, "_maybe_leave_group", None)
    if coordinator is not None and leave is not None:

        async def leave_from_generation_0_too() -> None:
            if coordinator.generation == 0:
                coordinator.generation = 1
            # Bounded: a hung broker would hold a stop for its request timeout (40 s),
            # past a service's stop grace; the session's end lets the member go then.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(leave(), LEAVE_GROUP_S)

        coordinator._maybe_leave_group = leave_from_generation_0_too
    await kafka.stop()


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
        policy: Policy | None = None,
        max_batch: int = 10_000,
        max_fetch_bytes: int = 8 * 1024 * 1024,
        after_db_commit: Callable[[], Awaitable[None]] | None = None,
        wanted: Collection[str] | None = None,
        idle: Callable[[asyncpg.Pool], Awaitable[frozenset[str]]] | None = None,
        prepare: Callable[[Sequence[Envelope]], Awaitable[Mapping[uuid.UUID, Any]]] | None = None,
    ) -> None:
        self.pool = pool
        self.inbox = inbox
        self.topics = tuple(topics)
        self.handle = handle
        # The event types `handle` reacts to (None: all). The others on the same topics
        # (most of them: a DICOM upload's per-instance events, for every consumer but
        # the DICOM context's) are passed over without an inbox row each.
        self.wanted = frozenset(wanted) if wanted is not None else None
        # The types whose envelopes are read whole (the others only as far as the
        # watermark needs: shared/kit/bus.py `decode`).
        self._read_whole = None if self.wanted is None else self.wanted | {PARKED}
        # Asked once a poll: wanted types no reaction would act on now (ingest's
        # webhooks' triggers while no webhook is registered), passed over the same way.
        self.idle = idle
        # Work on a batch's events before its transaction opens (`Reactions.ahead`).
        self.prepare = prepare
        self.bootstrap = bootstrap
        self.dead_letters = dead_letters
        self.policy = policy or Policy()
        self.max_batch = max_batch
        self.max_fetch_bytes = max_fetch_bytes
        # After each batch's transaction, before its offsets go (a service's wake for
        # work the batch left; a seam for tests that kill the consumer between the two).
        self.after_db_commit = after_db_commit
        self.ready = asyncio.Event()
        # Counters since start (also logged): transient failures retried, dead letters.
        self.retried = 0
        self.dead_lettered = 0

    async def run(self) -> None:
        kafka = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.bootstrap,
            group_id=self.inbox.consumer,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            # Large batches: a folder deletion sends one event per file.
            max_poll_records=self.max_batch,
            max_partition_fetch_bytes=self.max_fetch_bytes,
            # A batch may be retried (transient failures) for retry_for_s: the group
            # keeps its partitions meanwhile.
            max_poll_interval_ms=int((self.policy.retry_for_s + 60) * 1000),
            # A member that died (kill -9) holds its partitions until its session ends,
            # and its restarted self waits for that to join: 6 s (Kafka's least by
            # default) rather than 10 brings a killed service back in about 11 s, not 18.
            session_timeout_ms=6000,
            heartbeat_interval_ms=2000,
        )
        await kafka.start()
        next_prune = time.monotonic() + PRUNE_EVERY_S
        next_replays = time.monotonic()
        # The next batch, fetched and made ready (`Reactions.ahead`) while this batch's
        # transaction runs: the consumer applies one batch at a time, and at 64x64 DICOM
        # requests queued at it, each batch's reads and fetch waiting for the last one's
        # commit (bench/README.md, dicom). So offsets are committed by the batch, once
        # its transaction has: a plain `commit()` would commit the positions fetched, the
        # next batch's too, which a crash then would lose.
        next_batch: asyncio.Task[tuple[Fetched, Fetched | None]] | None = None
        # Set when the batch before is done: the batch gathered ahead stops taking more.
        turn = asyncio.Event()
        # Fetched already, to be applied next (what could not join the batch before).
        pending: Fetched | None = None
        # What arrived as the batch's turn came and needs making ready: the next batch's
        # start, made ready while this one is applied.
        late: Fetched | None = None
        # The offsets of the batch applied last, on their way to the broker.
        committing: asyncio.Task[None] | None = None
        try:
            while True:
                if committing is not None and committing.done():
                    committing.result()  # a failed commit stops the consumer, as before
                if pending is not None:
                    fetched, pending = pending, None
                elif next_batch is not None:
                    turn.set()
                    (fetched, pending), next_batch = await next_batch, None
                    if fetched.messages and pending is None:
                        fetched, pending, late = await self._topped_up(kafka, fetched)
                else:
                    fetched = await self._fetch(kafka)
                self.ready.set()
                if time.monotonic() > next_prune:
                    await self.inbox.prune(self.pool)
                    next_prune = time.monotonic() + PRUNE_EVERY_S
                if time.monotonic() > next_replays:
                    await self.replay_requested()
                    next_replays = time.monotonic() + REPLAYS_EVERY_S
                if not fetched.messages:
                    continue
                if pending is None:
                    # (With one pending, that is the next batch: a second fetch meanwhile
                    # would take messages no batch then applies, its offsets committed
                    # past them by the batches after.)
                    turn = asyncio.Event()
                    next_batch = asyncio.create_task(self._gathered_ahead(kafka, turn, late))
                    late = None
                await self._apply_fetched(fetched)
                if self.after_db_commit is not None:
                    await self.after_db_commit()
                # The offsets go to the broker while the next batch is applied: a broker
                # round trip (1-26 ms, 65-210 ms on a loaded machine) that each batch
                # waited for before the next transaction. Each commit follows the one
                # before, so the group's offset only moves on; one lost in a crash has
                # its batch delivered again, which the inbox drops.
                if committing is not None:
                    await committing
                committing = asyncio.create_task(self.commit_offsets(kafka, fetched.messages))
        finally:
            if next_batch is not None:
                next_batch.cancel()
                # Dropped: its offsets are not committed, so the group gets it again.
                await asyncio.gather(next_batch, return_exceptions=True)
            if committing is not None:
                # Landed or not, as for a crash: what it would have passed comes again.
                await asyncio.wait({committing}, timeout=5.0)
                committing.cancel()
                await asyncio.gather(committing, return_exceptions=True)
            await _stop_leaving_the_group(kafka)

    async def commit_offsets(
        self, kafka: AIOKafkaConsumer, messages: Sequence[ConsumerRecord[Any, Any]]
    ) -> None:
        """Commit the offsets past these messages (a batch applied), and no further."""
        ends: dict[TopicPartition, int] = {}
        for message in messages:
            tp = TopicPartition(message.topic, message.partition)
            ends[tp] = max(ends.get(tp, 0), message.offset + 1)
        # A partition a rebalance gave to another member meanwhile is not ours to commit:
        # its new owner starts from its last committed offset, and the inbox drops what
        # this batch applied of it.
        mine = kafka.assignment()
        ends = {tp: offset for tp, offset in ends.items() if tp in mine}
        if ends:
            await kafka.commit(ends)

    async def _gathered_ahead(
        self, kafka: AIOKafkaConsumer, turn: asyncio.Event, first: Fetched | None = None
    ) -> tuple[Fetched, Fetched | None]:
        """The next batch, fetched while the batch before it is applied, and made ready
        (`prepare`) as it comes: what arrives until its turn joins it. A single fetch
        ahead returned the first messages to arrive, often only events passed over (the
        DICOM context's fetch took ingest's own reactions' events), and the instances'
        headers that came next were read in the batch's turn, after the transaction
        before it, 0.2-0.25 s a batch (bench/README.md, dicom, 2026-12-06 evening).
        What cannot join it (the types passed over changed meanwhile) comes back second.
        `first`: fetched already (decoded), to be made ready first."""
        fetched = await self._made(first) if first is not None else await self._fetch(kafka)
        while not turn.is_set() and len(fetched.messages) < self.max_batch:
            messages = await self._fetched_before(
                kafka, turn, self.max_batch - len(fetched.messages)
            )
            if not messages:
                continue
            if not fetched.messages:
                fetched = await self._made(await self._decode(messages))
                continue
            fetched, pending = await self._joined(fetched, await self._decode(messages))
            if pending is not None:
                return fetched, pending
        return fetched, None

    @staticmethod
    async def _fetched_before(
        kafka: AIOKafkaConsumer, turn: asyncio.Event, room: int
    ) -> list[ConsumerRecord[Any, Any]]:
        """Messages as soon as some arrive, or none once `turn` is set: short waits on
        what the fetcher (aiokafka's background task) has brought, the turn looked at
        between them. Not one long wait cancelled at the turn: aiokafka's `getmany`
        counts fetches in progress in a context that a cancel leaves unended, and with
        that count stuck above 0 the group's `max_poll_interval_ms` guard never fires
        again (a batch stuck without raising would keep its partitions for good)."""
        while not turn.is_set():
            batches = await kafka.getmany(timeout_ms=TURN_POLL_MS, max_records=room)
            if messages := [m for batch in batches.values() for m in batch]:
                return messages
        return []

    async def _topped_up(
        self, kafka: AIOKafkaConsumer, fetched: Fetched
    ) -> tuple[Fetched, Fetched | None, Fetched | None]:
        """The batch gathered ahead, joined by what arrived as its turn came, if that
        needs no making ready. What cannot join it (the types passed over changed
        meanwhile) comes back second, to be applied next; what needs making ready comes
        back third, to start the next batch: made ready while this one is applied (made
        here, it was read in the batch's turn: 0.16 s for a DICOM request of 200
        instances that came during the read of the one before)."""
        room = self.max_batch - len(fetched.messages)
        if room <= 0:
            return fetched, None, None
        batches = await kafka.getmany(timeout_ms=0, max_records=room)
        messages = [m for batch in batches.values() for m in batch]
        if not messages:
            return fetched, None, None
        more = await self._decode(messages)
        if (
            more.idle == fetched.idle
            and self.prepare is not None
            and self._used(more.envelopes, more.idle)
        ):
            return fetched, None, more
        return (*(await self._joined(fetched, more)), None)

    async def _joined(self, fetched: Fetched, more: Fetched) -> tuple[Fetched, Fetched | None]:
        """`fetched` joined by `more` (fetched after it, decoded; made ready here), or,
        when they cannot join (the types passed over changed meanwhile), both apart."""
        if more.idle != fetched.idle:
            return fetched, more
        ids = {e.event_id for e in fetched.envelopes}
        added = [e for e in more.envelopes if e.event_id not in ids]
        made = fetched.made
        if made is not None and self.prepare is not None:
            used = self._used(added, more.idle)
            try:
                made = {**made, **(await self.prepare(used))} if used else made
            except Exception:
                made = None  # all made in the batch's turn, with its retries
        carried = (
            {**fetched.carried, **more.carried}
            if fetched.carried is not None and more.carried is not None
            else None
        )
        return Fetched(
            [*fetched.messages, *more.messages],
            in_causal_order([*fetched.envelopes, *added]),
            carried,
            fetched.idle,
            [*fetched.malformed, *more.malformed],
            [*fetched.parked, *(e for e in more.parked if e.event_id not in ids)],
            made,
        ), None

    async def _fetch(self, kafka: AIOKafkaConsumer) -> Fetched:
        """The next batch, decoded, with what `prepare` made of it (if it could)."""
        batches = await kafka.getmany(timeout_ms=500)
        messages = [m for batch in batches.values() for m in batch]
        if not messages:
            return Fetched([], [], None, frozenset(), [], [])
        return await self._made(await self._decode(messages))

    async def _made(self, fetched: Fetched) -> Fetched:
        """`fetched` with what `prepare` made of it (if it could)."""
        if self.prepare is not None:
            used = self._used(fetched.envelopes, fetched.idle)
            try:
                # Nothing to make is made too: the events that join it later are then
                # made as they join (`_joined`), not all again in its turn.
                fetched.made = await self.prepare(used) if used else {}
            except Exception:
                # Made again in the batch's turn, where failures retry as they should.
                log.info("consumer.prepare_ahead_failed", consumer=self.inbox.consumer)
        return fetched

    async def apply_messages(self, messages: Sequence[ConsumerRecord[Any, Any]]) -> None:
        await self._apply_fetched(await self._decode(messages))

    async def _decode(self, messages: Sequence[ConsumerRecord[Any, Any]]) -> Fetched:
        envelopes: list[Envelope] = []
        # With tracing on, the trace context of each message's headers, by event id.
        carried: dict[uuid.UUID, str | None] | None = {} if tracing.enabled else None
        seen: set[uuid.UUID] = set()
        idle: frozenset[str] = frozenset()
        if self.idle is not None and self.wanted is not None:
            ask = self.idle
            idle = await self._transiently(lambda: ask(self.pool), [])
        read_whole = (
            self._read_whole if not idle or self._read_whole is None else self._read_whole - idle
        )
        malformed: list[tuple[str, bytes, str]] = []
        parked: list[Envelope] = []
        for message in messages:
            if message.value is None:
                continue  # a filler the relay padded a partition with (shared/kit/outbox.py)
            try:
                envelope = decode(message.value, read_whole)
            except Exception as error:  # malformed on the wire: nothing to apply
                malformed.append((message.topic, message.value, repr(error)))
                continue
            if envelope.event_id in seen:
                # Published twice (a relay that lost track of a broker that restarted
                # empty publishes again): the inbox admits an id once, and so does a batch.
                continue
            seen.add(envelope.event_id)
            if envelope.type == PARKED:
                # The relay could not publish this event (too big for the bus).
                parked.append(envelope)
                continue
            envelopes.append(envelope)
            if carried is not None:
                carried[envelope.event_id] = tracing.carried(message.headers)
        return Fetched(list(messages), in_causal_order(envelopes), carried, idle, malformed, parked)

    async def _apply_fetched(self, fetched: Fetched) -> None:
        # Dead-lettered in the batch's turn (not as it is fetched, while the batch before
        # is applied): their inbox rows and watermarks follow the batches before.
        for topic, value, error in fetched.malformed:
            await self._dead_letter_raw(topic, value, error)
        for envelope in fetched.parked:
            data = envelope.data
            await self._dead_letter(
                envelope,
                f"the relay of {envelope.source} set it aside: {data.get('type')} is"
                f" {data.get('size')} bytes ({data.get('reason')})",
                tries=0,
                first_failed_at=datetime.now(UTC),
            )
        envelopes, carried, idle, made = (
            fetched.envelopes,
            fetched.carried,
            fetched.idle,
            fetched.made,
        )
        if not envelopes:
            return
        try:
            await self._transiently(lambda: self._apply(envelopes, carried, idle, made), envelopes)
            return
        except Stalled:
            raise
        except Exception:
            if len(envelopes) > 1:
                log.warning("consumer.batch_failed", consumer=self.inbox.consumer, exc_info=True)
        # Not transient: find the event at fault, applying the batch one event at a time.
        for envelope in envelopes:
            await self._apply_alone(envelope, carried, idle)

    async def _transiently(
        self, attempt: Callable[[], Awaitable[T]], envelopes: Sequence[Envelope]
    ) -> T:
        """`attempt()`, tried again after each transient failure (backing off with
        jitter) for the policy's retry_for_s, then Stalled. Other errors go up at once."""
        backoff = Backoff(self.policy)
        while True:
            try:
                return await attempt()
            except Exception as error:
                if not transient(error):
                    raise
                self.retried += 1
                if backoff.expired():
                    log.error(
                        "consumer.stalled",
                        consumer=self.inbox.consumer,
                        first_event_id=str(envelopes[0].event_id) if envelopes else None,
                        seconds=round(backoff.elapsed, 1),
                        error=repr(error),
                    )
                    raise Stalled(
                        f"{self.inbox.consumer}: transient failures for"
                        f" {backoff.elapsed:.0f} s, last {error!r}"
                    ) from error
                log.warning(
                    "consumer.transient_failure",
                    consumer=self.inbox.consumer,
                    events=len(envelopes),
                    tries=backoff.tries + 1,
                    error=repr(error),
                )
                await backoff.wait()

    def _used(self, envelopes: Sequence[Envelope], idle: frozenset[str]) -> list[Envelope]:
        wanted = self.wanted - idle if self.wanted is not None and idle else self.wanted
        return [e for e in envelopes if wanted is None or e.type in wanted]

    async def _apply(
        self,
        envelopes: Sequence[Envelope],
        carried: Mapping[uuid.UUID, str | None] | None = None,
        idle: frozenset[str] = frozenset(),
        made: Mapping[uuid.UUID, Any] | None = None,
    ) -> None:
        """`made`: what `prepare` made of these events already (None: made here)."""
        started = time.monotonic()
        used = self._used(envelopes, idle)
        used_ids = {e.event_id for e in used}
        passed = [e for e in envelopes if e.event_id not in used_ids]
        if made is None:
            made = await self.prepare(used) if self.prepare is not None and used else {}
        with made_ahead(made):
            new = await self._in_transaction(envelopes, used, passed, carried)
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

    async def _in_transaction(
        self,
        envelopes: Sequence[Envelope],
        used: Sequence[Envelope],
        passed: Sequence[Envelope],
        carried: Mapping[uuid.UUID, str | None] | None,
    ) -> list[Envelope]:
        async with self.pool.acquire() as conn, conn.transaction():
            fresh = await self.inbox.admit(conn, used) if used else set()
            new = [e for e in used if str(e.event_id) in fresh]
            for event_type, run in itertools.groupby(new, key=lambda e: e.type):
                await self._handle(conn, event_type, list(run), carried)
            await self.inbox.advance(conn, {e.source for e in envelopes}, passed)
        return new

    async def _handle(
        self,
        conn: Conn,
        event_type: str,
        batch: list[Envelope],
        carried: Mapping[uuid.UUID, str | None] | None,
    ) -> None:
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

    async def _apply_alone(
        self,
        envelope: Envelope,
        carried: Mapping[uuid.UUID, str | None] | None = None,
        idle: frozenset[str] = frozenset(),
    ) -> None:
        """One event, on its own: transient failures wait as for a batch; any other
        failure counts a try, and after poison_tries the event is dead-lettered."""
        tries = Backoff(self.policy)
        first_failed_at: datetime | None = None
        while True:
            try:
                await self._transiently(lambda: self._apply([envelope], carried, idle), [envelope])
                return
            except Stalled:
                raise
            except Exception as error:
                first_failed_at = first_failed_at or datetime.now(UTC)
                if tries.tries + 1 >= self.policy.poison_tries:
                    log.error(
                        "consumer.dead_letter",
                        consumer=self.inbox.consumer,
                        event_id=str(envelope.event_id),
                        event_type=envelope.type,
                        tries=tries.tries + 1,
                        exc_info=True,
                    )
                    await self._dead_letter(envelope, repr(error), tries.tries + 1, first_failed_at)
                    return
                log.warning(
                    "consumer.event_failed",
                    consumer=self.inbox.consumer,
                    event_id=str(envelope.event_id),
                    event_type=envelope.type,
                    tries=tries.tries + 1,
                    error=repr(error),
                )
                await tries.wait()

    async def _dead_letter(
        self, envelope: Envelope, error: str, tries: int, first_failed_at: datetime
    ) -> None:
        """On `<topic>.dlq`, then, in one transaction, in the dead-letter table and the
        inbox (the watermark passes it). Either step is retried if it fails transiently;
        a crash between them dead-letters the redelivered event again (one row)."""
        topic = f"files.{envelope.source}"
        value = envelope.model_dump_json().encode()
        await self._transiently(lambda: self._publish_dead(topic, value, error), [envelope])

        async def record() -> None:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    f"""INSERT INTO {self.inbox.schema}.dead_letters
                        (id, consumer, topic, event_id, type, source, position, envelope,
                         error, tries, first_failed_at, last_failed_at)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now())
                        ON CONFLICT (consumer, event_id) DO UPDATE
                        SET error = excluded.error, tries = dead_letters.tries + excluded.tries,
                            last_failed_at = now()""",
                    uuid.uuid4(),
                    self.inbox.consumer,
                    topic,
                    envelope.event_id,
                    envelope.type,
                    envelope.source,
                    envelope.position,
                    value,  # JSON already
                    error,
                    tries,
                    first_failed_at,
                )
                await self.inbox.admit(conn, [envelope])
                await self.inbox.advance(conn, {envelope.source})

        await self._transiently(record, [envelope])
        self.dead_lettered += 1

    async def _dead_letter_raw(self, topic: str, value: bytes, error: str) -> None:
        """A message that is not an envelope: it has no id nor position to wait on."""
        await self._transiently(lambda: self._publish_dead(topic, value, error), [])
        await self._transiently(
            lambda: self.pool.execute(
                f"""INSERT INTO {self.inbox.schema}.dead_letters
                    (id, consumer, topic, raw, error, tries, first_failed_at, last_failed_at)
                    VALUES ($1, $2, $3, $4, $5, 1, now(), now())""",
                uuid.uuid4(),
                self.inbox.consumer,
                topic,
                value,
                error,
            ),
            [],
        )
        self.dead_lettered += 1

    async def _publish_dead(self, topic: str, value: bytes, reason: str) -> None:
        await self.dead_letters.send_and_wait(
            topic_names.dead_letters(topic),
            value,
            headers=[("consumer", self.inbox.consumer.encode()), ("reason", reason.encode())],
        )
        log.error("consumer.dead_lettered", topic=topic, reason=reason)

    # -- replays (`files dlq replay`) ---------------------------------------------------

    async def replay_requested(self) -> int:
        """Re-drive the dead letters someone asked to replay; how many were replayed."""
        ids = await self._transiently(
            lambda: self.pool.fetch(
                f"""SELECT id FROM {self.inbox.schema}.dead_letters
                    WHERE consumer = $1 AND status = 'replay_requested'
                    ORDER BY first_failed_at LIMIT 100""",
                self.inbox.consumer,
            ),
            [],
        )
        replayed = 0
        for row in ids:
            try:
                replayed += await self._transiently(partial(self._replay, row["id"]), [])
            except Stalled:
                raise
            except Exception as error:
                log.error("consumer.replay_failed", dead_letter=str(row["id"]), exc_info=True)
                failed = partial(
                    self.pool.execute,
                    f"""UPDATE {self.inbox.schema}.dead_letters
                        SET status = 'replay_failed', replay_error = $2,
                            tries = tries + 1, last_failed_at = now()
                        WHERE id = $1 AND status = 'replay_requested'""",
                    row["id"],
                    repr(error),
                )
                await self._transiently(failed, [])
        return replayed

    async def _replay(self, dead_letter_id: uuid.UUID) -> int:
        """The event through the handler, in the transaction that marks it replayed: a
        second replay finds it replayed and does nothing. (Its inbox row is there since
        it was dead-lettered; the status is what makes it apply once.)"""
        s = self.inbox.schema
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""SELECT envelope, type FROM {s}.dead_letters
                    WHERE id = $1 AND status = 'replay_requested' FOR UPDATE SKIP LOCKED""",
                dead_letter_id,
            )
            if row is None:
                return 0  # another replica has it, or it is done
            if row["envelope"] is None or row["type"] == PARKED:
                await conn.execute(
                    f"""UPDATE {s}.dead_letters SET status = 'replay_failed', replay_error = $2
                        WHERE id = $1""",
                    dead_letter_id,
                    "nothing to replay: the message was not an event"
                    if row["envelope"] is None
                    else "nothing to replay: the event never reached the bus (see relay_parked"
                    " in its source's schema)",
                )
                return 0
            envelope = Envelope.model_validate(row["envelope"])
            await self._handle(conn, envelope.type, [envelope], None)
            await conn.execute(
                f"""UPDATE {s}.dead_letters SET status = 'replayed', replayed_at = now(),
                        replay_error = NULL
                    WHERE id = $1""",
                dead_letter_id,
            )
        log.info("consumer.replayed", consumer=self.inbox.consumer, dead_letter=str(dead_letter_id))
        return 1
