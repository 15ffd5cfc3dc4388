"""The integrations read model: what each bucket is, its sealed credentials (never in
clear), and whom it is shared with. An import's progress is a job's (jobs/)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from shared.contracts import ingest as ingest_events
from shared.kit.projections import Projection
from shared.kit.reactions import Received

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
    -- The SHA-256 of the token bucket notifications carry (the token is shown once).
    ALTER TABLE ingest.integrations ADD COLUMN IF NOT EXISTS events_token_sha256 text;
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
                e.event.integration_id,
                e.event.name,
                e.event.provider,
                e.event.endpoint,
                e.event.region,
                e.event.bucket,
                e.event.sealed_credentials,
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
            (e.event.integration_id, [str(u) for u in e.event.shared_with], e.stream_version)
            for e in events
        ],
    )


@integrations.on(ingest_events.IntegrationRemoved)
async def integration_removed(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.IntegrationRemoved]]
) -> None:
    await conn.execute(
        "DELETE FROM ingest.integrations WHERE id = ANY($1::uuid[])",
        [e.event.integration_id for e in events],
    )


@integrations.on(ingest_events.IntegrationCredentialsRotated)
async def credentials_rotated(
    conn: asyncpg.Connection,
    events: Sequence[Received[ingest_events.IntegrationCredentialsRotated]],
) -> None:
    await conn.executemany(
        "UPDATE ingest.integrations SET sealed_credentials = $2, version = $3 WHERE id = $1",
        [(e.event.integration_id, e.event.sealed_credentials, e.stream_version) for e in events],
    )


@integrations.on(ingest_events.IntegrationEventsTokenSet)
async def events_token_set(
    conn: asyncpg.Connection,
    events: Sequence[Received[ingest_events.IntegrationEventsTokenSet]],
) -> None:
    await conn.executemany(
        "UPDATE ingest.integrations SET events_token_sha256 = $2, version = $3 WHERE id = $1",
        [(e.event.integration_id, e.event.token_hash, e.stream_version) for e in events],
    )


# Cloud-synced folders: what each follows, the subfolders its key paths made, and every
# object as last listed (what the next sync compares its listing with).
synced = Projection(
    name="ingest.synced",
    version=2,  # 2: a synced folder in the trash is paused, not ended
    tables=("ingest.synced_folders", "ingest.synced_subfolders", "ingest.synced_objects"),
    ddl="""
    CREATE TABLE IF NOT EXISTS ingest.synced_folders (
        folder_id uuid PRIMARY KEY,
        integration_id uuid NOT NULL,
        prefix text NOT NULL,
        sync_interval_s integer,
        created_at timestamptz NOT NULL,
        created_by text NOT NULL
    );
    ALTER TABLE ingest.synced_folders ADD COLUMN IF NOT EXISTS
        paused boolean NOT NULL DEFAULT false;
    -- Whether `created_by` (FolderSyncConfigured's actor) was an org admin; null in rows
    -- from before it was recorded (then only the integration's sharing with them counts).
    ALTER TABLE ingest.synced_folders ADD COLUMN IF NOT EXISTS by_org_admin boolean;
    CREATE INDEX IF NOT EXISTS synced_folders_integration
        ON ingest.synced_folders (integration_id);
    CREATE TABLE IF NOT EXISTS ingest.synced_subfolders (
        folder_id uuid PRIMARY KEY,
        root_folder_id uuid NOT NULL
    );
    CREATE TABLE IF NOT EXISTS ingest.synced_objects (
        root_folder_id uuid NOT NULL,
        key text NOT NULL,
        file_id uuid NOT NULL,
        etag text NOT NULL,
        size bigint NOT NULL,
        last_modified text NOT NULL,
        gone boolean NOT NULL DEFAULT false,
        PRIMARY KEY (root_folder_id, key)
    );
    -- A DICOM instance copied in (its file_id names the object, the instance's
    -- object_id in the DICOM context), not a file; false in rows from before it was kept.
    ALTER TABLE ingest.synced_objects ADD COLUMN IF NOT EXISTS dicom boolean NOT NULL
        DEFAULT false;
    -- How many objects a folder's listings hold (`GET /v1/folders/{id}/sync`), counted
    -- without reading the table.
    CREATE INDEX IF NOT EXISTS synced_objects_live ON ingest.synced_objects (root_folder_id)
        WHERE NOT gone;
    """,
)


@synced.on(ingest_events.FolderSyncConfigured)
async def sync_configured(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.FolderSyncConfigured]]
) -> None:
    await conn.executemany(
        """INSERT INTO ingest.synced_folders (folder_id, integration_id, prefix,
                                              sync_interval_s, created_at, created_by,
                                              by_org_admin)
           VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING""",
        [
            (
                e.event.folder_id,
                e.event.integration_id,
                e.event.prefix,
                e.event.sync_interval_s,
                e.occurred_at,
                e.actor,
                e.event.by_org_admin,
            )
            for e in events
        ],
    )


@synced.on(ingest_events.FolderSyncPaused)
@synced.on(ingest_events.FolderSyncResumed)
async def sync_paused(
    conn: asyncpg.Connection,
    events: Sequence[Received[ingest_events.FolderSyncPaused | ingest_events.FolderSyncResumed]],
) -> None:
    await conn.executemany(
        "UPDATE ingest.synced_folders SET paused = $2 WHERE folder_id = $1",
        [(e.event.folder_id, isinstance(e.event, ingest_events.FolderSyncPaused)) for e in events],
    )


@synced.on(ingest_events.FolderSyncEnded)
async def sync_ended(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.FolderSyncEnded]]
) -> None:
    ended = [e.event.folder_id for e in events]
    await conn.execute("DELETE FROM ingest.synced_folders WHERE folder_id = ANY($1::uuid[])", ended)
    await conn.execute(
        "DELETE FROM ingest.synced_subfolders WHERE root_folder_id = ANY($1::uuid[])", ended
    )
    await conn.execute(
        "DELETE FROM ingest.synced_objects WHERE root_folder_id = ANY($1::uuid[])", ended
    )


@synced.on(ingest_events.SyncFolderNeeded)
async def sync_folder_needed(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.SyncFolderNeeded]]
) -> None:
    await conn.executemany(
        """INSERT INTO ingest.synced_subfolders (folder_id, root_folder_id) VALUES ($1, $2)
           ON CONFLICT DO NOTHING""",
        [(e.event.folder_id, e.event.root_folder_id) for e in events],
    )


@synced.on(ingest_events.CloudObjectSynced)
async def object_synced(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.CloudObjectSynced]]
) -> None:
    await conn.executemany(
        """INSERT INTO ingest.synced_objects (root_folder_id, key, file_id, etag, size,
                                              last_modified, gone, dicom)
           VALUES ($1, $2, $3, $4, $5, $6, false, $7)
           ON CONFLICT (root_folder_id, key) DO UPDATE
           SET file_id = excluded.file_id, etag = excluded.etag, size = excluded.size,
               last_modified = excluded.last_modified, gone = false,
               dicom = excluded.dicom""",
        [
            (
                e.event.root_folder_id,
                e.event.key,
                e.event.file_id,
                e.event.etag,
                e.event.size,
                e.event.last_modified,
                e.event.dicom,
            )
            for e in events
        ],
    )


@synced.on(ingest_events.CloudObjectGone)
async def object_gone(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.CloudObjectGone]]
) -> None:
    await conn.executemany(
        "UPDATE ingest.synced_objects SET gone = true WHERE root_folder_id = $1 AND key = $2",
        [(e.event.root_folder_id, e.event.key) for e in events],
    )


@synced.on(ingest_events.CloudObjectChanged)
async def object_changed(
    conn: asyncpg.Connection, events: Sequence[Received[ingest_events.CloudObjectChanged]]
) -> None:
    """Its listing facts come with CloudObjectSynced, next in the same batch."""
