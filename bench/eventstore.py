"""The event store and the outbox relay, against their raw equivalents.

Appends: `EventStore.append` of envelopes built with `new_envelope` (ingest's
FileContentStored, a realistic payload), one stream per transaction, in transactions of 1
and of 100 events, from `--connections` concurrent connections.
Baseline: raw asyncpg INSERTs of the same rows (same unnest INSERT, same batching, same
concurrency) into a plain table whose position is an identity column.
A diagnostic line inserts into a table shaped like the store (same constraints and
indexes) with positions from a sequence and no lock, to separate the cost of the store's
per-store lock from the cost of its indexes.
Each kind runs `--rounds` times (3), the kinds in turns, and keeps its median.
Each case runs twice: with durable commits (synchronous_commit=on, fsync on, what `make
run` ships) and with asynchronous commits (synchronous_commit=off).

Relay: `Relay.publish_pending` draining a pre-filled store to the broker (batches of 2000,
as the services run it), events/s. Baseline: a raw aiokafka producer sending the same
payloads (value, key, headers) to a topic of the same partitions, in the same batches.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from bench._common import Report, broker, main, postgres, progress
from shared.contracts.catalog import Media, Source
from shared.contracts.envelope import Cause, Envelope, new_envelope
from shared.contracts.ingest import FileContentStored, job_stream
from shared.kit import bus, db
from shared.kit.eventstore import EventStore, columns
from shared.kit.outbox import Relay

NAME = "eventstore"
CAUSE = Cause(actor=str(uuid.uuid4()), correlation_id=str(uuid.uuid4()))

Rows = tuple[list[Any], ...]


def transaction_envelopes(batch: int) -> list[Envelope]:
    job = uuid.uuid4()
    folder = uuid.uuid4()
    envelopes = []
    for version in range(1, batch + 1):
        digest = uuid.uuid4().hex * 2
        event = FileContentStored(
            job_id=job,
            file_id=uuid.uuid4(),
            folder_id=folder,
            name=f"scan_{version:06d}_left.png",
            kind="image",
            size=4096,
            sha256=digest,
            mime_type="image/png",
            media=Media(width=64, height=48),
            blob_key=f"sha256/{digest[:2]}/{digest[2:4]}/{digest}",
            source=Source(type="upload"),
        )
        envelopes.append(
            new_envelope(event, stream_id=job_stream(job), stream_version=version, cause=CAUSE)
        )
    return envelopes


def rows(envelopes: Sequence[Envelope]) -> Rows:
    """The columns of the store's INSERT, as the store builds them."""
    return columns(envelopes)


UNNEST = """unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::int[],
                   $6::jsonb[], $7::jsonb[], $8::timestamptz[]) AS x(e, s, v, t, sv, d, m, o)"""
COLUMNS = "event_id, stream_id, stream_version, type, schema_version, data, metadata, occurred_at"


