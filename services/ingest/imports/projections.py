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
