"""Ingest's read models: jobs (uploads and imports) and their progress; cloud integrations;
upload sessions; stored blobs and the files that refer to them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from shared.contracts import ingest as ingest_events
from shared.kit.db import Conn
from shared.kit.projections import Projection
from shared.kit.reactions import Received

jobs = Projection(
    name="ingest.jobs",
    tables=("ingest.jobs", "ingest.job_files"),
    ddl="""
    CREATE TABLE IF NOT EXISTS ingest.jobs (
        id uuid PRIMARY KEY,
        folder_id uuid NOT NULL,
        status text NOT NULL,
        total integer NOT NULL,
        done integer NOT NULL,
        files jsonb NOT NULL,
        errors jsonb NOT NULL,
        created_at timestamptz NOT NULL,
        created_by text NOT NULL
    );
    -- "upload", or "dicom": a DICOM job's progress, files and errors are the DICOM
    -- context's (the gateway composes them).
    ALTER TABLE ingest.jobs ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'upload';
    -- An import's files, in the order registered (`files` stays []): an import of
    -- 100,000 objects appends a batch at a time, which a jsonb array would rewrite
    -- whole on every batch.
    CREATE TABLE IF NOT EXISTS ingest.job_files (
        job_id uuid NOT NULL,
        position integer NOT NULL,
        file_id uuid NOT NULL,
        PRIMARY KEY (job_id, position)
    );
    """,
)


async def file_ids(conn: Conn | asyncpg.Pool, job: asyncpg.Record) -> list[str]:
    """A job's files, in order: an import's from ingest.job_files, others' from `files`."""
    if job["kind"] != "import":
        return list(job["files"])
    found = await conn.fetchval(
        """SELECT coalesce(array_agg(file_id::text ORDER BY position), '{}')
           FROM ingest.job_files WHERE job_id = $1""",
        job["id"],
    )
    return list(found)


@jobs.on(ingest_events.UploadJobStarted)
async def job_started(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.UploadJobStarted]]
) -> None:
    await conn.executemany(
        """INSERT INTO ingest.jobs (id, folder_id, status, total, done, files, errors,
                                    created_at, created_by, kind)
           VALUES ($1, $2, 'running', $3, 0, '[]', '[]', $4, $5, $6) ON CONFLICT DO NOTHING""",
        [
            (
                e.data["job_id"],
                e.data["folder_id"],
                e.data["total"],
                e.occurred_at,
                e.actor,
                e.data.get("kind", "upload"),
            )
            for e in events
        ],
    )


@jobs.on(ingest_events.FileContentStored)
async def content_stored(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.FileContentStored]]
) -> None:
    # An import's files (source "cloud") go to ingest.job_files, appended; an upload's
    # to the job's `files`.
    imported = [e for e in events if (e.data.get("source") or {}).get("type") == "cloud"]
    uploaded = [e for e in events if (e.data.get("source") or {}).get("type") != "cloud"]
    if uploaded:
        await conn.execute(
            """UPDATE ingest.jobs j SET done = j.done + x.n, files = j.files || x.ids
               FROM (SELECT job_id, count(*) AS n, jsonb_agg(file_id ORDER BY i) AS ids
                     FROM jsonb_to_recordset($1::jsonb) AS r(job_id uuid, file_id text, i int)
                     GROUP BY job_id) AS x
               WHERE j.id = x.job_id""",
            [
                {"job_id": e.data["job_id"], "file_id": e.data["file_id"], "i": i}
                for i, e in enumerate(uploaded)
            ],
        )
    if imported:
        await _imported(
            conn, [e.data["job_id"] for e in imported], [e.data["file_id"] for e in imported]
        )


async def _imported(conn: Conn, job_ids: list[str], file_ids: list[str]) -> None:
    """Files of import jobs, in order: appended to ingest.job_files after the job's last,
    and counted done."""
    await conn.execute(
        """WITH x AS (
               SELECT job_id, file_id,
                      row_number() OVER (PARTITION BY job_id ORDER BY i) AS n
               FROM unnest($1::uuid[], $2::uuid[]) WITH ORDINALITY AS r(job_id, file_id, i)),
           appended AS (
               INSERT INTO ingest.job_files (job_id, position, file_id)
               SELECT x.job_id,
                      coalesce((SELECT max(f.position) FROM ingest.job_files f
                                WHERE f.job_id = x.job_id), 0) + x.n,
                      x.file_id
               FROM x
               RETURNING job_id)
           UPDATE ingest.jobs j SET done = j.done + a.n
           FROM (SELECT job_id, count(*) AS n FROM appended GROUP BY job_id) AS a
           WHERE j.id = a.job_id""",
        job_ids,
        file_ids,
    )


@jobs.on(ingest_events.FileContentRejected)
async def content_rejected(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.FileContentRejected]]
) -> None:
    # One update per job for the whole run, its errors in order.
    errors: dict[str, list[dict[str, object]]] = {}
    for e in events:
        errors.setdefault(str(e.data["job_id"]), []).append(
            {k: e.data.get(k) for k in ("name", "code", "message", "details")}
        )
    await conn.executemany(
        """UPDATE ingest.jobs SET done = done + $3, errors = errors || $2::jsonb
           WHERE id = $1""",
        [(job_id, found, len(found)) for job_id, found in errors.items()],
    )


