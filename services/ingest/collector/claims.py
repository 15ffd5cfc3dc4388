"""Blobs being put to the store, claimed before the put and settled in the transaction
that records what refers to them: no database connection is held while the store is
waited on (a hung store would hold one per caller, and use up ingest's pool). Uploads of
files, upload sessions' completions (their server-side copy), DICOM series imported and
synced DICOM instances all put so.

A claim is a row a key and holder (its own: two puts of the same bytes claim apart,
and each settles only what it claimed), dated when it was made. While a key has one the
collector leaves the key's blob row alone, and the bytes with it. A claim older than
the collector keeps them (`CLAIMS_KEPT`, an hour, or its grace if longer) is a put
that never recorded (its process died between the put and the record, or the put
failed): the collector drops it, and gives its key to the sweep of blobs as a row of
its own, unreferenced and undated, where no row is; the sweep deletes its bytes under
the row's lock, as any other blob's, unless something refers to them by then. A holder
whose claim went so (a put longer than that) records nothing: a request is refused 503
(`refused`), a sync reads its batch again. A put that may last longer (an upload
session's server-side copy of a file of terabytes) dates its claims anew while it goes
on (`kept_while`), and so do the other puts that may (an upload's files, a sync's
batch of objects, a DICOM series imported).

Not a read model (no event makes a claim; a rebuild leaves them be: the table is made
with `blob_refs`'s, not one of its `tables`). Logged: unlogged, a PostgreSQL crash
emptied it, and the bytes of the puts in flight were never reclaimed; logging costs
~0.5 MB of WAL a 1,000 files uploaded, no CPU seen (bench/README, "ops5")."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from datetime import datetime, timedelta
from typing import TypeVar

import asyncpg

from services.ingest.collector.projections import UNDATED
from shared.contracts.envelope import now
from shared.kit.db import Conn
from shared.kit.errors import Refused
from shared.kit.logs import log

T = TypeVar("T")
# How often a long put's claims are dated anew: well within the hour the collector
# keeps a claim (`CLAIMS_KEPT`), so a missed renewal or two loses nothing.
RENEW_EVERY = timedelta(minutes=10)


async def claim(conn: Conn, keys: list[str], upload: uuid.UUID, at: datetime) -> None:
    """`upload` claims `keys` (sorted, distinct) before their bytes are put; its own
    transaction, committed before the put. The keys' blob rows are locked first (FOR
    SHARE): a sweep that took one already is waited for (its bytes are then gone, and
    the put stores them again), and one that comes later skips it, or finds the claim."""
    await conn.execute(
        "SELECT 1 FROM ingest.blobs WHERE key = ANY($1::text[]) ORDER BY key FOR SHARE", keys
    )
    await conn.execute(
        """INSERT INTO ingest.blob_claims (key, upload_id, claimed_at)
           SELECT key, $2, $3 FROM unnest($1::text[]) AS key""",
        keys,
        upload,
        at,
    )


async def settle(conn: Conn, keys: list[str], upload: uuid.UUID) -> bool:
    """In the transaction that records the files, after their blob rows are claimed
    (`projections.claim_blobs`): `upload`'s claims given up, and whether they were all
    there. One the collector dropped meanwhile (its bytes perhaps deleted), or a crash
    erased: the caller records nothing."""
    gone = await conn.fetchval(
        """WITH mine AS (
               DELETE FROM ingest.blob_claims WHERE upload_id = $2 AND key = ANY($1::text[])
               RETURNING 1)
           SELECT count(*) FROM mine""",
        keys,
        upload,
    )
    return bool(gone == len(keys))


async def kept_while(
    pool: asyncpg.Pool,
    keys: list[str],
    upload: uuid.UUID,
    put: Awaitable[T],
    every: timedelta | None = None,
) -> T:
    """`put` awaited, `upload`'s claims on `keys` dated now every `every` while it goes
    on, so the collector does not take a put of hours for one that died. Only while it
    moves: the store's calls fail after 30 s of silence, so a put the store stopped
    answering ends, and its claims age from their last date as any other's; a process
    that dies renews nothing. A claim the collector dropped before a renewal stays gone
    (the put's `settle` finds it so, and records nothing). `every`: `RENEW_EVERY` as it
    is when called."""
    every = every or RENEW_EVERY
    task = asyncio.ensure_future(put)
    try:
        while True:
            done, _ = await asyncio.wait([task], timeout=every.total_seconds())
            if done:
                return task.result()
            try:
                async with pool.acquire() as conn:
                    await conn.execute(
                        """UPDATE ingest.blob_claims SET claimed_at = $3
                           WHERE upload_id = $2 AND key = ANY($1::text[])""",
                        keys,
                        upload,
                        now(),
                    )
            # InterfaceError: the pool closing as the replica drains; the put goes on.
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                log.warning("ingest.blob_claim_not_renewed", error=repr(error))
    finally:
        task.cancel()  # given up on (its caller cancelled): not left running


def refused() -> Refused:
    """A request's answer when `settle` found its claims gone: nothing was recorded."""
    return Refused(
        503,
        "storage_unavailable",
        "the file store took longer than the collector waits for an upload:"
        " nothing of this upload was recorded; try again",
    )


async def claimed(conn: Conn, keys: list[str]) -> set[str]:
    """Which of `keys` (blob rows the sweep has locked) an upload in flight claims: their
    bytes stay. A statement of its own after the rows' locks: a claim committed before
    the lock was taken is seen."""
    rows = await conn.fetch(
        "SELECT DISTINCT key FROM ingest.blob_claims WHERE key = ANY($1::text[])", keys
    )
    return {r["key"] for r in rows}


async def drop_stale(conn: Conn, cutoff: datetime, limit: int) -> int:
    """Claims older than `cutoff`, of up to `limit` keys, dropped, their keys given to
    the sweep of blobs (a row unreferenced and undated, where there is none); how many
    claims went. The bytes are not deleted here: another transaction may be storing the
    key (a session, a sync, a group's run, whose `claim_blobs` row is not committed
    yet), which this one cannot see. The insert waits for such a row, and does nothing
    once it is committed; the sweep then decides under the row's lock."""
    keys = [
        r["key"]
        for r in await conn.fetch(
            """SELECT key FROM ingest.blob_claims WHERE claimed_at < $1
               GROUP BY key ORDER BY min(claimed_at) LIMIT $2""",
            cutoff,
            limit,
        )
    ]
    if not keys:
        return 0
    # Blob rows before claims, in the keys' order, as an upload takes them (`claim`,
    # then `claim_blobs` and `settle`): no two wait on each other the other way round.
    keys.sort()
    await conn.execute(
        """INSERT INTO ingest.blobs (key, stored_at, pins)
           SELECT key, $2, 0 FROM unnest($1::text[]) AS key ORDER BY key
           ON CONFLICT (key) DO NOTHING""",
        keys,
        UNDATED,
    )
    # The date checked again: a claim made since the select stays.
    return int(
        await conn.fetchval(
            """WITH gone AS (
                   DELETE FROM ingest.blob_claims
                   WHERE key = ANY($1::text[]) AND claimed_at < $2 RETURNING 1)
               SELECT count(*) FROM gone""",
            keys,
            cutoff,
        )
    )
