"""What `GET /v1/folders/{id}/sync` reads at every view of a synced folder's page, on a
real PostgreSQL with 100,000 objects and 20,000 jobs of other folders: the folder's
latest sync from an index, not a scan of every job ever, and its live objects counted
in an index, not the table."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.ingest.imports.projections import integrations, synced
from services.ingest.imports.sync import LAST_SYNC, SYNC_STATE
from services.ingest.jobs.projections import jobs
from tests.conftest import fresh_database

OBJECTS = 100_000
JOBS = 20_000


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with fresh_database(database_url, "sync_state") as pool:
        await pool.execute("CREATE SCHEMA IF NOT EXISTS ingest")
        async with pool.acquire() as conn:
            await jobs.setup(conn)
            await integrations.setup(conn)  # the state names the folder's integration
            await synced.setup(conn)
        yield pool


async def plan(pool: asyncpg.Pool, sql: str, *args: object) -> str:
    rows = await pool.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *args)
    return "\n".join(r[0] for r in rows)


async def test_a_synced_folders_state_is_read_from_indexes(pool: asyncpg.Pool) -> None:
    mine, other = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    for folder in (mine, other):
        await pool.execute(
            """INSERT INTO ingest.synced_folders (folder_id, integration_id, prefix,
                                                  sync_interval_s, created_at, created_by)
               VALUES ($1, $2, '', 3600, $3, 'someone')""",
            folder,
            uuid.uuid4(),
            now,
        )
    # Half the objects are the folder's, one in ten of them gone.
    await pool.execute(
        """INSERT INTO ingest.synced_objects (root_folder_id, key, file_id, etag, size,
                                              last_modified, gone)
           SELECT CASE WHEN i % 2 = 0 THEN $1::uuid ELSE $2::uuid END, 'k' || i, gen_random_uuid(),
                  'e', 1, '', i % 20 = 0
           FROM generate_series(1, $3) AS i""",
        mine,
        other,
        OBJECTS,
    )
    # Every other folder's jobs, and three syncs of this one.
    await pool.execute(
        """INSERT INTO ingest.jobs (id, folder_id, status, total, done, files, errors,
                                    created_at, created_by, kind)
           SELECT gen_random_uuid(), gen_random_uuid(), 'succeeded', 1, 1, '[]', '[]',
                  $1, 'someone', 'sync'
           FROM generate_series(1, $2)""",
        now,
        JOBS,
    )
    latest = uuid.uuid4()
    for job_id, ago in ((uuid.uuid4(), 3), (latest, 1), (uuid.uuid4(), 2)):
        await pool.execute(
            """INSERT INTO ingest.jobs (id, folder_id, status, total, done, files, errors,
                                        created_at, created_by, kind)
               VALUES ($1, $2, 'succeeded', 1, 1, '[]', '[]', $3, 'someone', 'sync')""",
            job_id,
            mine,
            now - timedelta(minutes=ago),
        )
    await pool.execute("VACUUM ANALYZE ingest.jobs")
    await pool.execute("VACUUM ANALYZE ingest.synced_objects")

    started = time.perf_counter()
    row = await pool.fetchrow(SYNC_STATE, mine)
    last = await pool.fetchrow(LAST_SYNC, mine)
    took = time.perf_counter() - started
    assert row is not None and row["objects"] == OBJECTS // 2 - OBJECTS // 20
    assert last is not None and last["id"] == latest

    state, latest_sync = await plan(pool, SYNC_STATE, mine), await plan(pool, LAST_SYNC, mine)
    print(f"\nthe state in {took * 1000:.1f} ms\n{state}\n{latest_sync}")
    assert "Index Only Scan using synced_objects_live" in state, state
    assert "jobs_folder_kind" in latest_sync and "Seq Scan" not in latest_sync, latest_sync