@jobs.on(ingest_events.UploadJobFinished)
async def job_finished(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.UploadJobFinished]]
) -> None:
    await conn.executemany(
        "UPDATE ingest.jobs SET status = $2 WHERE id = $1",
        [(e.data["job_id"], e.data["status"]) for e in events],
    )


@jobs.on(ingest_events.ImageGroupImagesStored)
async def image_group_images_stored(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.ImageGroupImagesStored]]
) -> None:
    await conn.executemany(
        "UPDATE ingest.jobs SET files = files || $2::jsonb WHERE id = $1",
        [(e.data["job_id"], [f["file_id"] for f in e.data["files"]]) for e in events],
    )


@jobs.on(ingest_events.ImageGroupStored)
async def image_group_stored(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.ImageGroupStored]]
) -> None:
    # The group's file first, then its images: from its pages, or (events from before
    # pages) its own `files`.
    await conn.executemany(
        "UPDATE ingest.jobs SET done = total, files = $2::jsonb || files || $3::jsonb"
        " WHERE id = $1",
        [
            (
                e.data["job_id"],
                [e.data["group_file_id"]],
                [f["file_id"] for f in e.data.get("files", [])],
            )
            for e in events
        ],
    )


@jobs.on(ingest_events.ImportJobStarted)
async def import_started(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.ImportJobStarted]]
) -> None:
    await conn.executemany(
        """INSERT INTO ingest.jobs (id, folder_id, status, total, done, files, errors,
                                    created_at, created_by, kind)
           VALUES ($1, $2, 'running', $3, 0, '[]', '[]', $4, $5, 'import')
           ON CONFLICT DO NOTHING""",
        [
            (e.data["job_id"], e.data["folder_id"], e.data["total"], e.occurred_at, e.actor)
            for e in events
        ],
    )


@jobs.on(ingest_events.ImportObjectsListed)
async def import_listed(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.ImportObjectsListed]]
) -> None:
    await conn.executemany(
        "UPDATE ingest.jobs SET total = total + $2 WHERE id = $1",
        [(e.data["job_id"], e.data["count"]) for e in events if e.data["count"]],
    )


@jobs.on(ingest_events.ImportJobFailed)
async def import_failed(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.ImportJobFailed]]
) -> None:
    await conn.executemany(
        """UPDATE ingest.jobs SET status = 'failed', errors = errors || $2::jsonb
           WHERE id = $1""",
        [
            (
                e.data["job_id"],
                [{"name": "", "code": e.data["code"], "message": e.data["message"], "details": {}}],
            )
            for e in events
        ],
    )


# Cloud integrations: what the bucket is and its sealed credentials (never in clear).
integrations = Projection(
    name="ingest.integrations",
    tables=("ingest.integrations",),
    ddl="""
    CREATE TABLE IF NOT EXISTS ingest.integrations (
        id uuid PRIMARY KEY,
        name text NOT NULL,
        provider text NOT NULL,
        endpoint text,
        region text,
        bucket text NOT NULL,
        sealed_credentials text NOT NULL,
        version integer NOT NULL,
        created_at timestamptz NOT NULL,
        created_by text NOT NULL
    );
    CREATE INDEX IF NOT EXISTS integrations_created ON ingest.integrations (created_at, id);
    -- The users (ids as text) who may use it besides the organisation admins.
    ALTER TABLE ingest.integrations
        ADD COLUMN IF NOT EXISTS shared_with text[] NOT NULL DEFAULT '{}';
    """,
)


@integrations.on(ingest_events.IntegrationRegistered)
async def integration_registered(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.IntegrationRegistered]]
) -> None:
    await conn.executemany(
        """INSERT INTO ingest.integrations (id, name, provider, endpoint, region, bucket,
                                            sealed_credentials, version, created_at, created_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING""",
        [
            (
                e.data["integration_id"],
                e.data["name"],
                e.data["provider"],
                e.data.get("endpoint"),
                e.data.get("region"),
                e.data["bucket"],
                e.data["sealed_credentials"],
                e.stream_version,
                e.occurred_at,
                e.actor,
            )
            for e in events
        ],
    )


@integrations.on(ingest_events.IntegrationShared)
async def integration_shared(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.IntegrationShared]]
) -> None:
    await conn.executemany(
        "UPDATE ingest.integrations SET shared_with = $2, version = $3 WHERE id = $1",
        [
            (
                e.data["integration_id"],
                [str(u) for u in e.data["shared_with"]],
                e.stream_version,
            )
            for e in events
        ],
    )


@integrations.on(ingest_events.IntegrationRemoved)
async def integration_removed(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.IntegrationRemoved]]
) -> None:
    await conn.execute(
        "DELETE FROM ingest.integrations WHERE id = ANY($1::uuid[])",
        [e.data["integration_id"] for e in events],
    )


