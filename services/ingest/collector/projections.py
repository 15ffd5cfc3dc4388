"""Stored blobs, and what refers to them: what the collector may reclaim is a blob that
no file of ours and no DICOM series refers to and no DICOM instance waits on. Uploads
and sessions write it in the transaction that stores their blobs (`claim_blobs` first,
then the events).

A stored DICOM instance pins its blob (`pins`, one per instance stored) until the DICOM
context settles it: it joined a series (`SeriesBlobsHeld`: the series' file refers to
the blob from then on) or it did not (`BlobsUnpinned`). Counting, not a flag, keeps
two uploads of the same bytes apart, whichever settles first. Instances stored before
their settlements were recorded stay pinned."""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import asyncpg

from shared.contracts import ingest as ingest_events
from shared.kit.db import Conn
from shared.kit.projections import Projection
from shared.kit.reactions import Received

blob_refs = Projection(
    name="ingest.blobs",
    # 2: DICOM instances counted (pins) and the series that hold them; 3: files imported
    # by reference, by integration; 4: and the folder and key they were imported as
    # (an import's `skip_duplicate_urls`, `upsert_metadata`); 5: group files imported by
    # reference, by their frames, and the series files DICOM series entries made (the
    # same, for image groups, sequences and DICOM series)
    version=5,
    tables=(
        "ingest.blobs",
        "ingest.blob_files",
        "ingest.blob_series",
        "ingest.cloud_files",
        "ingest.cloud_groups",
        "ingest.cloud_dicom_entries",
        "ingest.cloud_series",
    ),
    ddl="""
    CREATE TABLE IF NOT EXISTS ingest.blobs (
        key text PRIMARY KEY,
        stored_at timestamptz NOT NULL,
        pins integer NOT NULL DEFAULT 0
    );
    ALTER TABLE ingest.blobs ADD COLUMN IF NOT EXISTS pins integer NOT NULL DEFAULT 0;
    ALTER TABLE ingest.blobs DROP COLUMN IF EXISTS pinned;
    CREATE TABLE IF NOT EXISTS ingest.blob_files (
        file_id uuid PRIMARY KEY,
        blob_key text NOT NULL
    );
    CREATE INDEX IF NOT EXISTS blob_files_key ON ingest.blob_files (blob_key);
    CREATE TABLE IF NOT EXISTS ingest.blob_series (
        file_id uuid NOT NULL,
        blob_key text NOT NULL,
        PRIMARY KEY (file_id, blob_key)
    );
    CREATE INDEX IF NOT EXISTS blob_series_key ON ingest.blob_series (blob_key);
    -- Files whose bytes are an object in a customer's bucket: while one is left (in the
    -- trash too), its integration may not be removed.
    CREATE TABLE IF NOT EXISTS ingest.cloud_files (
        file_id uuid PRIMARY KEY,
        integration_id uuid NOT NULL
    );
    CREATE INDEX IF NOT EXISTS cloud_files_integration ON ingest.cloud_files (integration_id);
    ALTER TABLE ingest.cloud_files ADD COLUMN IF NOT EXISTS folder_id uuid;
    ALTER TABLE ingest.cloud_files ADD COLUMN IF NOT EXISTS key text;
    CREATE INDEX IF NOT EXISTS cloud_files_key
        ON ingest.cloud_files (integration_id, folder_id, key);
    -- The bytes the file is (their sha256) and the object's ETag as the read of them
    -- answered (its import's, or a sync's that found it changed): each later read of it
    -- for that file names them (`If-Match`). Null in rows from before 2026-12-07.
    ALTER TABLE ingest.cloud_files ADD COLUMN IF NOT EXISTS sha256 text;
    ALTER TABLE ingest.cloud_files ADD COLUMN IF NOT EXISTS etag text;
    -- Image groups and sequences imported by reference, by the folder they were imported
    -- into and their frames' keys (imports/domain/groups.py `frames_sha256`).
    CREATE TABLE IF NOT EXISTS ingest.cloud_groups (
        file_id uuid PRIMARY KEY,
        integration_id uuid NOT NULL,
        folder_id uuid NOT NULL,
        frames_sha256 text NOT NULL
    );
    CREATE INDEX IF NOT EXISTS cloud_groups_frames
        ON ingest.cloud_groups (integration_id, folder_id, frames_sha256);
    -- DICOM series entries imported by reference (their keys as a set), and the series
    -- files their instances joined.
    CREATE TABLE IF NOT EXISTS ingest.cloud_dicom_entries (
        group_file_id uuid PRIMARY KEY,
        integration_id uuid NOT NULL,
        folder_id uuid NOT NULL,
        frames_sha256 text NOT NULL
    );
    CREATE INDEX IF NOT EXISTS cloud_dicom_entries_frames
        ON ingest.cloud_dicom_entries (integration_id, folder_id, frames_sha256);
    CREATE TABLE IF NOT EXISTS ingest.cloud_series (
        group_file_id uuid NOT NULL,
        file_id uuid NOT NULL,
        PRIMARY KEY (group_file_id, file_id)
    );
    CREATE INDEX IF NOT EXISTS cloud_series_file ON ingest.cloud_series (file_id);
    -- Not the read model's (no event writes it; a rebuild leaves it be): the blobs
    -- uploads in flight are putting (collector/claims.py). Its first shape (a row a
    -- key, its holders counted) is dropped: claims last a request, and an upload whose
    -- claim is gone is refused, nothing recorded.
    DO $$ BEGIN
        IF EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = 'ingest'
                   AND table_name = 'blob_claims' AND column_name = 'holders') THEN
            DROP TABLE IF EXISTS ingest.blob_claims;
        END IF;
    END $$;
    CREATE TABLE IF NOT EXISTS ingest.blob_claims (
        key text NOT NULL,
        upload_id uuid NOT NULL,
        claimed_at timestamptz NOT NULL,
        PRIMARY KEY (key, upload_id)
    );
    CREATE INDEX IF NOT EXISTS blob_claims_at ON ingest.blob_claims (claimed_at);
    -- Logged since 2026-12-07: unlogged, a crash of PostgreSQL emptied it, and the bytes
    -- of the puts in flight were never reclaimed (bench/README, "ops5"). Rewritten once
    -- (claims of the requests in flight only: a moment's exclusive lock). It waits at
    -- most 2 s for the transactions on the table (a collector's sweep holds it through
    -- its deletes from the store, long if the store hangs, and every claim would queue
    -- behind the waiting ALTER), or is left to a later start.
    DO $$
    DECLARE was text := current_setting('lock_timeout');
    BEGIN
        IF (SELECT relpersistence FROM pg_class
            WHERE oid = 'ingest.blob_claims'::regclass) = 'u' THEN
            PERFORM set_config('lock_timeout', '2s', true);
            BEGIN
                ALTER TABLE ingest.blob_claims SET LOGGED;
            EXCEPTION WHEN lock_not_available THEN
                RAISE NOTICE 'ingest.blob_claims busy: it is made logged at a later start';
            END;
            PERFORM set_config('lock_timeout', was, true);
        END IF;
    END $$;
    """,
)


