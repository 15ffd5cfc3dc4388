"""A rebuild runs a set-based handler's statements over the store's rows, in
PostgreSQL: the rows must be those the live path made from the same events."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.catalog.projections import tree
from shared.contracts import catalog as cat
from shared.contracts.envelope import Cause, Change, envelopes_of
from shared.kit import projections
from shared.kit.eventstore import EventStore
from shared.kit.projections import Projection, rebuild
from tests.conftest import fresh_database
from tests.integration.test_rebuild import rows

CAUSE = Cause(actor=str(uuid.uuid4()), correlation_id=str(uuid.uuid4()))


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with fresh_database(database_url, "t_set_based") as pool:
        yield pool


def upload(folder_id: uuid.UUID, name: str, **more: object) -> Change:
    file_id = uuid.uuid4()
    digest = file_id.hex * 2
    event = cat.FileUploaded(
        file_id=file_id,
        folder_id=folder_id,
        name=name,
        kind="image",
        size=10,
        sha256=digest,
        mime_type="image/png",
        blob_key=f"sha256/{digest}",
        **more,  # type: ignore[arg-type]
    )
    return Change(cat.file_stream(file_id), 1, event)


def page(folder_id: uuid.UUID, *names: str, **metadata: object) -> Change:
    """An upload's page of files, as the catalog records one (`FilesUploaded`)."""
    files = []
    for n, name in enumerate(names):
        file_id = uuid.uuid4()
        digest = file_id.hex * 2
        files.append(
            cat.UploadedFile(
                file_id=file_id,
                name=name,
                kind="image",
                size=10 + n,
                sha256=digest,
                mime_type="image/png",
                blob_key=f"sha256/{digest}",
                metadata=metadata if n == 0 else {},
            )
        )
    event = cat.FilesUploaded(
        folder_id=folder_id,
        job_id=uuid.uuid4(),
        file_ids=[f.file_id for f in files],
        files=files,
    )
    return Change(cat.upload_page_stream(uuid.uuid4()), 1, event)