# Upload sessions: large files sent in parts (services/ingest/sessions.py).
sessions = Projection(
    name="ingest.sessions",
    tables=("ingest.sessions",),
    ddl="""
    CREATE TABLE IF NOT EXISTS ingest.sessions (
        id uuid PRIMARY KEY,
        folder_id uuid NOT NULL,
        name text NOT NULL,
        size bigint NOT NULL,
        part_size bigint NOT NULL,
        parts integer NOT NULL,
        store_key text NOT NULL,
        upload_id text NOT NULL,
        status text NOT NULL,
        expires_at timestamptz NOT NULL,
        file_id uuid,
        created_at timestamptz NOT NULL,
        created_by text NOT NULL
    );
    CREATE INDEX IF NOT EXISTS sessions_open ON ingest.sessions (expires_at)
        WHERE status = 'open';
    """,
)


@sessions.on(ingest_events.UploadSessionOpened)
async def session_opened(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.UploadSessionOpened]]
) -> None:
    await conn.executemany(
        """INSERT INTO ingest.sessions (id, folder_id, name, size, part_size, parts, store_key,
                                        upload_id, status, expires_at, created_at, created_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'open', $9, $10, $11)
           ON CONFLICT DO NOTHING""",
        [
            (
                e.data["session_id"],
                e.data["folder_id"],
                e.data["name"],
                e.data["size"],
                e.data["part_size"],
                e.data["parts"],
                e.data["store_key"],
                e.data["upload_id"],
                datetime.fromisoformat(e.data["expires_at"]),
                e.occurred_at,
                e.actor,
            )
            for e in events
        ],
    )


@sessions.on(ingest_events.FileContentStored)
async def session_completed(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.FileContentStored]]
) -> None:
    # Most stored content is not a session's: the join finds the few that are.
    await conn.execute(
        """UPDATE ingest.sessions s SET status = 'completed', file_id = x.file_id
           FROM jsonb_to_recordset($1::jsonb) AS x(job_id uuid, file_id uuid)
           WHERE s.id = x.job_id""",
        [{"job_id": e.data["job_id"], "file_id": e.data["file_id"]} for e in events],
    )


@sessions.on(ingest_events.UploadSessionEnded)
async def session_ended(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.UploadSessionEnded]]
) -> None:
    await conn.executemany(
        "UPDATE ingest.sessions SET status = $2 WHERE id = $1",
        [(e.data["session_id"], e.data["status"]) for e in events],
    )


# Stored blobs, and the files of ours that refer to them: what the collector may
# reclaim is a blob no file refers to. A DICOM instance's blob is pinned: the DICOM
# context, not a file of ours, refers to it.
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


async def _files(conn: Conn, pairs: list[tuple[str, str]], at: datetime) -> None:
    await _blobs_stored(conn, [key for _, key in pairs], at)
    await conn.executemany(
        "INSERT INTO ingest.blob_files (file_id, blob_key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        pairs,
    )


@blob_refs.on(ingest_events.FileContentStored)
async def file_stored(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.FileContentStored]]
) -> None:
    pairs = [
        (e.data["file_id"], e.data["blob_key"])
        for e in events
        if e.data.get("source", {}).get("type", "upload") == "upload"
    ]
    await _files(conn, pairs, events[-1].occurred_at)


@blob_refs.on(ingest_events.ImageGroupImagesStored)
@blob_refs.on(ingest_events.ImageGroupStored)  # before pages, it held the images
async def group_stored(
    conn: asyncpg.Connection,
    events: Sequence[
        Received[ingest_events.ImageGroupImagesStored | ingest_events.ImageGroupStored]
    ],
) -> None:
    pairs = [(f["file_id"], f["blob_key"]) for e in events for f in e.data.get("files", [])]
    if pairs:
        await _files(conn, pairs, events[-1].occurred_at)


@blob_refs.on(ingest_events.DicomInstanceStored)
async def instance_stored(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.DicomInstanceStored]]
) -> None:
    await _blobs_stored(
        conn, [e.data["blob_key"] for e in events], events[-1].occurred_at, pinned=True
    )


@blob_refs.on(ingest_events.BlobsReleased)
async def blobs_released(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.BlobsReleased]]
) -> None:
    await conn.execute(
        "DELETE FROM ingest.blob_files WHERE file_id = ANY($1::uuid[])",
        [f for e in events for f in e.data["file_ids"]],
    )


@blob_refs.on(ingest_events.BlobsReclaimed)
async def blobs_reclaimed(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.BlobsReclaimed]]
) -> None:
    await conn.execute(
        "DELETE FROM ingest.blobs WHERE key = ANY($1::text[])",
        [k for e in events for k in e.data["blob_keys"]],
    )


# A blob no file refers to, stored before the cutoff, not held by a claim.
RECLAIMABLE = """
    SELECT b.key FROM ingest.blobs b
    WHERE NOT b.pinned AND b.stored_at < $1
      AND NOT EXISTS (SELECT 1 FROM ingest.blob_files f WHERE f.blob_key = b.key)
    ORDER BY b.stored_at LIMIT $2
    FOR UPDATE SKIP LOCKED
"""