# Earlier than any event: `greatest` with it keeps the other side.
UNDATED = datetime(1, 1, 1, tzinfo=UTC)


async def _blobs_stored(
    conn: Conn, keys: list[str], at: datetime, *, pins: bool = False, claimed: bool = False
) -> None:
    """Date these blobs (each stored now, or claimed: UNDATED); `pins`: each key once per
    DICOM instance stored with it. `claimed`: the transaction claimed the keys before
    (every writer does), so a row already dated `at` or later is not even visited: its
    upsert would change nothing, only lock it again (a WAL record a row: 10,000 for
    bench.upload_small's files). A claim itself visits every row: its lock is the
    point."""
    if claimed and not pins and _claimed_already(keys, at):
        return
    counted = Counter(keys)
    await conn.execute(
        f"""INSERT INTO ingest.blobs AS b (key, stored_at, pins)
           SELECT key, $3::timestamptz, n FROM unnest($1::text[], $2::int[]) AS x(key, n)
           {_NOT_DATED if claimed else ""}
           ORDER BY key
           ON CONFLICT (key) DO UPDATE SET stored_at = greatest(b.stored_at, excluded.stored_at),
               pins = b.pins + excluded.pins
           -- A row claimed with this date already (claim_blobs) is left as it is: no
           -- second version of it written.
           WHERE b.stored_at < excluded.stored_at OR excluded.pins <> 0""",
        list(counted),
        [n if pins else 0 for n in counted.values()],
        at,
    )


