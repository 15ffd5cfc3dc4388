"""The upload sessions read model: each session's plan, its parts' place in the store,
and whether it is open, completed or ended."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from shared.contracts import ingest as ingest_events
from shared.kit.projections import Projection
from shared.kit.reactions import Received

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
    -- The API key the session was opened with (NULL: opened before it was recorded).
    ALTER TABLE ingest.sessions ADD COLUMN IF NOT EXISTS key_id uuid;
    -- A user's open sessions, looked at again when their role on a folder goes down.
    CREATE INDEX IF NOT EXISTS sessions_open_by ON ingest.sessions (created_by)
        WHERE status = 'open';
    -- The file's metadata, given at opening (NULL: none, or opened before it was taken).
    ALTER TABLE ingest.sessions ADD COLUMN IF NOT EXISTS metadata jsonb;
    """,
)


@sessions.on(ingest_events.UploadSessionOpened)
async def session_opened(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.UploadSessionOpened]]
) -> None:
    await conn.executemany(
        """INSERT INTO ingest.sessions (id, folder_id, name, size, part_size, parts, store_key,
                                        upload_id, status, expires_at, created_at, created_by,
                                        key_id, metadata)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'open', $9, $10, $11, $12, $13)
           ON CONFLICT DO NOTHING""",
        [
            (
                e.event.session_id,
                e.event.folder_id,
                e.event.name,
                e.event.size,
                e.event.part_size,
                e.event.parts,
                e.event.store_key,
                e.event.upload_id,
                e.event.expires_at,
                e.occurred_at,
                e.actor,
                e.event.key_id,
                e.event.metadata or None,
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
        [{"job_id": e.event.job_id, "file_id": e.event.file_id} for e in events],
    )


@sessions.on(ingest_events.UploadSessionEnded)
async def session_ended(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.UploadSessionEnded]]
) -> None:
    await conn.executemany(
        "UPDATE ingest.sessions SET status = $2 WHERE id = $1",
        [(e.event.session_id, e.event.status) for e in events],
    )
