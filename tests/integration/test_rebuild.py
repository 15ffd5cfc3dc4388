"""Rebuilding the folder tree from the catalog's events gives the live rows back."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from dataclasses import replace

import asyncpg
import httpx

from services.catalog import domain
from services.catalog.projections import tree
from shared.contracts import catalog as ev
from shared.contracts.envelope import Cause, Change, envelopes_of
from shared.kit.eventstore import EventStore
from shared.kit.projections import rebuild
from tests.conftest import fresh_database
from tests.e2e.test_smoke import png

SNAPSHOT = {
    "catalog.folders": "SELECT * FROM catalog.folders ORDER BY id",
    "catalog.files": "SELECT * FROM catalog.files ORDER BY id",
    "catalog.metadata_values": "SELECT * FROM catalog.metadata_values ORDER BY file_id, key",
    "catalog.metadata_schema": "SELECT * FROM catalog.metadata_schema",
    "catalog.trash_folders": "SELECT * FROM catalog.trash_folders ORDER BY id",
    "catalog.trash_files": "SELECT * FROM catalog.trash_files ORDER BY id",
}


async def rows(pool: asyncpg.Pool) -> dict[str, list[dict[str, object]]]:
    return {t: [dict(r) for r in await pool.fetch(q)] for t, q in SNAPSHOT.items()}


def differences(
    rebuilt: dict[str, list[dict[str, object]]], live: dict[str, list[dict[str, object]]]
) -> list[str]:
    """Each row a rebuild made otherwise, by table and key, with the columns that differ
    (pytest's own diff of these dicts is cut short before it names a column)."""

    def key(row: dict[str, object]) -> tuple[str, ...]:
        return tuple(str(row[c]) for c in ("id", "file_id", "key") if c in row)

    found = []
    for table in live.keys() | rebuilt.keys():
        mine = {key(r): r for r in rebuilt.get(table, [])}
        theirs = {key(r): r for r in live.get(table, [])}
        for k in mine.keys() | theirs.keys():
            a, b = mine.get(k), theirs.get(k)
            if a == b:
                continue
            if a is None or b is None:
                found.append(f"{table} {k}: only {'live' if a is None else 'rebuilt'}: {a or b}")
                continue
            cols = {c: (a.get(c), b.get(c)) for c in a.keys() | b.keys() if a.get(c) != b.get(c)}
            found.append(f"{table} {k}: rebuilt/live {cols}")
    return found


async def make_history(api: httpx.AsyncClient) -> list[str]:
    """Every kind of catalog event, on a small tree; the ids of the files of its first
    upload (born in a page: each changed after, as any file)."""
    top = (await api.post("/v1/folders", json={"name": f"rebuild-{uuid.uuid4().hex[:8]}"})).json()
    a = (await api.post("/v1/folders", json={"name": "a", "parent_id": top["id"]})).json()
    b = (await api.post("/v1/folders", json={"name": "b", "parent_id": top["id"]})).json()
    deep = (await api.post("/v1/folders", json={"name": "deep", "parent_id": a["id"]})).json()
    files = (
        await api.post(
            f"/v1/folders/{deep['id']}/files",
            files=[("file", (f"img{i}.png", png(8, 8 + i), "image/png")) for i in range(3)],
        )
    ).json()["files"]
    await api.patch(f"/v1/folders/{a['id']}", json={"name": "a2", "description": "renamed"})
    edited = await api.patch(
        f"/v1/files/{files[0]['id']}", json={"name": "first.png", "metadata": {"k": 1}}
    )
    assert edited.status_code == 200, edited.text
    await api.patch(
        "/v1/files",
        json={
            "updates": [
                {
                    "id": files[1]["id"],
                    "description": "second",
                    "metadata": {"at": "2026-01-01T00:00:00Z"},
                }
            ]
        },
    )
    schema = (await api.get("/v1/metadata-schema")).json()["keys"]
    await api.put("/v1/metadata-schema", json={"keys": schema})
    await api.post("/v1/move", json={"folder_ids": [a["id"]], "target_folder_id": b["id"]})
    moved = await api.post(
        "/v1/move", json={"file_ids": [files[1]["id"]], "target_folder_id": top["id"]}
    )
    assert moved.status_code == 200, moved.text
    assert (await api.delete(f"/v1/files/{files[2]['id']}")).status_code == 204
    doomed = (await api.post("/v1/folders", json={"name": "doomed", "parent_id": b["id"]})).json()
    await api.post(
        f"/v1/folders/{doomed['id']}/files", files=[("file", ("x.txt", b"hello", "text/plain"))]
    )
    await api.delete(f"/v1/folders/{doomed['id']}")
    # Back from the trash (a folder with its file, a file alone), then changed again:
    # a restored file keeps the version of its stream.
    await api.post("/v1/trash/restore", json={"folder_ids": [doomed["id"]]})
    await api.delete(f"/v1/files/{files[0]['id']}")
    await api.post("/v1/trash/restore", json={"file_ids": [files[0]["id"]]})
    renamed = await api.patch(f"/v1/files/{files[0]['id']}", json={"name": "back.png"})
    assert renamed.status_code == 200, renamed.text
    # Left in the trash: a file and a folder deleted on their own, then the folder they
    # were in (each its own item), and what a restore of a file alone left behind.
    kept = (await api.post("/v1/folders", json={"name": "kept", "parent_id": top["id"]})).json()
    inner = (await api.post("/v1/folders", json={"name": "in", "parent_id": kept["id"]})).json()
    alone, went = (
        await api.post(
            f"/v1/folders/{kept['id']}/files",
            files=[("file", (n, n.encode(), "text/plain")) for n in ("alone.txt", "went.txt")],
        )
    ).json()["files"]
    for body in (
        {"file_ids": [alone["id"]]},
        {"folder_ids": [inner["id"]]},
        {"folder_ids": [kept["id"]]},
    ):
        assert (await api.post("/v1/delete", json=body)).status_code == 200
    left = (await api.post("/v1/folders", json={"name": "left", "parent_id": top["id"]})).json()
    one, other = (
        await api.post(
            f"/v1/folders/{left['id']}/files",
            files=[("file", (n, n.encode(), "text/plain")) for n in ("one.txt", "other.txt")],
        )
    ).json()["files"]
    await api.delete(f"/v1/folders/{left['id']}")
    await api.post("/v1/trash/restore", json={"file_ids": [one["id"]]})
    await api.delete(f"/v1/folders/{left['id']}")
    # Trashed from a folder (a file, a folder), then the folder moved: their paths follow.
    box = (await api.post("/v1/folders", json={"name": "box", "parent_id": top["id"]})).json()
    lid = (await api.post("/v1/folders", json={"name": "lid", "parent_id": box["id"]})).json()
    (inside,) = (
        await api.post(
            f"/v1/folders/{box['id']}/files", files=[("file", ("in.txt", b"in", "text/plain"))]
        )
    ).json()["files"]
    await api.post("/v1/delete", json={"file_ids": [inside["id"]], "folder_ids": [lid["id"]]})
    moved = await api.post(
        "/v1/move", json={"folder_ids": [box["id"]], "target_folder_id": b["id"]}
    )
    assert moved.status_code == 200, moved.text
    trashed = await api.get("/v1/trash", params={"limit": 1000})
    listed = {i["id"]: i.get("files") for i in trashed.json()["items"]}
    assert listed.keys() >= {alone["id"], inner["id"], kept["id"], other["id"], left["id"]}
    assert listed.keys() >= {inside["id"], lid["id"]}
    assert (listed[kept["id"]], listed[left["id"]]) == (1, 1), listed
    assert went["id"] not in listed
    return [f["id"] for f in files]


async def test_rebuilt_tree_has_the_same_rows_as_the_live_one(
    api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    born = await make_history(api)
    # Their upload is a page's (FilesUploaded, in its own stream), none a file's own.
    assert await pool.fetchval(
        """SELECT count(*) FROM catalog.events
           WHERE type = 'catalog.FilesUploaded' AND data->'file_ids' ?| $1::text[]""",
        born,
    )
    assert not await pool.fetchval(
        """SELECT count(*) FROM catalog.events
           WHERE type = 'catalog.FileUploaded' AND data->>'file_id' = ANY($1::text[])""",
        born,
    )
    indexes = "SELECT indexdef FROM pg_indexes WHERE schemaname = 'catalog' ORDER BY indexname"
    before = [r["indexdef"] for r in await pool.fetch(indexes)]
    head = "SELECT max(position) FROM catalog.events"
    # The platform is shared: what other tests left going (a synced folder's bucket
    # read again, the trash's purge) may record catalog events between the snapshot and
    # the rebuild. A snapshot and a rebuild with no event between them are compared.
    for _ in range(10):
        at = await pool.fetchval(head)
        live = await rows(pool)
        replayed = await rebuild(pool, EventStore("catalog"), tree)
        rebuilt = await rows(pool)
        if await pool.fetchval(head) == at:
            break
    else:
        raise AssertionError("catalog events kept coming: no quiet moment to compare in")
    assert live["catalog.folders"] and live["catalog.files"] and live["catalog.metadata_values"]
    assert replayed > 0
    assert rebuilt == live, differences(rebuilt, live)
    # A trashed file's path is its folder's where the folder is now (moved after it went).
    assert not await pool.fetchval(
        """SELECT count(*) FROM catalog.trash_files t JOIN catalog.folders f ON f.id = t.folder_id
           WHERE t.path <> f.path"""
    )
    # The indexes a rebuild drops while it loads (search, orders) are all made again.
    assert [r["indexdef"] for r in await pool.fetch(indexes)] == before
    assert set(tree.rebuilt_without) <= {d.split()[2] for d in before}


async def test_files_rebuild_command(
    api: httpx.AsyncClient, pool: asyncpg.Pool, database_url: str
) -> None:
    await make_history(api)
    live = await rows(pool)
    command = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shared.cli",
        "rebuild",
        "catalog.tree",
        env={**os.environ, "FILES_DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(command.communicate(), timeout=120)
    assert command.returncode == 0, err.decode()
    assert "catalog.tree: replayed" in out.decode()
    assert await rows(pool) == live


async def test_twins_from_before_the_unicode_form_rule_stay_and_rebuild(database_url: str) -> None:
    """A catalog from before names were compared in NFC may hold `café` composed and
    decomposed side by side: the schema's migration does not fail on it, keeps both
    (the later one grandfathered, left out of the new index), a rebuild replays the
    same, and a third one of the same key is marked (which `Catalog.write` refuses)."""
    store = EventStore("catalog")
    cause = Cause(actor="legacy", correlation_id="c")
    async with fresh_database(database_url, "nfc") as pool:
        async with pool.acquire() as conn:
            await store.setup(conn)
            await tree.setup(conn)
        top = domain.Folder(uuid.uuid4(), None, "top", 1, ())
        first = uuid.uuid4()
        made = [
            *domain.create_folder(top.id, None, "top", "", {}),
            *domain.create_folder(first, replace(top, path=(top.id,)), "caf\u00e9", "", {}),
        ]
        async with pool.acquire() as conn, conn.transaction():
            envelopes = envelopes_of(made, cause)
            await tree.apply(conn, envelopes)
            await store.append(conn, envelopes)
        # What the catalog of before wrote: no key, no mark, the twin beside the first.
        twin = uuid.uuid4()
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("ALTER TABLE catalog.folders DROP COLUMN grandfathered")
            envelopes = envelopes_of(
                domain.create_folder(twin, replace(top, path=(top.id,)), "cafe\u0301", "", {}),
                cause,
            )
            await conn.execute(
                """INSERT INTO catalog.folders (id, parent_id, name, description, metadata, path,
                       version, created_at, created_by)
                   VALUES ($1, $2, $3, '', '{}', $4, 1, $5, 'legacy')""",
                twin,
                top.id,
                "cafe\u0301",
                [top.id, twin],
                envelopes[0].occurred_at,
            )
            await store.append(conn, envelopes)
        async with pool.acquire() as conn:
            await tree.setup(conn)  # the migration: it must not fail
        marks = "SELECT id, name, grandfathered FROM catalog.folders WHERE parent_id = $1"
        found = {r["id"]: r["grandfathered"] for r in await pool.fetch(marks, top.id)}
        assert found == {first: None, twin: True}
        live = await rows(pool)
        assert await rebuild(pool, store, tree) > 0
        rebuilt = await rows(pool)
        # A rebuild marks with false what the migration left null: the same folders.
        for row in live["catalog.folders"]:
            row["grandfathered"] = bool(row["grandfathered"])
        for row in rebuilt["catalog.folders"]:
            row["grandfathered"] = bool(row["grandfathered"])
        assert rebuilt == live, differences(rebuilt, live)
        # Renamed away, the twin is an ordinary folder; renamed back, it is marked again
        # (which `Catalog.write` refuses).
        for name, marked in (("other", False), ("cafe\u0301", True)):
            async with pool.acquire() as conn, conn.transaction():
                version = await conn.fetchval(
                    "SELECT version FROM catalog.folders WHERE id = $1", twin
                )
                change = Change(
                    ev.folder_stream(twin), version + 1, ev.FolderRenamed(folder_id=twin, name=name)
                )
                envelopes = envelopes_of([change], cause)
                await tree.apply(conn, envelopes)
                await store.append(conn, envelopes)
            assert (
                await pool.fetchval("SELECT grandfathered FROM catalog.folders WHERE id = $1", twin)
                is marked
            )
