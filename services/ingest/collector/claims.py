"""Blobs an upload is putting to the store, claimed before the put and settled in the
transaction that records the files: no database connection is held while the store is
waited on (a hung store would hold one per upload, and use up ingest's pool).

A claim is a row a key (`holders`: the uploads of those bytes in flight), dated by the
latest claim. While it is there the collector leaves the key's blob row alone, and the
bytes with it. A claim older than the collector keeps them (`CLAIMS_KEPT`, an hour, or
its grace if longer) is an upload that never recorded (its process died between the
put and the record, or the put failed): the collector deletes the bytes, when no blob
row governs them, and the claim; an upload whose claim went so (a put longer than that)
is refused 503, nothing recorded.

Not a read model (no event makes a claim; a rebuild leaves them be: the table is made
with `blob_refs`'s, not one of its `tables`), and UNLOGGED: a PostgreSQL crash empties
the table, which refuses the uploads in flight (503) and leaves bytes they had put
behind, unclaimed (README, Known gaps)."""

from __future__ import annotations

from datetime import datetime

from shared.kit.db import Conn


async def claim(conn: Conn, keys: list[str], at: datetime) -> None:
    """Claim `keys` (sorted, distinct) before their bytes are put; its own transaction,
    committed before the put. The keys' blob rows are locked first (FOR SHARE): a sweep
    that took one already is waited for (its bytes are then gone, and the put stores
    them again), and one that comes later skips it, or finds the claim."""
    await conn.execute(
        "SELECT 1 FROM ingest.blobs WHERE key = ANY($1::text[]) ORDER BY key FOR SHARE", keys
    )
    await conn.execute(
        """INSERT INTO ingest.blob_claims AS c (key, claimed_at, holders)
           SELECT key, $2, 1 FROM unnest($1::text[]) AS key ORDER BY key
           ON CONFLICT (key) DO UPDATE
               SET claimed_at = greatest(c.claimed_at, excluded.claimed_at),
                   holders = c.holders + 1""",
        keys,
        at,
    )


async def settle(conn: Conn, keys: list[str]) -> list[str]:
    """In the transaction that records the files, after their blob rows are claimed
    (`projections.claim_blobs`): each key's claim given up (the row goes with its last
    holder). The keys whose claim the collector took meanwhile, their bytes perhaps
    deleted: the caller records nothing if there is any."""
    # One statement: the rows locked in the keys' order, then the last holder's row
    # deleted (an upload's usual case) and the others' counted down.
    found = await conn.fetch(
        """WITH held AS (
               SELECT key, holders FROM ingest.blob_claims WHERE key = ANY($1::text[])
               ORDER BY key FOR UPDATE),
           gone AS (
               DELETE FROM ingest.blob_claims c USING held
               WHERE c.key = held.key AND held.holders <= 1),
           kept AS (
               UPDATE ingest.blob_claims c SET holders = c.holders - 1 FROM held
               WHERE c.key = held.key AND held.holders > 1)
           SELECT key FROM held""",
        keys,
    )
    settled = {r["key"] for r in found}
    return [k for k in keys if k not in settled]


async def claimed(conn: Conn, keys: list[str]) -> set[str]:
    """Which of `keys` (blob rows the sweep has locked) an upload in flight claims: their
    bytes stay. A statement of its own after the rows' locks: a claim committed before
    the lock was taken is seen."""
    rows = await conn.fetch("SELECT key FROM ingest.blob_claims WHERE key = ANY($1::text[])", keys)
    return {r["key"] for r in rows}


async def stale(conn: Conn, cutoff: datetime, limit: int) -> tuple[list[str], list[str]]:
    """Claims older than `cutoff`, locked until the caller's commit, and of them the keys
    no blob row governs (whose bytes are the claim's alone: orphans to delete)."""
    keys = [
        r["key"]
        for r in await conn.fetch(
            """SELECT key FROM ingest.blob_claims WHERE claimed_at < $1
               ORDER BY claimed_at LIMIT $2 FOR UPDATE SKIP LOCKED""",
            cutoff,
            limit,
        )
    ]
    if not keys:
        return [], []
    governed = {
        r["key"]
        for r in await conn.fetch("SELECT key FROM ingest.blobs WHERE key = ANY($1::text[])", keys)
    }
    return keys, [k for k in keys if k not in governed]


async def drop(conn: Conn, keys: list[str]) -> None:
    await conn.execute("DELETE FROM ingest.blob_claims WHERE key = ANY($1::text[])", keys)
