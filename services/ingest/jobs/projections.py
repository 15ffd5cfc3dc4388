"""The jobs read model: every upload, upload session and import is a job, and its
progress, files and errors are read here (`GET /v1/jobs/{id}`, jobs/api.py).

A job's files and errors are rows keyed (job, position), appended a batch at a time
and read a page at a time (shared/kit/job_pages.py): an import of 100,000 objects or
100,000 refused keys would otherwise rewrite a jsonb array whole on every batch (work
quadratic in the job's size) and answer it whole on every poll. Positions of a job are
contiguous (each batch goes after the job's last), so the count is max - min + 1."""

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
    tables=("ingest.jobs", "ingest.job_files", "ingest.job_errors"),
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
    -- A folder's latest sync (`GET /v1/folders/{id}/sync`, at every view of its page).
    CREATE INDEX IF NOT EXISTS jobs_folder_kind ON ingest.jobs (folder_id, kind, created_at DESC);
    CREATE TABLE IF NOT EXISTS ingest.job_files (
        job_id uuid NOT NULL,
        position integer NOT NULL,
        file_id uuid NOT NULL,
        PRIMARY KEY (job_id, position)
    );
    -- Every job's errors, in order, as its files are (`errors` stays []).
    CREATE TABLE IF NOT EXISTS ingest.job_errors (
        job_id uuid NOT NULL,
        position integer NOT NULL,
        error jsonb NOT NULL,
        PRIMARY KEY (job_id, position)
    );
    -- Rows from before (2026-12-06) kept uploads' files and every job's errors in the
    -- job's jsonb arrays: moved to the tables, in order, after the rows the job has: a
    -- replica of the version before, during an upgrade, appends to the arrays from []
    -- after the move (at positions the rows hold), and the next start moves those.
    INSERT INTO ingest.job_files (job_id, position, file_id)
    SELECT j.id,
           coalesce((SELECT max(x.position) FROM ingest.job_files x WHERE x.job_id = j.id),
                    0) + f.i,
           f.id::uuid
    FROM ingest.jobs j, jsonb_array_elements_text(j.files) WITH ORDINALITY AS f(id, i)
    WHERE j.files <> '[]'
    ON CONFLICT DO NOTHING;
    UPDATE ingest.jobs SET files = '[]' WHERE files <> '[]';
    INSERT INTO ingest.job_errors (job_id, position, error)
    SELECT j.id,
           coalesce((SELECT max(x.position) FROM ingest.job_errors x WHERE x.job_id = j.id),
                    0) + e.i,
           e.error
    FROM ingest.jobs j, jsonb_array_elements(j.errors) WITH ORDINALITY AS e(error, i)
    WHERE j.errors <> '[]'
    ON CONFLICT DO NOTHING;
    UPDATE ingest.jobs SET errors = '[]' WHERE errors <> '[]';
    """,
)


async def counts(conn: Conn | asyncpg.Pool, job_id: uuid.UUID) -> tuple[int, int]:
    """How many files and errors the job has (from the primary keys' ends)."""
    row = await conn.fetchrow(
        """SELECT (SELECT coalesce(max(position) - min(position) + 1, 0)
                   FROM ingest.job_files WHERE job_id = $1) AS files,
                  (SELECT coalesce(max(position) - min(position) + 1, 0)
                   FROM ingest.job_errors WHERE job_id = $1) AS errors""",
        job_id,
    )
    assert row is not None
    return row["files"], row["errors"]


async def files_page(
    conn: Conn | asyncpg.Pool, job_id: uuid.UUID, after: int, limit: int
) -> list[tuple[int, str]]:
    """(position, file id) of the job's files after `after`, in order, at most `limit`."""
    rows = await conn.fetch(
        """SELECT position, file_id::text AS id FROM ingest.job_files
           WHERE job_id = $1 AND position > $2 ORDER BY position LIMIT $3""",
        job_id,
        after,
        limit,
    )
    return [(r["position"], r["id"]) for r in rows]


async def errors_page(
    conn: Conn | asyncpg.Pool, job_id: uuid.UUID, after: int, limit: int
) -> list[tuple[int, dict[str, object]]]:
    """(position, error) of the job's errors after `after`, in order, at most `limit`."""
    rows = await conn.fetch(
        """SELECT position, error FROM ingest.job_errors
           WHERE job_id = $1 AND position > $2 ORDER BY position LIMIT $3""",
        job_id,
        after,
        limit,
    )
    return [(r["position"], r["error"]) for r in rows]


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
    """Files of upload jobs, in order: appended, and counted done."""
    await _append(conn, [job_id for job_id, _ in files], [file_id for _, file_id in files])


async def _imported(conn: Conn, job_ids: list[uuid.UUID], file_ids: list[uuid.UUID]) -> None:
    """Files of import jobs, in order: appended, and counted done."""
    await _append(conn, job_ids, file_ids)


async def _append(
    conn: Conn, job_ids: list[uuid.UUID], file_ids: list[uuid.UUID], *, done: bool = True
) -> None:
    """Files appended to ingest.job_files after each job's last (set-based, one
    statement for the whole run); `done`: each counted one of its job's done."""
    # Each job's last position looked up once (`last`), not once a row: the rows this
    # statement inserts are in the key already, invisible to it, and a look-up a row
    # stepped back over those before it (4,950 index entries for a page of 100 files).
    await conn.execute(
        """WITH x AS (
               SELECT job_id, file_id,
                      row_number() OVER (PARTITION BY job_id ORDER BY i) AS n
               FROM unnest($1::uuid[], $2::uuid[]) WITH ORDINALITY AS r(job_id, file_id, i)),
           last AS MATERIALIZED (
               SELECT j.job_id,
                      coalesce((SELECT max(f.position) FROM ingest.job_files f
                                WHERE f.job_id = j.job_id), 0) AS position
               FROM (SELECT DISTINCT job_id FROM x) AS j),
           appended AS (
               INSERT INTO ingest.job_files (job_id, position, file_id)
               SELECT x.job_id, last.position + x.n, x.file_id
               FROM x JOIN last USING (job_id)
               RETURNING job_id)
           UPDATE ingest.jobs j SET done = j.done + a.n
           FROM (SELECT job_id, count(*) AS n FROM appended GROUP BY job_id) AS a
           WHERE j.id = a.job_id AND $3""",
        job_ids,
        file_ids,
        done,
    )


async def _errors(
    conn: Conn, errors: list[tuple[uuid.UUID, dict[str, object]]], *, done: bool = True
) -> None:
    """Errors appended to ingest.job_errors after each job's last, in order (set-based:
    appending never rewrites what a job had); `done`: each counted one of its job's."""
    if not errors:
        return
    await conn.execute(
        """WITH x AS (
               SELECT (r.e->>'job_id')::uuid AS job_id, r.e->'error' AS error,
                      row_number() OVER (PARTITION BY r.e->>'job_id' ORDER BY i) AS n
               FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS r(e, i)),
           appended AS (
               INSERT INTO ingest.job_errors (job_id, position, error)
               SELECT x.job_id,
                      coalesce((SELECT max(f.position) FROM ingest.job_errors f
                                WHERE f.job_id = x.job_id), 0) + x.n,
                      x.error
               FROM x
               RETURNING job_id)
           UPDATE ingest.jobs j SET done = j.done + a.n
           FROM (SELECT job_id, count(*) AS n FROM appended GROUP BY job_id) AS a
           WHERE j.id = a.job_id AND $2""",
        [{"job_id": str(job_id), "error": error} for job_id, error in errors],
        done,
    )


@jobs.on(ingest_events.FileContentRejected)
async def content_rejected(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.FileContentRejected]]
) -> None:
    await _errors(
        conn,
        [
            (
                e.event.job_id,
                {
                    "name": e.event.name,
                    "code": e.event.code,
                    "message": e.event.message,
                    "details": e.event.details,
                },
            )
            for e in events
        ],
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
    # An import's group lists the group's file only (its images are the group's). An
    # upload's images are counted done with the group.
    uploads = await _not_imports(conn, {e.event.job_id for e in events})
    pairs = [
        (e.event.job_id, f.file_id)
        for e in events
        if e.event.job_id in uploads
        for f in e.event.files
    ]
    await _append(conn, [j for j, _ in pairs], [f for _, f in pairs], done=False)


async def _not_imports(conn: Conn, job_ids: set[uuid.UUID]) -> set[uuid.UUID]:
    rows = await conn.fetch(
        "SELECT id FROM ingest.jobs WHERE id = ANY($1::uuid[]) AND kind <> 'import'",
        list(job_ids),
    )
    return {r["id"] for r in rows}


@jobs.on(ingest_events.ImageGroupStored)
async def image_group_stored(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.ImageGroupStored]]
) -> None:
    # The group's file first (position 0: an upload makes one group, whose images are
    # appended from 1), then its images: from its pages, or (events from before pages)
    # its own `files`.
    uploads = await _not_imports(conn, {e.event.job_id for e in events})
    grouped = [e.event for e in events if e.event.job_id in uploads]
    await conn.executemany(
        """INSERT INTO ingest.job_files (job_id, position, file_id) VALUES ($1, 0, $2)
           ON CONFLICT DO NOTHING""",
        [(g.job_id, g.group_file_id) for g in grouped],
    )
    pairs = [(g.job_id, f.file_id) for g in grouped for f in g.files]
    await _append(conn, [j for j, _ in pairs], [f for _, f in pairs], done=False)
    await conn.execute(
        "UPDATE ingest.jobs SET done = total WHERE id = ANY($1::uuid[])",
        list({g.job_id for g in grouped}),
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
        "UPDATE ingest.jobs SET status = 'failed' WHERE id = $1",
        [(e.event.job_id,) for e in events],
    )
    # Its error is not one of its objects: not counted done.
    await _errors(
        conn,
        [
            (
                e.event.job_id,
                {"name": "", "code": e.event.code, "message": e.event.message, "details": {}},
            )
            for e in events
        ],
        done=False,
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
