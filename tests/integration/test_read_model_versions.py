"""A read model whose version changed rebuilds itself at start; a current one does not."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest

from shared.contracts import catalog as cat
from shared.contracts.envelope import Cause, Change, envelopes_of
from shared.kit import db
from shared.kit.eventstore import EventStore
from shared.kit.projections import Projection, ensure_current
from shared.kit.reactions import Received
from tests.conftest import fresh_database

DDL = "CREATE TABLE IF NOT EXISTS versioned.names (id uuid PRIMARY KEY, name text NOT NULL)"


def names(version: int, upper: bool) -> Projection:
    """The same read model; at version 2 its handler keeps names upper-cased."""
    projection = Projection(
        name=f"versioned.names.{uuid.uuid4().hex[:6]}",
        tables=("versioned.names",),
        ddl=DDL,
        version=version,
    )
    projection.name = "versioned.names"  # one name across "releases" (triggers stay apart)

    @projection.on(cat.FileRenamed)
    async def renamed(conn: db.Conn, events: Sequence[Received[cat.FileRenamed]]) -> None:
        await conn.executemany(
            """INSERT INTO versioned.names (id, name) VALUES ($1, $2)
               ON CONFLICT (id) DO UPDATE SET name = excluded.name""",
            [(e.event.file_id, e.event.name.upper() if upper else e.event.name) for e in events],
        )

    return projection


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with fresh_database(database_url, "t_versions") as pool:
        yield pool


async def test_a_projection_whose_version_changed_is_rebuilt_at_start(pool: asyncpg.Pool) -> None:
    store = EventStore("versioned")
    first = names(1, upper=False)
    files = [uuid.uuid4() for _ in range(3)]
    async with pool.acquire() as conn, conn.transaction():
        await store.setup(conn)
        await first.setup(conn)
        written = envelopes_of(
            [
                Change(f"file-{f}", 1, cat.FileRenamed(file_id=f, name=f"scan {n}"))
                for n, f in enumerate(files)
            ],
            Cause(actor="test", correlation_id="test"),
        )
        await first.apply(conn, written)
        await store.append(conn, written)
    # Rows from before versions were recorded count as version 1: nothing to do.
    assert await ensure_current(pool, store, first) == 0

    # The next release changes what the rows hold, and says so with its version.
    second = names(2, upper=True)
    assert await ensure_current(pool, store, second) == 3
    rows = await pool.fetch("SELECT name FROM versioned.names ORDER BY name")
    assert [r["name"] for r in rows] == ["SCAN 0", "SCAN 1", "SCAN 2"]
    assert (
        await pool.fetchval(
            "SELECT version FROM versioned.read_models WHERE name = 'versioned.names'"
        )
        == 2
    )
    # Started again (or another replica starting): current, so not rebuilt again.
    assert await ensure_current(pool, store, second) == 0
    # The stored events keep the version they were recorded with.
    assert {e.schema_version for e in await store.read_after(pool, 0, limit=10)} == {1}
