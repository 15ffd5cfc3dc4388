"""Stored blobs, and the files of ours that refer to them: what the collector may
reclaim is a blob no file refers to. A DICOM instance's blob is pinned: the DICOM
context, not a file of ours, refers to it. Uploads and sessions write it in the
transaction that stores their blobs (`claim_blobs` first, then the events)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from shared.contracts import ingest as ingest_events
from shared.kit.db import Conn
from shared.kit.projections import Projection
from shared.kit.reactions import Received

blob_refs = Projection(
    name="ingest.blobs",
    tables=("ingest.blobs", "ingest.blob_files"),
    ddl="""
    CREATE TABLE IF NOT EXISTS ingest.blobs (
        key text PRIMARY KEY,
        stored_at timestamptz NOT NULL,
        pinned boolean NOT NULL DEFAULT false
    );
    CREATE TABLE IF NOT EXISTS ingest.blob_files (
        file_id uuid PRIMARY KEY,
        blob_key text NOT NULL
    );
    CREATE INDEX IF NOT EXISTS blob_files_key ON ingest.blob_files (blob_key);
    """,
)


# Earlier than any event: `greatest` with it keeps the other side.
UNDATED = datetime(1, 1, 1, tzinfo=UTC)


async def _blobs_stored(conn: Conn, keys: list[str], at: datetime, *, pinned: bool = False) -> None:
    await conn.execute(
        """INSERT INTO ingest.blobs AS b (key, stored_at, pinned)
           SELECT DISTINCT key, $2::timestamptz, $3::boolean FROM unnest($1::text[]) AS key
           ORDER BY key
           ON CONFLICT (key) DO UPDATE SET stored_at = greatest(b.stored_at, excluded.stored_at),
               pinned = b.pinned OR excluded.pinned""",
        keys,
        at,
        pinned,
    )


async def claim_blobs(conn: Conn, keys: list[str]) -> None:
    """Hold blobs about to be stored until the transaction that refers to them commits:
    the collector skips them, or, if it took one first, the claim waits until that one
    is gone, and the bytes are then stored again. The claim dates nothing: the event
    that follows in the transaction dates the row, as a rebuild from the events does."""
    await _blobs_stored(conn, keys, UNDATED)


async def _files(conn: Conn, pairs: list[tuple[uuid.UUID, str]], at: datetime) -> None:
    await _blobs_stored(conn, [key for _, key in pairs], at)
    await conn.executemany(
        "INSERT INTO ingest.blob_files (file_id, blob_key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        pairs,
    )


@blob_refs.on(ingest_events.FileContentStored)
async def file_stored(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.FileContentStored]]
) -> None:
    pairs = [(e.event.file_id, e.event.blob_key) for e in events if e.event.source.type == "upload"]
    await _files(conn, pairs, events[-1].occurred_at)


@blob_refs.on(ingest_events.ImageGroupImagesStored)
@blob_refs.on(ingest_events.ImageGroupStored)  # before pages, it held the images
async def group_stored(
    conn: asyncpg.Connection,
    events: Sequence[
        Received[ingest_events.ImageGroupImagesStored | ingest_events.ImageGroupStored]
    ],
) -> None:
    pairs = [(f.file_id, f.blob_key) for e in events for f in e.event.files]
    if pairs:
        await _files(conn, pairs, events[-1].occurred_at)


@blob_refs.on(ingest_events.DicomInstanceStored)
async def instance_stored(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.DicomInstanceStored]]
) -> None:
    await _blobs_stored(
        conn, [e.event.blob_key for e in events], events[-1].occurred_at, pinned=True
    )


@blob_refs.on(ingest_events.BlobsReleased)
async def blobs_released(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.BlobsReleased]]
) -> None:
    await conn.execute(
        "DELETE FROM ingest.blob_files WHERE file_id = ANY($1::uuid[])",
        [f for e in events for f in e.event.file_ids],
    )


@blob_refs.on(ingest_events.BlobsReclaimed)
async def blobs_reclaimed(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.BlobsReclaimed]]
) -> None:
    await conn.execute(
        "DELETE FROM ingest.blobs WHERE key = ANY($1::text[])",
        [k for e in events for k in e.event.blob_keys],
    )


# A blob no file refers to, stored before the cutoff, not held by a claim.
RECLAIMABLE = """
    SELECT b.key FROM ingest.blobs b
    WHERE NOT b.pinned AND b.stored_at < $1
      AND NOT EXISTS (SELECT 1 FROM ingest.blob_files f WHERE f.blob_key = b.key)
    ORDER BY b.stored_at LIMIT $2
    FOR UPDATE SKIP LOCKED
"""
