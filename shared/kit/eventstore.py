"""Append-only event store on PostgreSQL, one schema per service.

Appends lock the store's head row until they commit, so positions are dense and
commit in position order: a reader following the position never passes a gap
that a slower transaction fills later (the trap of sequence-numbered outboxes).
Optimistic concurrency is the unique (stream_id, stream_version) key.

Durability: PostgreSQL frees row locks only once a synchronous commit's WAL is
flushed, so a lock held through the flush lets one append flush at a time and commits
never group (0.46-0.54x raw INSERTs, bench/README.md). So an append in a pooled
connection's `transaction()` commits asynchronously (the lock is freed at the commit
record) and that transaction, once committed, waits for one WAL flush on the same
connection before it returns (kit/db.py `DurableTransaction`): concurrent flushes share
a fsync, and no caller is answered before its events are durable. Any other transaction
(a plain connection, a BEGIN by hand) keeps synchronous commits, and so do all when
synchronous standbys are configured (the flush does not wait for them); commits that
are asynchronous already (an operator's choice) stay so, unflushed.
In the short while between an append's commit and its flush (about a millisecond),
other sessions can read its events and rows. What they write from them is safe by WAL
order: a crash loses the append only with everything logged after it, so a durable
commit of theirs (a read model, a checkpoint) flushes the append first. What they only
read is not: a plain GET may show, for that millisecond, a write a crash of PostgreSQL
would then lose, as with any asynchronous commit. The readers that tell the outside
world about others' writes flush first: the relay before it sends a batch
(kit/outbox.py), the consistency wait before it says caught up (kit/service.py), a
stored answer before it is given again (kit/idempotency.py), a STOW-RS answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import orjson

from shared.contracts.envelope import Envelope
from shared.contracts.limits import MAX_EVENT_BYTES
from shared.kit import db, idempotency
from shared.kit.db import Conn


class ConcurrencyConflict(Exception):
    """Another writer appended to the stream first; re-read and decide again."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"concurrent write to a stream: {detail}")


class EventTooLarge(Exception):
    """An event bigger than the bus carries (shared/contracts/limits.py): refused at
    append, so the transaction records nothing, rather than stall the relay later.
    A collection that grows with user input belongs in pages (docs/events.md)."""

    def __init__(self, envelope: Envelope, size: int) -> None:
        self.event_type = envelope.type
        self.stream_id = envelope.stream_id
        self.size = size
        self.limit = MAX_EVENT_BYTES
        super().__init__(
            f"event {envelope.type} of stream {envelope.stream_id} is {size} bytes of JSON;"
            f" at most {MAX_EVENT_BYTES} are allowed"
        )


# Appends this big go by COPY (see `_copy`); smaller ones in one statement.
COPY_FROM = 1000

_COLUMNS = (
    "position, event_id, stream_id, stream_version, type, schema_version, data, metadata,"
    " occurred_at"
)
# What an envelope is read from: the metadata's fields as text (no JSON decoded for them).
_READ = (
    "position, event_id, stream_id, stream_version, type, schema_version, data, occurred_at,"
    " metadata->>'actor' AS actor, metadata->>'correlation_id' AS correlation_id,"
    " metadata->>'causation_id' AS causation_id, metadata->>'traceparent' AS traceparent"
)


def _metadata(envelope: Envelope) -> dict[str, Any]:
    return {
        "actor": envelope.actor,
        "correlation_id": envelope.correlation_id,
        "causation_id": envelope.causation_id,
        "traceparent": envelope.traceparent,
    }


def encoded(envelopes: Sequence[Envelope]) -> tuple[list[bytes], list[bytes]]:
    """Each envelope's data and metadata as JSON (which the jsonb codec passes on as it
    is), measured: the codec would encode them anyway, so the check costs a length.
    Raises EventTooLarge."""
    data, metadata = [], []
    for e in envelopes:
        d, m = orjson.dumps(e.data), orjson.dumps(_metadata(e))
        if len(d) + len(m) > MAX_EVENT_BYTES:
            raise EventTooLarge(e, len(d) + len(m))
        data.append(d)
        metadata.append(m)
    return data, metadata


