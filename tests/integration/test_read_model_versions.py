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


async def built_by(pool: asyncpg.Pool) -> tuple[list[str], int]:
    """The read model's names, and the version recorded as having built them."""
    rows = await pool.fetch("SELECT name FROM versioned.names ORDER BY name")
    version = await pool.fetchval(
        "SELECT version FROM versioned.read_models WHERE name = 'versioned.names'"
    )
    return [r["name"] for r in rows], version


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
    assert await built_by(pool) == (["SCAN 0", "SCAN 1", "SCAN 2"], 2)
    # Started again (or another replica starting): current, so not rebuilt again.
    assert await ensure_current(pool, store, second) == 0
    # A replica of the release before restarting while the rollout runs finds a newer
    # read model and serves it as it is: rebuilt by its own code, the newer replicas
    # (which look only at their start) would serve its rows.
    assert await ensure_current(pool, store, first) == 0
    assert await built_by(pool) == (["SCAN 0", "SCAN 1", "SCAN 2"], 2)
    # The stored events keep the version they were recorded with.
    assert {e.schema_version for e in await store.read_after(pool, 0, limit=10)} == {1}


async def test_the_catalogs_metadata_index_from_before_is_made_again_over_files_with_metadata(
    pool: asyncpg.Pool,
) -> None:
    """A catalog whose containment index covers every file (as made before 2026-12-06,
    evening) has it made again at its next start over files with metadata only, and a
    metadata filter still finds its files through it."""
    from services.catalog import listing
    from services.catalog.projections import tree

    async with pool.acquire() as conn:
        await conn.execute("CREATE SCHEMA IF NOT EXISTS catalog")
        await tree.setup(conn)
        # The database as the version before left it: the index over every row.
        await conn.execute("DROP INDEX catalog.files_metadata")
        await conn.execute(
            "CREATE INDEX files_metadata ON catalog.files USING gin (metadata jsonb_path_ops)"
        )
        folder = uuid.uuid4()
        flagged, plain = uuid.uuid4(), uuid.uuid4()
        for file_id, metadata in ((flagged, {"flag": True}), (plain, {})):
            await conn.execute(
                """INSERT INTO catalog.files (id, folder_id, name, kind, size, sha256, mime_type,
                       media, blob_key, source, metadata, version, created_at, created_by)
                   VALUES ($1, $2, $3, 'text', 1, 'x', 'text/plain', '{}', 'k',
                           '{"type": "upload"}', $4, 0, now(), 'u')""",
                file_id,
                folder,
                f"{file_id}.txt",
                metadata,
            )

        await tree.setup(conn)  # the next start

        assert "WHERE (metadata <> '{}'::jsonb)" in await conn.fetchval(
            "SELECT pg_get_indexdef('catalog.files_metadata'::regclass)"
        )
        # `flag=true` reads as the boolean or the text: containment, not the typed table.
        where = listing.filters(
            listing.Listing(metadata=(("flag", ("true",)),)), "f", [], files=True
        )
        query = f"SELECT f.id FROM catalog.files f WHERE {where.sql}"
        assert [r["id"] for r in await conn.fetch(query, *where.args)] == [flagged]
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off")
            plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + query, *where.args))
        assert "files_metadata" in plan
