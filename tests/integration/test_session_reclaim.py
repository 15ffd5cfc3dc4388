"""Ingest's sessions' reclaimer (services/ingest/sessions/handlers.py, `reclaim`) against
a store that refuses a note's key for good: tried again later and later (twice as late
each time, a day at most), counted and dated for an operator, one log line a round."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest
import structlog

from services.ingest.sessions import handlers
from services.ingest.sessions.handlers import Sessions
from services.ingest.sessions.projections import sessions as sessions_model
from shared.kit.service import Parts
from shared.kit.settings import Settings
from tests.conftest import SERVICE_KEY, fresh_database


class RefusingStore:
    """Refuses every key named `refused/...`; takes the others."""

    def __init__(self) -> None:
        self.done: list[str] = []

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        if key.startswith("refused/"):
            raise PermissionError(f"access denied: {key}")

    async def delete(self, key: str) -> None:
        self.done.append(key)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with fresh_database(database_url, "t_reclaim") as pool:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("CREATE SCHEMA IF NOT EXISTS ingest")
            await sessions_model.setup(conn)
            await handlers.setup(conn)
        yield pool


async def test_a_note_the_store_refuses_for_good_is_tried_later_each_time_and_counted(
    pool: asyncpg.Pool,
) -> None:
    parts = Parts("ingest", Settings(service_key=SERVICE_KEY))
    parts.pool = pool
    store = RefusingStore()
    reclaimer = Sessions(parts, store, b"k")  # type: ignore[arg-type]
    refused = [uuid.uuid4() for _ in range(3)]
    taken = uuid.uuid4()
    await pool.executemany(
        "INSERT INTO ingest.session_uploads_left (session_id, store_key, upload_id)"
        " VALUES ($1, $2, 'u')",
        [(s, f"refused/{s}") for s in refused] + [(taken, f"uploads/{taken}")],
    )

    async def notes() -> list[tuple[int, timedelta]]:
        rows = await pool.fetch(
            "SELECT attempts, due - now() AS wait, noted_at FROM ingest.session_uploads_left"
        )
        assert all(r["noted_at"] is not None for r in rows)
        return sorted((r["attempts"], r["wait"]) for r in rows)

    waits = []
    for attempt in range(1, 13):
        with structlog.testing.capture_logs() as logs:
            assert await reclaimer.reclaim() == (1 if attempt == 1 else 0)
        # One line for the round, with the count, not one a note.
        [line] = [entry for entry in logs if entry["event"] == "ingest.session_uploads_left"]
        assert (line["refused"], line["of"]) == (3, 3 if attempt > 1 else 4)
        found = await notes()
        assert [a for a, _ in found] == [attempt] * 3
        waits.append(found[0][1])
        await pool.execute("UPDATE ingest.session_uploads_left SET due = now()")  # its time
    assert store.done == [f"uploads/{taken}"]
    minutes = [round(w / timedelta(minutes=1)) for w in waits]
    assert minutes == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 1440]
