"""Ingest's sessions' reclaimer (services/ingest/sessions/handlers.py, `reclaim`) against
a store that refuses a note's key for good: tried again later and later (twice as late
each time, a day at most), counted and dated for an operator, one log line a round. And
a completion that finds its session ended notes its store's side again, which a round
in flight then does not forget, nor put off when the store refuses it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import asyncpg
import pytest
import structlog

from services.ingest.sessions import handlers
from services.ingest.sessions.handlers import Sessions
from services.ingest.sessions.projections import sessions as sessions_model
from shared.kit.errors import Refused
from shared.kit.eventstore import EventStore
from shared.kit.service import Parts
from shared.kit.settings import Settings
from tests.conftest import SERVICE_KEY, fresh_database


class RefusingStore:
    """Refuses every key named `refused/...`; takes the others."""

    def __init__(self) -> None:
        self.done: list[str] = []
        self.meanwhile: list[Callable[[], Awaitable[None]]] = []

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        for happens in self.meanwhile:
            await happens()
        if key.startswith("refused/"):
            raise PermissionError(f"access denied: {key}")

    async def delete(self, key: str) -> None:
        self.done.append(key)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with fresh_database(database_url, "t_reclaim") as pool:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("CREATE SCHEMA IF NOT EXISTS ingest")
            await EventStore("ingest").setup(conn)
            await sessions_model.setup(conn)
            await handlers.setup(conn)
        yield pool


def reclaimer_on(pool: asyncpg.Pool, store: RefusingStore) -> Sessions:
    parts = Parts("ingest", Settings(service_key=SERVICE_KEY))
    parts.pool = pool
    return Sessions(parts, store, b"k")  # type: ignore[arg-type]


async def test_a_note_the_store_refuses_for_good_is_tried_later_each_time_and_counted(
    pool: asyncpg.Pool,
) -> None:
    store = RefusingStore()
    reclaimer = reclaimer_on(pool, store)
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


async def session(pool: asyncpg.Pool, status: str) -> uuid.UUID:
    made = uuid.uuid4()
    await pool.execute(
        """INSERT INTO ingest.sessions (id, folder_id, name, size, part_size, parts, store_key,
                                        upload_id, status, expires_at, created_at, created_by)
           VALUES ($1, $1, 'f', 1, 1, 1, $3, 'u', $2, now(), now(), 'x')""",
        made,
        status,
        f"uploads/{made}",
    )
    return made


async def test_a_completion_finding_its_session_ended_notes_its_store_side_again(
    pool: asyncpg.Pool,
) -> None:
    """An abort while a completion assembled: the abort's note was done (the store had
    no object yet), then the assembly put it there. The completion, refused as it comes
    to record, notes it again, even while a round doing the first note is in flight;
    an open session it leaves be."""
    store = RefusingStore()
    reclaimer = reclaimer_on(pool, store)
    aborted, still_open = await session(pool, "aborted"), await session(pool, "open")
    await reclaimer._check_open(still_open)
    with pytest.raises(Refused) as refused:
        await reclaimer._check_open(aborted)
    assert refused.value.status == 409
    assert await pool.fetchval("SELECT array_agg(session_id) FROM ingest.session_uploads_left") == [
        aborted
    ]

    async def assembled_and_refused() -> None:  # during the round's store calls
        store.meanwhile.clear()
        async with pool.acquire() as conn:
            await reclaimer._note_again(conn, aborted)

    store.meanwhile.append(assembled_and_refused)
    assert await reclaimer.reclaim() == 1
    assert await pool.fetchval("SELECT count(*) FROM ingest.session_uploads_left") == 1
    assert await reclaimer.reclaim() == 1  # the object the assembly left, deleted
    assert await pool.fetchval("SELECT count(*) FROM ingest.session_uploads_left") == 0
    assert store.done == [f"uploads/{aborted}"] * 2


async def test_a_note_noted_again_during_a_round_the_store_refuses_stays_due(
    pool: asyncpg.Pool,
) -> None:
    """A completion notes a session's store's side again while a round is refused that
    note's calls: the round's backoff is for the note it read, not the new one, which
    the next round does at once."""
    store = RefusingStore()
    reclaimer = reclaimer_on(pool, store)
    aborted = await session(pool, "aborted")
    await pool.execute(
        "INSERT INTO ingest.session_uploads_left (session_id, store_key, upload_id)"
        " VALUES ($1, $2, 'u')",
        aborted,
        f"refused/{aborted}",
    )

    async def assembled_and_refused() -> None:  # during the round's store calls
        store.meanwhile.clear()
        async with pool.acquire() as conn:
            assert await reclaimer._note_again(conn, aborted)

    store.meanwhile.append(assembled_and_refused)
    assert await reclaimer.reclaim() == 0
    note = await pool.fetchrow(
        "SELECT attempts, due <= now() AS due FROM ingest.session_uploads_left"
    )
    assert note is not None and (note["attempts"], note["due"]) == (0, True)