async def test_a_rebuild_makes_the_rows_the_live_handlers_made(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = EventStore("catalog")
    async with pool.acquire() as conn:
        await conn.execute("CREATE SCHEMA IF NOT EXISTS catalog")
        await store.setup(conn)
        await tree.setup(conn)

    async def record(changes: list[Change]) -> None:
        """As the catalog writes: projected inline, then appended, in one transaction."""
        envelopes = envelopes_of(changes, CAUSE)
        async with pool.acquire() as conn, conn.transaction():
            await tree.apply(conn, envelopes)
            await store.append(conn, envelopes)

    top = uuid.uuid4()
    await record(
        [
            Change(
                cat.folder_stream(top),
                1,
                cat.FolderCreated(folder_id=top, parent_id=None, name="t"),
            )
        ]
    )
    # Folders in one batch, each below the one before it (a run whose parents are among
    # its own events), and one below a folder made before.
    a, b, c, beside = (uuid.uuid4() for _ in range(4))
    await record(
        [
            Change(
                cat.folder_stream(f),
                1,
                cat.FolderCreated(
                    folder_id=f, parent_id=p, name=n, description="d", metadata={"k": n}
                ),
            )
            for f, p, n in ((a, top, "a"), (b, a, "b"), (c, b, "c"), (beside, top, "beside"))
        ]
    )
    images = [upload(top, f"img{i}.png") for i in range(3)]
    await record(images)
    # A group from before pages: it names its images, which do not name it.
    group = {"constituent_folder_id": str(top), "file_ids": [str(c.event.file_id) for c in images]}  # type: ignore[attr-defined]
    await record([upload(top, "group", group=group)])
    # In one batch: a group from before pages first, then the images it names.
    later = [upload(top, f"late{i}.png") for i in range(2)]
    named = {"constituent_folder_id": str(top), "file_ids": [str(c.event.file_id) for c in later]}  # type: ignore[attr-defined]
    await record([upload(top, "late group", group=named), *later])
    # Metadata at upload (typed values), between runs of other types.
    scored = upload(top, "scored.png", metadata={"score": 3, "site": "a", "at": "2026-01-01"})
    await record([scored, upload(top, "plain.png")])
    file_id = scored.event.file_id  # type: ignore[attr-defined]
    await record(
        [Change(cat.file_stream(file_id), 2, cat.FileRenamed(file_id=file_id, name="renamed.png"))]
    )
    await record([upload(top, f"tail{i}.txt", metadata={"n": i}) for i in range(4)])
    # Pages: their files at version 0 (no event in their own streams), then one renamed
    # (its stream's first event); a page beside files of their own in one batch.
    paged = page(top, "page0.png", "page1.png", "page2.png", p=7)
    await record([paged])
    # A page's files are new by construction (ids made for the upload, a page recorded
    # once), so its insert is a plain one: a page applied twice is refused, whole, not
    # passed over as a conflict would be.
    with pytest.raises(asyncpg.UniqueViolationError):
        async with pool.acquire() as conn, conn.transaction():
            await tree.apply(conn, envelopes_of([paged], CAUSE))
    born = paged.event.file_ids[0]  # type: ignore[attr-defined]
    await record([Change(cat.file_stream(born), 1, cat.FileRenamed(file_id=born, name="p.png"))])
    await record([upload(top, "single.png"), page(top, "page3.png", "page4.png")])
    # Runs of folders and of files taking turns, a folder below one made two runs
    # before: a rebuild runs each type's statements once over all their runs.
    d, e = uuid.uuid4(), uuid.uuid4()
    for folder, parent in ((d, top), (e, d)):
        await record(
            [
                Change(
                    cat.folder_stream(folder),
                    1,
                    cat.FolderCreated(folder_id=folder, parent_id=parent, name=str(folder)),
                )
            ]
        )
        await record([upload(folder, f"in{i}.txt") for i in range(2)])

    live = await rows(pool)
    paths = {r["id"]: r["path"] for r in live["catalog.folders"]}
    assert paths[c] == [top, a, b, c]
    assert paths[beside] == [top, beside]
    assert paths[e] == [top, d, e]
    assert len(live["catalog.files"]) == 23
    grouped = [f for f in live["catalog.files"] if f["constituent_of"] is not None]
    assert len(grouped) == 5
    assert {r["key"] for r in live["catalog.metadata_values"]} == {"score", "site", "at", "n", "p"}
    from_pages = {
        f["name"]: f for f in live["catalog.files"] if f["name"].startswith(("p.", "page"))
    }
    assert {n: f["version"] for n, f in from_pages.items()} == {
        "p.png": 1,
        "page1.png": 0,
        "page2.png": 0,
        "page3.png": 0,
        "page4.png": 0,
    }
    assert from_pages["p.png"]["source"] == {"type": "upload", "integration_id": None, "key": None}
    assert from_pages["page1.png"]["folder_id"] == top
    assert from_pages["page1.png"]["size"] == 11

    events = 1 + 4 + 3 + 1 + 3 + 2 + 1 + 4 + 1 + 1 + 2 + 2 * (1 + 2)
    assert await rebuild(pool, store, tree) == events
    assert await rows(pool) == live
    # Windows of 4 positions: runs cut by windows as well as by types.
    monkeypatch.setattr(projections, "WINDOW", 4)
    assert await rebuild(pool, store, tree) == events
    assert await rows(pool) == live


def test_only_handlers_touching_no_table_in_common_are_run_out_of_order() -> None:
    """A run may join the set-based runs before it only if its handler touches no
    table theirs do; one that does not say what it touches joins none."""
    p = Projection(name="t.p", ddl="", tables=())

    def sql(events: str) -> list[str]:
        return [f"SELECT FROM {events}"]

    for contract, touches in (
        (cat.FolderCreated, ("t.folders",)),
        (cat.FileUploaded, ("t.files", "t.values")),
        (cat.FileRenamed, ("t.files",)),
        (cat.FolderRenamed, ()),
    ):
        p.on(contract, sql=sql, touches=touches)(_nothing)
    pending = {(cat.FolderCreated.type, 1): [1, 1]}
    assert projections._commute(p, cat.FileUploaded.type, pending)
    assert projections._commute(p, cat.FolderCreated.type, pending)
    assert not projections._commute(p, cat.FolderRenamed.type, pending)
    pending[(cat.FileUploaded.type, 1)] = [2, 3]
    assert not projections._commute(p, cat.FileRenamed.type, pending)
    assert projections._commute(p, cat.FileUploaded.type, pending)
    assert projections._commute(p, cat.FolderRenamed.type, {})


async def _nothing(conn: object, events: object) -> None:
    return None


async def test_each_declared_touch_covers_every_table_its_statements_use(
    pool: asyncpg.Pool,
) -> None:
    """`touches=` is what lets a rebuild run two handlers out of order: a table one of
    them reads or writes without declaring it would make that order change the rows.
    So each declared handler's statements are run over history and every table
    PostgreSQL saw them read or write (scans, index scans, rows written, in this
    transaction's statistics) must be among those it declares."""
    store = EventStore("catalog")
    async with pool.acquire() as conn:
        await conn.execute("CREATE SCHEMA IF NOT EXISTS catalog")
        await store.setup(conn)
        await tree.setup(conn)
    top, below = uuid.uuid4(), uuid.uuid4()
    images = [upload(top, f"img{i}.png") for i in range(3)]
    group = {"constituent_folder_id": str(top), "file_ids": [str(c.event.file_id) for c in images]}  # type: ignore[attr-defined]
    history = [
        [
            Change(
                cat.folder_stream(top),
                1,
                cat.FolderCreated(folder_id=top, parent_id=None, name="t"),
            )
        ],
        [
            Change(
                cat.folder_stream(below),
                1,
                cat.FolderCreated(folder_id=below, parent_id=top, name="b"),
            )
        ],
        images,
        [upload(top, "group", group=group), upload(below, "scored.png", metadata={"score": 3})],
        [page(below, "paged.png", "paged2.png", score=4)],
    ]
    async with pool.acquire() as conn:
        for changes in history:
            envelopes = envelopes_of(changes, CAUSE)
            async with conn.transaction():
                await tree.apply(conn, envelopes)
                await store.append(conn, envelopes)

    assert set(tree.touches) == {
        cat.FolderCreated.type,
        cat.FileUploaded.type,
        cat.FilesUploaded.type,
    }
    used_sql = """SELECT schemaname || '.' || relname AS name,
                         seq_scan + coalesce(idx_scan, 0) AS scans,
                         n_tup_ins + n_tup_upd + n_tup_del AS writes
                  FROM pg_stat_xact_user_tables"""
    relation = projections._stored(store)

    async def run(conn: asyncpg.Connection, event_type: str) -> None:
        head = await store.head(conn)
        version = await conn.fetchval(
            "SELECT DISTINCT schema_version FROM catalog.events WHERE type = $1", event_type
        )
        for statement in tree.statements[event_type](relation):
            await conn.fetchval(statement, 0, head, event_type, version)

    for event_type, declared in tree.touches.items():
        async with pool.acquire() as conn:
            check = conn.transaction()  # rolled back: nothing of the check is kept
            await check.start()
            # As a rebuild runs it: after the others' runs, over the rows they made (a
            # join with an empty table could leave a table it uses unseen).
            await conn.execute(f"TRUNCATE {', '.join(tree.tables)}")
            for other in tree.touches.keys() - {event_type}:
                await run(conn, other)
            before = {r["name"]: r for r in await conn.fetch(used_sql)}
            await run(conn, event_type)
            after = await conn.fetch(used_sql)
            await check.rollback()

        def grew(
            row: asyncpg.Record, column: str, before: dict[str, asyncpg.Record] = before
        ) -> bool:
            was = before.get(row["name"])
            return bool(row[column] > (was[column] if was is not None else 0))

        used = {
            r["name"]
            for r in after
            if r["name"] != store.table and (grew(r, "scans") or grew(r, "writes"))
        }
        assert used <= declared, f"{event_type} uses {sorted(used - declared)} undeclared"
        # Rows were made (the statements ran over the events, not over nothing).
        assert any(grew(r, "writes") for r in after), f"{event_type}'s statements wrote nothing"