async def plain_table(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(
        f"""CREATE SCHEMA {schema};
            CREATE TABLE {schema}.plain (
                position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                event_id uuid NOT NULL, stream_id text NOT NULL, stream_version integer NOT NULL,
                type text NOT NULL, schema_version integer NOT NULL, data jsonb NOT NULL,
                metadata jsonb NOT NULL, occurred_at timestamptz NOT NULL,
                recorded_at timestamptz NOT NULL DEFAULT now())"""
    )


async def store_shaped_table(conn: asyncpg.Connection, schema: str) -> None:
    await EventStore(schema).setup(conn)
    await conn.execute(f"CREATE SEQUENCE {schema}.positions")


# Takes a connection (or a pool's proxy of one) inside a transaction.
Append = Callable[[Any, list[Envelope]], Awaitable[None]]


def appender(kind: str, schema: str) -> Append:
    if kind == "store":
        store = EventStore(schema)

        async def append(conn: asyncpg.Connection, envelopes: list[Envelope]) -> None:
            await store.append(conn, envelopes)

    elif kind == "plain":

        async def append(conn: asyncpg.Connection, envelopes: list[Envelope]) -> None:
            await conn.execute(
                f"""INSERT INTO {schema}.plain ({COLUMNS})
                    SELECT e, s, v, t, sv, d, m, o FROM {UNNEST}""",
                *rows(envelopes),
            )

    else:  # the store's table and indexes, positions from a sequence, no lock

        async def append(conn: asyncpg.Connection, envelopes: list[Envelope]) -> None:
            await conn.execute(
                f"""INSERT INTO {schema}.events (position, {COLUMNS})
                    SELECT nextval('{schema}.positions'), e, s, v, t, sv, d, m, o FROM {UNNEST}""",
                *rows(envelopes),
            )

    return append


async def timed_appends(
    dsn: str, append: Append, transactions: list[list[Envelope]], connections: int
) -> float:
    pool = await db.connect_pool(dsn, min_size=connections, max_size=connections)
    try:
        queue = list(reversed(transactions))

        async def worker() -> None:
            async with pool.acquire() as conn:
                while queue:
                    envelopes = queue.pop()
                    async with conn.transaction():
                        await append(conn, envelopes)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return time.perf_counter() - start
    finally:
        await pool.close()


async def set_commit_mode(dsn: str, durable: bool) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        mode = "on" if durable else "off"
        await conn.execute(f"ALTER SYSTEM SET synchronous_commit = '{mode}'")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


async def appends(
    dsn: str, report: Report, batches: dict[int, int], connections: int, rounds: int
) -> None:
    for durable in (True, False):
        await set_commit_mode(dsn, durable)
        commit = "durable commits" if durable else "async commits"
        for batch, count in batches.items():
            label = f"{batch}/txn, {commit}"
            key = f"b{batch}_{'durable' if durable else 'async'}"
            progress(f"appends: {rounds} x {count:,} transactions of {batch}, {commit}")
            # The kinds take turns, round after round, and each keeps its median: a
            # swing of the shared machine's load then falls on all of them, not on one.
            rates: dict[str, list[float]] = {"plain": [], "store": [], "shaped": []}
            for round_ in range(rounds):
                for kind, kept in rates.items():
                    schema = f"bench_{kind}_{key}_{round_}"
                    conn = await asyncpg.connect(dsn)
                    try:
                        if kind == "plain":
                            await plain_table(conn, schema)
                        elif kind == "store":
                            await EventStore(schema).setup(conn)
                        else:
                            await store_shaped_table(conn, schema)
                    finally:
                        await conn.close()
                    transactions = [transaction_envelopes(batch) for _ in range(count)]
                    with report.contention.measure():
                        seconds = await timed_appends(
                            dsn, appender(kind, schema), transactions, connections
                        )
                    kept.append(count * batch / seconds)
            results = {kind: statistics.median(kept) for kind, kept in rates.items()}
            report.figure(
                f"append_{key}",
                f"EventStore.append, {label}",
                results["store"],
                "events/s",
                headline=True,
            )
            report.baseline(f"raw_{key}", f"raw INSERT, {label}", results["plain"], "events/s")
            report.ratio(
                f"append_ratio_{key}", f"append / raw, {label}", results["store"], results["plain"]
            )
            report.figure(
                f"shaped_{key}",
                f"diagnostic: store's table, no lock, {label}",
                results["shaped"],
                "events/s",
                role="diag",
            )
    await set_commit_mode(dsn, True)


async def relay(dsn: str, bootstrap: str, report: Report, events: int) -> None:
    schema = "bench_relay"
    store = EventStore(schema)
    conn = await db.connect(dsn)
    producer = bus.producer(bootstrap, idempotence=False)
    await producer.start()
    try:
        await store.setup(conn)
        progress(f"relay: filling a store with {events:,} events")
        for _ in range(events // 1000):
            async with conn.transaction():
                await store.append(conn, [e for _ in range(10) for e in transaction_envelopes(100)])
        relay_topic, raw_topic = (
            f"bench.relay.{uuid.uuid4().hex[:6]}",
            f"bench.raw.{uuid.uuid4().hex[:6]}",
        )
        await bus.ensure_topics(bootstrap, 3, (relay_topic, raw_topic))
        stored = [e async for batch in store.read_all(conn) for e in batch]
        payloads = [
            (
                bus.encode(e),
                e.stream_id.encode(),
                bus.wire_headers(e.type, e.correlation_id, e.traceparent),
            )
            for e in stored
        ]
        # Warm-up, not timed: metadata for both topics.
        for topic in (relay_topic, raw_topic):
            await producer.send_and_wait(topic, b"warm-up", key=b"warm-up")

        outbox = Relay(store, dsn, producer, relay_topic, bootstrap)
        await outbox.setup(conn)
        outbox.published = 0
        batch = outbox.batch

        progress("relay: raw producer baseline")
        with report.contention.measure():
            start = time.perf_counter()
            for i in range(0, len(payloads), batch):
                sent = [
                    await producer.send(raw_topic, value, key=key, headers=headers)
                    for value, key, headers in payloads[i : i + batch]
                ]
                await asyncio.gather(*sent)
            raw_s = time.perf_counter() - start

        progress("relay: Relay.publish_pending until drained")
        with report.contention.measure():
            start = time.perf_counter()
            published = 0
            for _ in range(events // batch + 5):  # bounded: a few rounds more than needed
                n = await outbox.publish_pending(conn)
                if not n:
                    break
                published += n
            relay_s = time.perf_counter() - start
        if published != len(stored):
            raise RuntimeError(f"the relay published {published} of {len(stored)} events")
    finally:
        await producer.stop()
        await conn.close()
    rate, base = len(stored) / relay_s, len(stored) / raw_s
    report.figure(
        "relay_per_s",
        f"Relay.publish_pending, {len(stored):,} events",
        rate,
        "events/s",
        headline=True,
    )
    report.baseline("raw_send_per_s", "raw aiokafka sends, same payloads", base, "events/s")
    report.ratio("relay_ratio", "relay / raw sends", rate, base)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections")
    parser.add_argument(
        "--rounds", type=int, default=3, help="append rounds per kind, taken in turns (median)"
    )


def body(args: argparse.Namespace, workdir: Path, report: Report) -> None:
    if args.quick:
        batches, events = {1: 300, 100: 30}, 5_000
    else:
        batches, events = {1: 4_000, 100: 400}, 100_000
    report.title = (
        f"event-store appends ({args.connections} connections) and relay publishes, vs raw"
    )
    with postgres(workdir, durable=True) as pg, broker(workdir) as kafka:
        asyncio.run(appends(pg.url, report, batches, args.connections, args.rounds))
        asyncio.run(relay(pg.url, kafka.url, report, events))
    report.note("'durable' = synchronous_commit on with fsync; 'async' = synchronous_commit off")


if __name__ == "__main__":
    main(NAME, "event store and relay", body, add_arguments)