# The blobs the running transaction claimed, and the date it claimed them with
# (`claimed`): the events it records after the claim find their rows dated already.
_CLAIM: ContextVar[tuple[datetime, frozenset[str]] | None] = ContextVar("claim", default=None)


@contextlib.contextmanager
def claimed(keys: Sequence[str], at: datetime) -> Iterator[None]:
    """While the transaction that claimed `keys` at `at` (`claim_blobs`) records its
    events: their projection does not look the rows up again (a statement a request
    that could change nothing: each row is dated `at` and locked by the claim until the
    commit). A rebuild, which claims nothing, dates every row as before."""
    token = _CLAIM.set((at, frozenset(keys)))
    try:
        yield
    finally:
        _CLAIM.reset(token)


def _claimed_already(keys: Sequence[str], at: datetime) -> bool:
    claim = _CLAIM.get()
    return claim is not None and claim[0] >= at and claim[1].issuperset(keys)


# Rows that an upsert dated `$3` without a pin would leave as they are.
_NOT_DATED = """WHERE x.n <> 0 OR NOT EXISTS (
               SELECT 1 FROM ingest.blobs d WHERE d.key = x.key AND d.stored_at >= $3)"""


async def _unpin(conn: Conn, keys: list[str]) -> None:
    counted = Counter(keys)
    await conn.execute(
        """UPDATE ingest.blobs AS b SET pins = greatest(b.pins - x.n, 0)
           FROM unnest($1::text[], $2::int[]) AS x(key, n) WHERE b.key = x.key""",
        list(counted),
        list(counted.values()),
    )


async def claim_blobs(conn: Conn, keys: list[str], at: datetime = UNDATED) -> None:
    """Hold blobs about to be stored until the transaction that refers to them commits:
    the collector skips them, or, if it took one first, the claim waits until that one
    is gone, and the bytes are then stored again. The event that follows in the
    transaction dates the row, as a rebuild from the events does; a caller that knows
    the time its events carry (`at`) dates it here already, so that the event finds
    nothing to change (an upload of 100 files then writes 100 rows, not 200)."""
    await _blobs_stored(conn, keys, at)


async def _files(
    conn: Conn, pairs: list[tuple[uuid.UUID, str]], at: datetime, *, new: bool = False
) -> None:
    """`new`: no file of `pairs` can have its row yet, so a plain insert (`ON CONFLICT`'s
    speculative insert writes a WAL record a row more, its confirmation)."""
    await _blobs_stored(conn, [key for _, key in pairs], at, claimed=True)
    conflict = "" if new else "ON CONFLICT DO NOTHING"
    # One statement for a request's files, not one a file.
    await conn.execute(
        f"""INSERT INTO ingest.blob_files (file_id, blob_key)
           SELECT * FROM unnest($1::uuid[], $2::text[]) {conflict}""",
        [file_id for file_id, _ in pairs],
        [key for _, key in pairs],
    )


@blob_refs.on(ingest_events.FileContentStored)
async def file_stored(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.FileContentStored]]
) -> None:
    pairs = [(e.event.file_id, e.event.blob_key) for e in events if e.event.source.type == "upload"]
    await _files(conn, pairs, events[-1].occurred_at)
    await _cloud_files(conn, [e.event for e in events])


@blob_refs.on(ingest_events.FilesStored)
async def files_stored(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.FilesStored]]
) -> None:
    # A page's files are new: ids the upload made (uuid4), each in one page of its own
    # job's stream, applied once as it is recorded, or once by a rebuild into emptied
    # tables. FileContentStored (imports, syncs, sessions) keeps its ON CONFLICT.
    pairs = [(f.file_id, f.blob_key) for e in events for f in e.event.files]
    await _files(conn, pairs, events[-1].occurred_at, new=True)