def columns(envelopes: Sequence[Envelope]) -> tuple[list[Any], ...]:
    """The envelopes as the store's column arrays, for one unnest INSERT."""
    data, metadata = encoded(envelopes)
    return (
        [e.event_id for e in envelopes],
        [e.stream_id for e in envelopes],
        [e.stream_version for e in envelopes],
        [e.type for e in envelopes],
        [e.schema_version for e in envelopes],
        data,
        metadata,
        [e.occurred_at for e in envelopes],
    )


class EventStore:
    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.table = f"{schema}.events"
        self.channel = f"{schema}_events"

    async def setup(self, conn: Conn) -> None:
        s = self.schema
        await conn.execute(
            f"""
            CREATE SCHEMA IF NOT EXISTS {s};
            CREATE TABLE IF NOT EXISTS {s}.events (
                position bigint PRIMARY KEY,
                event_id uuid NOT NULL UNIQUE,
                stream_id text NOT NULL,
                stream_version integer NOT NULL,
                type text NOT NULL,
                schema_version integer NOT NULL,
                data jsonb NOT NULL,
                metadata jsonb NOT NULL,
                occurred_at timestamptz NOT NULL,
                recorded_at timestamptz NOT NULL DEFAULT now(),
                CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version)
            );
            CREATE INDEX IF NOT EXISTS events_occurred_at ON {s}.events (occurred_at);
            -- The audit's filters (shared/kit/audit.py), each with the position so one
            -- value reads in store order: the subject (the uuid ending the stream id),
            -- the actor and the type.
            CREATE INDEX IF NOT EXISTS events_subject
                ON {s}.events ((right(stream_id, 36)), position);
            CREATE INDEX IF NOT EXISTS events_actor
                ON {s}.events ((metadata->>'actor'), position);
            CREATE INDEX IF NOT EXISTS events_type ON {s}.events (type, position);
            -- An event's data kept out of line uncompressed: the large ones are lists of
            -- ids (a restore's or a link's 5,000), which pglz tries and fails to shrink
            -- (60 such events: 0.69-1.05 s to write compressed, 0.24-0.43 s not, and the
            -- same size). Set once: it takes the table's lock, so it waits at most 2 s
            -- for open transactions on the table, or is left to a later start.
            DO $$
            DECLARE was text := current_setting('lock_timeout');
            BEGIN
                IF (SELECT attstorage FROM pg_attribute
                    WHERE attrelid = '{s}.events'::regclass AND attname = 'data') <> 'e' THEN
                    PERFORM set_config('lock_timeout', '2s', true);
                    BEGIN
                        ALTER TABLE {s}.events ALTER COLUMN data SET STORAGE EXTERNAL;
                    EXCEPTION WHEN lock_not_available THEN
                        RAISE NOTICE '{s}.events busy: its data storage is set at a later start';
                    END;
                    PERFORM set_config('lock_timeout', was, true);
                END IF;
            END $$;
            CREATE TABLE IF NOT EXISTS {s}.head (
                id integer PRIMARY KEY CHECK (id = 1),
                position bigint NOT NULL
            );
            INSERT INTO {s}.head
                SELECT 1, coalesce(max(position), 0) FROM {s}.events
                ON CONFLICT (id) DO NOTHING;
            """
        )

    async def lock(self, conn: Conn) -> int:
        """Hold the store's append lock until the transaction ends; returns the head."""
        position: int = await conn.fetchval(
            f"SELECT position FROM {self.schema}.head WHERE id = 1 FOR UPDATE"
        )
        return position

    async def append(self, conn: Conn, envelopes: Sequence[Envelope]) -> int:
        """Append in the caller's transaction; returns the last position written.

        Call it last in the transaction: the store lock is held until commit.
        """
        if not envelopes:
            return 0
        assert conn.is_in_transaction(), "append must run inside a transaction"
        # A request with an Idempotency-Key claims it with its events (kit/idempotency.py).
        await idempotency.claim(conn, self.schema)
        # Asynchronous commit, made durable by the transaction's end (see the top).
        flushes = db.flushes_after_commit(conn)
        last: int
        try:
            if len(envelopes) >= COPY_FROM:
                last = await self._copy(conn, envelopes, flushes)
                idempotency.appended(last)
                return last
            # One round trip: the head row's lock orders appends (held until commit),
            # its update numbers them, NOTIFY fires when they commit, and the commit is
            # made asynchronous (for this transaction only).
            row = await conn.fetchrow(
                f"""
                WITH head AS (
                    UPDATE {self.schema}.head SET position = position + $1
                    WHERE id = 1 RETURNING position - $1 AS base),
                written AS (
                    INSERT INTO {self.table} ({_COLUMNS})
                    SELECT head.base + n, e, s, v, t, sv, d, m, o
                    FROM head, unnest($2::uuid[], $3::text[], $4::int[], $5::text[], $6::int[],
                                      $7::jsonb[], $8::jsonb[], $9::timestamptz[])
                         WITH ORDINALITY AS x(e, s, v, t, sv, d, m, o, n)
                    RETURNING position)
                SELECT max(position), {db.DEFER_COMMIT.format(flushes="$11")}
                FROM written, pg_notify($10, '') AS notified
                """,
                len(envelopes),
                *columns(envelopes),
                self.channel,
                flushes,
            )
            assert row is not None
            last, deferred = row
            if deferred:
                db.owe_flush(conn)
        except asyncpg.UniqueViolationError as error:
            if error.constraint_name == "events_stream_version_key":
                raise ConcurrencyConflict(error.detail or "") from error
            raise
        idempotency.appended(last)
        return last

    async def _copy(self, conn: Conn, envelopes: Sequence[Envelope], flushes: bool) -> int:
        """A big append (a folder cascade) by COPY: three round trips, but it writes
        100,000 events in about half the time of the one-statement unnest."""
        data, metadata = encoded(envelopes)
        base: int = await conn.fetchval(
            f"UPDATE {self.schema}.head SET position = position + $1"
            " WHERE id = 1 RETURNING position - $1",
            len(envelopes),
        )
        await conn.copy_records_to_table(
            "events",
            schema_name=self.schema,
            columns=_COLUMNS.replace(" ", "").split(","),
            records=(
                (
                    base + n,
                    e.event_id,
                    e.stream_id,
                    e.stream_version,
                    e.type,
                    e.schema_version,
                    d,
                    m,
                    e.occurred_at,
                )
                for n, (e, d, m) in enumerate(zip(envelopes, data, metadata, strict=True), 1)
            ),
        )
        if await conn.fetchval(
            f"SELECT {db.DEFER_COMMIT.format(flushes='$2')} FROM pg_notify($1, '')",
            self.channel,
            flushes,
        ):
            db.owe_flush(conn)
        return base + len(envelopes)

    async def head(self, conn: Conn | asyncpg.Pool) -> int:
        value: int = await conn.fetchval(f"SELECT coalesce(max(position), 0) FROM {self.table}")
        return value

    async def durable_head(
        self, conn: Conn | asyncpg.Pool, types: Sequence[str] | None = None
    ) -> int:
        """`head()` (or `last_of(types)`) for an answer that tells a caller what it may
        read: in the same statement, the WAL flushed past every commit the caller's
        reads saw before it (appends and consumers commit before they flush,
        kit/db.py). Up to the insert position taken after the statement's snapshot,
        not the flush's own: when the committers' flushes got there first (the usual
        case), no record is written and no fsync waited for."""
        read = (
            f"SELECT coalesce(max(position), 0) FROM {self.table}"
            if types is None
            else f"""SELECT coalesce(max(last.position), 0)
                FROM unnest($1::text[]) AS wanted(type),
                LATERAL (SELECT position FROM {self.table} e WHERE e.type = wanted.type
                         ORDER BY position DESC LIMIT 1) AS last"""
        )
        value: int = await conn.fetchval(
            f"""WITH read AS MATERIALIZED (SELECT ({read}) AS head,
                                              pg_current_wal_insert_lsn() AS at)
                SELECT head, {db.FLUSHED_PAST.format(lsn="at")} FROM read""",
            *(() if types is None else (list(types),)),
        )
        return value

    async def last_of(self, conn: Conn | asyncpg.Pool, types: Sequence[str]) -> int:
        """The position of the last event of one of these types (0: none), one index
        probe a type (events_type)."""
        value: int = await conn.fetchval(
            f"""SELECT coalesce(max(last.position), 0)
                FROM unnest($1::text[]) AS wanted(type),
                LATERAL (SELECT position FROM {self.table} e WHERE e.type = wanted.type
                         ORDER BY position DESC LIMIT 1) AS last""",
            list(types),
        )
        return value

    def _envelope(self, row: asyncpg.Record) -> Envelope:
        # Not validated again: every row was an Envelope when it was appended, and a
        # rebuild reads a million of them (validation was a third of its Python).
        return Envelope.model_construct(
            event_id=row["event_id"],
            type=row["type"],
            schema_version=row["schema_version"],
            stream_id=row["stream_id"],
            stream_version=row["stream_version"],
            occurred_at=row["occurred_at"],
            actor=row["actor"],
            correlation_id=row["correlation_id"],
            causation_id=row["causation_id"],
            traceparent=row["traceparent"],
            source=self.schema,
            position=row["position"],
            data=row["data"],
        )

    async def read_after(
        self, conn: Conn | asyncpg.Pool, position: int, limit: int = 1000, upto: int | None = None
    ) -> list[Envelope]:
        """At most `limit` events after `position` (and at most `upto`), in order."""
        rows = await conn.fetch(
            f"""SELECT {_READ} FROM {self.table} WHERE position > $1 AND position <= $3
                ORDER BY position LIMIT $2""",
            position,
            limit,
            (1 << 63) - 1 if upto is None else upto,
        )
        return [self._envelope(r) for r in rows]

    async def read_wire_after(self, conn: Conn, position: int, limit: int) -> list[asyncpg.Record]:
        """Events after a position as the relay sends them: the envelope's JSON built by
        PostgreSQL, so no row becomes a Python object on the way to Kafka. Each row
        also has `wal_at`, how far the WAL must be flushed for every event read to be
        durable: the insert LSN taken (by the one-time filter) after the statement's
        snapshot and before its scan, so past the commit of every event it sees and
        before what the scan itself logs (hint bits, with data checksums)."""
        return await conn.fetch(
            f"""WITH wal AS MATERIALIZED (SELECT pg_current_wal_insert_lsn() AS at)
                SELECT position, stream_id, type,
                       metadata->>'correlation_id' AS correlation_id,
                       metadata->>'traceparent' AS traceparent,
                       json_build_object(
                           'event_id', event_id, 'type', type,
                           'schema_version', schema_version, 'stream_id', stream_id,
                           'stream_version', stream_version, 'occurred_at', occurred_at,
                           'actor', metadata->'actor',
                           'correlation_id', metadata->'correlation_id',
                           'causation_id', metadata->'causation_id',
                           'traceparent', metadata->'traceparent',
                           'source', $3::text, 'position', position, 'data', data
                       )::text AS wire,
                       (SELECT at FROM wal) AS wal_at
                FROM {self.table}
                WHERE position > $1 AND (SELECT at FROM wal) IS NOT NULL
                ORDER BY position LIMIT $2""",
            position,
            limit,
            self.schema,
        )

    async def read_all(self, conn: Conn, batch: int = 5000) -> AsyncIterator[list[Envelope]]:
        position = 0
        while envelopes := await self.read_after(conn, position, batch):
            yield envelopes
            position = envelopes[-1].position

    async def read_stream(self, conn: Conn | asyncpg.Pool, stream_id: str) -> list[Envelope]:
        rows = await conn.fetch(
            f"SELECT {_READ} FROM {self.table} WHERE stream_id = $1 ORDER BY stream_version",
            stream_id,
        )
        return [self._envelope(r) for r in rows]
