"""Ingest's read model: upload jobs and their progress."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from shared.contracts.envelope import Envelope
from shared.kit.projections import Projection

jobs = Projection(
    name="ingest.jobs",
    tables=("ingest.jobs",),
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
    """,
)


@jobs.on("ingest.UploadJobStarted")
async def job_started(conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
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


@jobs.on("ingest.FileContentStored")
async def content_stored(conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
    await conn.execute(
        """UPDATE ingest.jobs j SET done = j.done + x.n, files = j.files || x.ids
           FROM (SELECT job_id, count(*) AS n, jsonb_agg(file_id) AS ids
                 FROM jsonb_to_recordset($1::jsonb) AS r(job_id uuid, file_id text)
                 GROUP BY job_id) AS x
           WHERE j.id = x.job_id""",
        [{"job_id": e.data["job_id"], "file_id": e.data["file_id"]} for e in events],
    )


@jobs.on("ingest.FileContentRejected")
async def content_rejected(conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
    await conn.executemany(
        """UPDATE ingest.jobs SET done = done + 1, errors = errors || $2::jsonb WHERE id = $1""",
        [
            (
                e.data["job_id"],
                [{k: e.data.get(k) for k in ("name", "code", "message", "details")}],
            )
            for e in events
        ],
    )


@jobs.on("ingest.UploadJobFinished")
async def job_finished(conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
    await conn.executemany(
        "UPDATE ingest.jobs SET status = $2 WHERE id = $1",
        [(e.data["job_id"], e.data["status"]) for e in events],
    )


@jobs.on("ingest.ImageGroupStored")
async def image_group_stored(conn: asyncpg.Connection, events: Sequence[Envelope]) -> None:
    await conn.executemany(
        "UPDATE ingest.jobs SET done = total, files = $2::jsonb WHERE id = $1",
        [
            (e.data["job_id"], [e.data["group_file_id"]] + [f["file_id"] for f in e.data["files"]])
            for e in events
        ],
    )