async def _cloud_files(conn: Conn, stored: Sequence[ingest_events.FileContentStored]) -> None:
    """Files whose content is an object of a customer's bucket: by integration, and by
    the folder and key they were imported as, with the bytes and ETag their read found."""
    cloud = sorted(
        {
            (f.file_id, f.source.integration_id, f.folder_id, f.source.key, f.sha256, f.etag)
            for f in stored
            if f.source.type == "cloud" and f.source.integration_id is not None
        },
        key=lambda row: row[0],
    )
    if cloud:
        await conn.executemany(
            "INSERT INTO ingest.cloud_files (file_id, integration_id, folder_id, key, sha256,"
            " etag) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            cloud,
        )


@blob_refs.on(ingest_events.CloudObjectChanged)
async def cloud_object_changed(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.CloudObjectChanged]]
) -> None:
    """A synced file's object read again, changed: its file is those bytes now, read as
    that version of the object."""
    last = {e.event.file_id: e.event for e in events}
    await conn.execute(
        """UPDATE ingest.cloud_files c SET sha256 = x.sha256, etag = x.etag
           FROM unnest($1::uuid[], $2::text[], $3::text[]) AS x(file_id, sha256, etag)
           WHERE c.file_id = x.file_id""",
        list(last),
        [e.sha256 for e in last.values()],
        [e.etag for e in last.values()],
    )


@blob_refs.on(ingest_events.ImageGroupImagesStored)
@blob_refs.on(ingest_events.ImageGroupStored)  # before pages, it held the images
async def group_stored(
    conn: asyncpg.Connection,
    events: Sequence[
        Received[ingest_events.ImageGroupImagesStored | ingest_events.ImageGroupStored]
    ],
) -> None:
    files = [f for e in events for f in e.event.files]
    pairs = [(f.file_id, f.blob_key) for f in files if f.source.type == "upload"]
    if pairs:
        await _files(conn, pairs, events[-1].occurred_at)
    # Images of a group imported by reference: no blob, their integration held.
    await _cloud_files(conn, files)
    groups = sorted(
        {
            (g.group_file_id, g.integration_id, g.folder_id, g.frames_sha256)
            for e in events
            if isinstance(g := e.event, ingest_events.ImageGroupStored)
            and g.integration_id is not None
            and g.frames_sha256 is not None
        },
        key=lambda row: row[0],
    )
    if groups:
        await conn.executemany(
            "INSERT INTO ingest.cloud_groups (file_id, integration_id, folder_id, frames_sha256)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            groups,
        )


@blob_refs.on(ingest_events.ImportDicomInstancesCopied)
async def dicom_entry_copied(
    conn: asyncpg.Connection,
    events: Sequence[Received[ingest_events.ImportDicomInstancesCopied]],
) -> None:
    entries = sorted(
        {
            (c.group_file_id, c.integration_id, c.folder_id, c.frames_sha256)
            for e in events
            if (c := e.event).integration_id and c.folder_id and c.frames_sha256
        },
        key=lambda row: row[0],
    )
    if entries:
        await conn.executemany(
            """INSERT INTO ingest.cloud_dicom_entries
                   (group_file_id, integration_id, folder_id, frames_sha256)
               VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING""",
            entries,
        )


@blob_refs.on(ingest_events.ImportedSeriesFiles)
async def series_files_imported(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.ImportedSeriesFiles]]
) -> None:
    await _insert_pairs(
        conn,
        "ingest.cloud_series (group_file_id, file_id)",
        "uuid",
        {(e.event.group_file_id, f) for e in events for f in e.event.file_ids},
    )


@blob_refs.on(ingest_events.DicomInstanceStored)
async def instance_stored(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.DicomInstanceStored]]
) -> None:
    await _blobs_stored(conn, [e.event.blob_key for e in events], events[-1].occurred_at, pins=True)


