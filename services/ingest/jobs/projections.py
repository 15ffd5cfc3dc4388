"""The jobs read model: every upload, upload session and import is a job, and its
progress, files and errors are read here (`GET /v1/jobs/{id}`, jobs/api.py)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

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
    -- An import's objects skipped as already imported (`skip_duplicate_urls`).
    ALTER TABLE ingest.jobs ADD COLUMN IF NOT EXISTS skipped integer NOT NULL DEFAULT 0;
    -- An import's DICOM instances, copied in for the DICOM context (whose account of
    -- them the gateway adds to the job).
    ALTER TABLE ingest.jobs ADD COLUMN IF NOT EXISTS dicom_instances integer NOT NULL DEFAULT 0;
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
    if job["kind"] not in ("import", "sync"):
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
            (e.event.job_id, e.event.folder_id, e.event.total, e.occurred_at, e.actor, e.event.kind)
            for e in events
        ],
    )


@jobs.on(ingest_events.FileContentStored)
async def content_stored(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.FileContentStored]]
) -> None:
    # An import's files (source "cloud") go to ingest.job_files, appended; an upload's
    # to the job's `files`.
    imported = [e.event for e in events if e.event.source.type == "cloud"]
    uploaded = [e.event for e in events if e.event.source.type != "cloud"]
    if uploaded:
        await _uploaded(conn, [(e.job_id, e.file_id) for e in uploaded])
    if imported:
        await _imported(conn, [e.job_id for e in imported], [e.file_id for e in imported])


@jobs.on(ingest_events.FilesStored)
async def files_stored(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.FilesStored]]
) -> None:
    await _uploaded(conn, [(e.event.job_id, f.file_id) for e in events for f in e.event.files])


async def _uploaded(conn: Conn, files: list[tuple[uuid.UUID, uuid.UUID]]) -> None:
    """Files of upload jobs, in order: appended to the job's `files`, and counted done."""
    await conn.execute(
        """UPDATE ingest.jobs j SET done = j.done + x.n, files = j.files || x.ids
           FROM (SELECT job_id, count(*) AS n, jsonb_agg(file_id::text ORDER BY i) AS ids
                 FROM unnest($1::uuid[], $2::uuid[]) WITH ORDINALITY AS r(job_id, file_id, i)
                 GROUP BY job_id) AS x
           WHERE j.id = x.job_id""",
        [job_id for job_id, _ in files],
        [file_id for _, file_id in files],
    )


async def _imported(conn: Conn, job_ids: list[uuid.UUID], file_ids: list[uuid.UUID]) -> None:
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
    errors: dict[uuid.UUID, list[dict[str, object]]] = {}
    for e in events:
        rejected = e.event
        errors.setdefault(rejected.job_id, []).append(
            {
                "name": rejected.name,
                "code": rejected.code,
                "message": rejected.message,
                "details": rejected.details,
            }
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
        [(e.event.job_id, e.event.status) for e in events],
    )


@jobs.on(ingest_events.ImageGroupImagesStored)
async def image_group_images_stored(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.ImageGroupImagesStored]]
) -> None:
    # An import's group lists the group's file only (its images are the group's).
    await conn.executemany(
        "UPDATE ingest.jobs SET files = files || $2::jsonb WHERE id = $1 AND kind <> 'import'",
        [(e.event.job_id, [f.file_id for f in e.event.files]) for e in events],
    )


@jobs.on(ingest_events.ImageGroupStored)
async def image_group_stored(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.ImageGroupStored]]
) -> None:
    # The group's file first, then its images: from its pages, or (events from before
    # pages) its own `files`.
    await conn.executemany(
        "UPDATE ingest.jobs SET done = total, files = $2::jsonb || files || $3::jsonb"
        " WHERE id = $1 AND kind <> 'import'",
        [
            (e.event.job_id, [e.event.group_file_id], [f.file_id for f in e.event.files])
            for e in events
        ],
    )
    # A group an import read by reference: one of the job's files, counted done.
    imported = await conn.fetch(
        "SELECT id FROM ingest.jobs WHERE id = ANY($1::uuid[]) AND kind = 'import'",
        list({e.event.job_id for e in events}),
    )
    if imported:
        ids = {r["id"] for r in imported}
        groups = [e.event for e in events if e.event.job_id in ids]
        await _imported(conn, [g.job_id for g in groups], [g.group_file_id for g in groups])


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
            (e.event.job_id, e.event.folder_id, e.event.total, e.occurred_at, e.actor)
            for e in events
        ],
    )


@jobs.on(ingest_events.ImportObjectsListed)
async def import_listed(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.ImportObjectsListed]]
) -> None:
    await conn.executemany(
        "UPDATE ingest.jobs SET total = total + $2 WHERE id = $1",
        [(e.event.job_id, e.event.count) for e in events if e.event.count],
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
                e.event.job_id,
                [{"name": "", "code": e.event.code, "message": e.event.message, "details": {}}],
            )
            for e in events
        ],
    )


@jobs.on(ingest_events.ImportObjectSkipped)
async def import_skipped(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.ImportObjectSkipped]]
) -> None:
    await conn.executemany(
        "UPDATE ingest.jobs SET done = done + 1, skipped = skipped + 1 WHERE id = $1",
        [(e.event.job_id,) for e in events],
    )


@jobs.on(ingest_events.ImportedMetadataReplaced)
async def import_upserted(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.ImportedMetadataReplaced]]
) -> None:
    """The files an object already was are the job's files; the object counts one."""
    pairs = [(e.event.job_id, f) for e in events for f in e.event.file_ids]
    await _imported(conn, [j for j, _ in pairs], [f for _, f in pairs])
    await conn.executemany(
        "UPDATE ingest.jobs SET done = done - $2 WHERE id = $1",
        [(e.event.job_id, len(e.event.file_ids) - 1) for e in events if len(e.event.file_ids) > 1],
    )


@jobs.on(ingest_events.ImportDicomInstancesCopied)
async def import_dicom_copied(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.ImportDicomInstancesCopied]]
) -> None:
    """A DICOM series entry settled: one of the job's total."""
    await conn.executemany(
        "UPDATE ingest.jobs SET done = done + 1 WHERE id = $1",
        [(e.event.job_id,) for e in events],
    )


@jobs.on(ingest_events.DicomInstanceStored)
async def dicom_instance_stored(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.DicomInstanceStored]]
) -> None:
    """DICOM instances an import or a sync copied in, counted (a DICOM upload's are the
    DICOM context's to count); a sync's each one of its objects done."""
    counted: dict[uuid.UUID, int] = {}
    for e in events:
        counted[e.event.job_id] = counted.get(e.event.job_id, 0) + 1
    await conn.executemany(
        """UPDATE ingest.jobs SET dicom_instances = dicom_instances + $2,
               done = done + CASE WHEN kind = 'sync' THEN $2 ELSE 0 END
           WHERE id = $1 AND kind IN ('import', 'sync')""",
        list(counted.items()),
    )