@blob_refs.on(ingest_events.DicomInstancesStored)
async def instances_stored(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.DicomInstancesStored]]
) -> None:
    keys = [i.blob_key for e in events for i in e.event.instances]
    await _blobs_stored(conn, keys, events[-1].occurred_at, pins=True)


@blob_refs.on(ingest_events.SeriesBlobsHeld)
async def series_held(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.SeriesBlobsHeld]]
) -> None:
    await _insert_pairs(
        conn,
        "ingest.blob_series (file_id, blob_key)",
        "text",
        {(e.event.file_id, k) for e in events for k in e.event.blob_keys},
    )
    await _unpin(conn, [k for e in events for k in e.event.blob_keys])


@blob_refs.on(ingest_events.SeriesBlobsDropped)
async def series_dropped(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.SeriesBlobsDropped]]
) -> None:
    dropped = sorted({(e.event.file_id, k) for e in events for k in e.event.blob_keys})
    await conn.execute(
        """DELETE FROM ingest.blob_series s USING unnest($1::uuid[], $2::text[]) AS x(f, k)
           WHERE s.file_id = x.f AND s.blob_key = x.k""",
        [f for f, _ in dropped],
        [k for _, k in dropped],
    )


@blob_refs.on(ingest_events.BlobsUnpinned)
async def unpinned(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.BlobsUnpinned]]
) -> None:
    await _unpin(conn, [k for e in events for k in e.event.blob_keys])


@blob_refs.on(ingest_events.BlobsReleased)
async def blobs_released(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.BlobsReleased]]
) -> None:
    released = [f for e in events for f in e.event.file_ids]
    await conn.execute("DELETE FROM ingest.blob_files WHERE file_id = ANY($1::uuid[])", released)
    await conn.execute("DELETE FROM ingest.blob_series WHERE file_id = ANY($1::uuid[])", released)
    await conn.execute("DELETE FROM ingest.cloud_files WHERE file_id = ANY($1::uuid[])", released)
    await conn.execute("DELETE FROM ingest.cloud_groups WHERE file_id = ANY($1::uuid[])", released)
    await conn.execute("DELETE FROM ingest.cloud_series WHERE file_id = ANY($1::uuid[])", released)


@blob_refs.on(ingest_events.BlobsReclaimed)
async def blobs_reclaimed(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.BlobsReclaimed]]
) -> None:
    await conn.execute(
        "DELETE FROM ingest.blobs WHERE key = ANY($1::text[])",
        [k for e in events for k in e.event.blob_keys],
    )


# A blob nothing refers to or waits on, stored before the cutoff, not held by a claim
# (a storing transaction's lock: skipped) nor claimed by an upload in flight (left
# unlocked: its upload's record waits on no sweep; the sweep checks again once the rows
# are locked, for a claim committed meanwhile).
RECLAIMABLE = """
    SELECT b.key FROM ingest.blobs b
    WHERE b.pins = 0 AND b.stored_at < $1
      AND NOT EXISTS (SELECT 1 FROM ingest.blob_files f WHERE f.blob_key = b.key)
      AND NOT EXISTS (SELECT 1 FROM ingest.blob_series s WHERE s.blob_key = b.key)
      AND NOT EXISTS (SELECT 1 FROM ingest.blob_claims c WHERE c.key = b.key)
    ORDER BY b.stored_at LIMIT $2
    FOR UPDATE SKIP LOCKED
"""


async def _insert_pairs(
    conn: asyncpg.Connection, into: str, second: str, pairs: set[tuple[uuid.UUID, Any]]
) -> None:
    """Rows of (a uuid, a `second`-typed value) into `into` (a table and its two columns,
    ours), in one statement, in order (so concurrent writers take the keys' locks alike)."""
    ordered = sorted(pairs)
    await conn.execute(
        f"""INSERT INTO {into}
            SELECT * FROM unnest($1::uuid[], $2::{second}[]) ON CONFLICT DO NOTHING""",
        [a for a, _ in ordered],
        [b for _, b in ordered],
    )
