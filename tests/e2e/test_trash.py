"""The trash: a delete keeps what it deletes, restorable with its path and its dataset
links; emptying the trash lets the bytes go; rights are checked where the data lives."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from shared.kit import bus
from shared.kit.blobs import BlobStore, content_key, open_blob_store
from shared.kit.settings import Settings
from tests.conftest import eventually
from tests.e2e.support import error, folder, items, member, text, unique, upload


@pytest.fixture
async def store(platform: Any) -> AsyncIterator[BlobStore]:
    blobs = open_blob_store(platform.settings)
    yield blobs
    await blobs.close()


async def trash(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        answer = await api.get("/v1/trash", params=params)
        assert answer.status_code == 200, answer.text
        found += answer.json()["items"]
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            return found


async def dataset_files(api: httpx.AsyncClient, dataset_id: str) -> set[str]:
    answer = await api.get(f"/v1/datasets/{dataset_id}/files", params={"limit": 1000})
    assert answer.status_code == 200, answer.text
    return {f["id"] for f in answer.json()["items"]}


async def test_a_deleted_folder_comes_back_with_its_path_files_and_both_links(
    api: httpx.AsyncClient,
) -> None:
    top = await folder(api, unique("trash-top"))
    synced_folder = await folder(api, "scans", top["id"])
    inner = await folder(api, "day1", synced_folder["id"])
    files = (
        await upload(api, inner["id"], ("a.txt", text("a " + unique("x"))), ("b.txt", text("b")))
    )["files"]
    ids = {f["id"] for f in files}
    synced = (
        await api.post(
            "/v1/datasets", json={"name": unique("synced"), "synced_folder_id": top["id"]}
        )
    ).json()
    manual = (await api.post("/v1/datasets", json={"name": unique("manual")})).json()
    added = await api.post(f"/v1/datasets/{manual['id']}/files", json={"file_ids": sorted(ids)})
    assert added.status_code == 200, added.text

    async def both_linked() -> bool:
        return (
            await dataset_files(api, synced["id"]) >= ids
            and await dataset_files(api, manual["id"]) >= ids
        )

    await eventually(both_linked, what="both datasets hold the files")

    # The dry run says the trash keeps them.
    dry = await api.post("/v1/delete", json={"folder_ids": [synced_folder["id"]], "dry_run": True})
    assert dry.status_code == 200, dry.text
    assert dry.json()["trash_days"] == 30 and dry.json()["files"] == 2

    assert (await api.delete(f"/v1/folders/{synced_folder['id']}")).status_code == 204
    assert (await api.get(f"/v1/folders/{inner['id']}")).status_code == 404

    async def unlinked() -> bool:
        return not (await dataset_files(api, synced["id"]) | await dataset_files(api, manual["id"]))

    await eventually(unlinked, what="the deleted files left both datasets")

    # In the trash: the folder deleted, not what went with it.
    listed = {i["id"]: i for i in await trash(api)}
    assert synced_folder["id"] in listed and inner["id"] not in listed
    assert not ids & set(listed)
    entry = listed[synced_folder["id"]]
    assert entry["type"] == "folder" and entry["files"] == 2
    assert entry["parent_id"] == top["id"] and entry["purge_at"] > entry["deleted_at"]

    restored = await api.post("/v1/trash/restore", json={"folder_ids": [synced_folder["id"]]})
    assert restored.status_code == 200, restored.text
    assert restored.json() == {"restored_folders": 2, "restored_files": 2}
    assert {i["id"] for i in await items(api, inner["id"])} == ids
    assert (await api.get(f"/v1/folders/{inner['id']}")).json()["parent_id"] == synced_folder["id"]
    assert synced_folder["id"] not in {i["id"] for i in await trash(api)}

    async def both_back() -> bool:
        # The counts too: the listing hides trashed files at once, so it may show them
        # again before the datasets have even seen the delete.
        counts = [
            (await api.get(f"/v1/datasets/{d['id']}")).json()["file_count"]
            for d in (synced, manual)
        ]
        return (
            await dataset_files(api, synced["id"]) == ids
            and await dataset_files(api, manual["id"]) == ids
            and counts == [len(ids), len(ids)]
        )

    await eventually(both_back, what="both links came back")

    # The restore is in the audit: the files back in their folder, in batches (one per
    # partition their streams are in).
    audit = await api.get("/v1/audit", params={"type": "catalog.FilesRestored"})
    assert audit.status_code == 200, audit.text
    back = [
        i
        for e in audit.json()["items"]
        if e["data"]["folder_id"] == inner["id"]
        for i in e["data"]["file_ids"]
    ]
    assert sorted(back) == sorted(ids)
    # Each batch is in the partition of its files' own streams (the test platform's topics
    # have Settings' 3), so a consumer meets a file's restore before its next change.
    every = range(Settings.model_fields["topic_partitions"].default)
    for e in audit.json()["items"]:
        [batch] = bus.partitions_of([f"restore-{e['subject_id']}".encode()], every)
        files = bus.partitions_of([f"file-{i}".encode() for i in e["data"]["file_ids"]], every)
        assert set(files) == {batch}
    # A file's own audit shows its deletion and its restore, though one event holds many.
    one = sorted(ids)[0]
    mine = await api.get("/v1/audit", params={"subject_id": one})
    assert mine.status_code == 200, mine.text
    types = [e["type"] for e in mine.json()["items"]]
    assert types.index("catalog.FileDeleted") < types.index("catalog.FilesRestored"), types
    # The folder's history has them back too.
    now = await api.get(
        f"/v1/folders/{inner['id']}/items",
        params={"as_of": (datetime.now(UTC) + timedelta(seconds=1)).isoformat(), "limit": 10},
    )
    assert now.status_code == 200, now.text
    assert {i["id"] for i in now.json()["items"]} == ids

    # Restoring again: it is not in the trash any more.
    error(await api.post("/v1/trash/restore", json={"folder_ids": [synced_folder["id"]]}), 404)


async def test_a_restored_folder_is_back_in_its_place_for_everyone_and_for_moves(
    api: httpx.AsyncClient, as_key: Callable[[str], httpx.AsyncClient]
) -> None:
    top = await folder(api, unique("restored-place"))
    child = await folder(api, "photos", top["id"])
    inner = await folder(api, "day1", child["id"])
    [photo] = (await upload(api, inner["id"], ("p.txt", text("p"))))["files"]
    viewer = await member(api, "viewer")
    invited = await api.post(
        f"/v1/folders/{top['id']}/collaborators",
        json={"emails": [viewer["email"]], "role": "user"},
    )
    assert invited.status_code in (200, 201), invited.text
    assert (await api.delete(f"/v1/folders/{child['id']}")).status_code == 204
    restored = await api.post("/v1/trash/restore", json={"folder_ids": [child["id"]]})
    assert restored.status_code == 200, restored.text

    for made in (child, inner):
        back = (await api.get(f"/v1/folders/{made['id']}")).json()
        assert [p["id"] for p in back["path"]] == [p["id"] for p in made["path"]]
    summary = (await api.get(f"/v1/folders/{top['id']}/summary")).json()
    assert (summary["folders"], summary["files"]) == (2, 1), summary
    # Who has a role above it sees it again, down to its files.
    as_viewer = as_key(viewer["api_key"])
    assert (await as_viewer.get(f"/v1/folders/{child['id']}")).status_code == 200
    assert [i["id"] for i in await items(as_viewer, inner["id"])] == [photo["id"]]
    # And it is below its parent for moves too: the parent cannot go into it.
    into_child = await api.post(
        "/v1/move", json={"folder_ids": [top["id"]], "target_folder_id": child["id"]}
    )
    assert 400 <= into_child.status_code < 500, into_child.text
    assert (await api.get(f"/v1/folders/{top['id']}")).json()["parent_id"] is None


async def test_a_file_restored_alone_brings_back_the_folders_above_it(
    api: httpx.AsyncClient,
) -> None:
    top = await folder(api, unique("trash-path"))
    mid = await folder(api, "mid", top["id"])
    [file] = (await upload(api, mid["id"], ("c.txt", text("c"))))["files"]
    assert (await api.delete(f"/v1/folders/{top['id']}")).status_code == 204
    restored = await api.post("/v1/trash/restore", json={"file_ids": [file["id"]]})
    assert restored.status_code == 200, restored.text
    assert restored.json() == {"restored_folders": 2, "restored_files": 1}
    answer = await api.get(f"/v1/files/{file['id']}")
    assert answer.status_code == 200 and answer.json()["folder_id"] == mid["id"]


async def test_emptying_the_trash_reclaims_the_blobs(
    api: httpx.AsyncClient, store: BlobStore
) -> None:
    top = await folder(api, unique("trash-empty"))
    data = text(f"only copy {os.urandom(8).hex()}")
    [file] = (await upload(api, top["id"], ("only.txt", data)))["files"]
    key = content_key(hashlib.sha256(data).hexdigest())
    assert (await api.delete(f"/v1/files/{file['id']}")).status_code == 204

    # In the trash, the bytes stay (the test platform sweeps every 0.2 s, no grace): a
    # sentinel deleted after it and purged is reclaimed, and this one is still there.
    sentinel = text(f"sentinel {os.urandom(8).hex()}")
    [other] = (await upload(api, top["id"], ("s.txt", sentinel)))["files"]
    assert (await api.delete(f"/v1/files/{other['id']}")).status_code == 204
    emptied = await api.delete("/v1/trash")
    assert emptied.status_code == 200, emptied.text
    assert emptied.json()["purged_files"] >= 2

    async def gone() -> bool:
        return not await store.exists(key)

    await eventually(gone, within=15, what="the blob was reclaimed")
    error(await api.post("/v1/trash/restore", json={"file_ids": [file["id"]]}), 404)


async def test_the_trash_checks_rights_where_things_were(
    api: httpx.AsyncClient, as_key: Callable[[str], httpx.AsyncClient]
) -> None:
    top = await folder(api, unique("trash-rights"))
    [file] = (await upload(api, top["id"], ("d.txt", text("d"))))["files"]
    viewer = await member(api, "viewer")
    stranger = await member(api, "stranger")
    invited = await api.post(
        f"/v1/folders/{top['id']}/collaborators",
        json={"emails": [viewer["email"]], "role": "user"},
    )
    assert invited.status_code in (200, 201), invited.text
    assert (await api.delete(f"/v1/files/{file['id']}")).status_code == 204

    as_viewer = as_key(viewer["api_key"])
    as_stranger = as_key(stranger["api_key"])

    async def viewer_sees_it() -> bool:
        return file["id"] in {i["id"] for i in await trash(as_viewer)}

    await eventually(viewer_sees_it, what="the viewer sees the trashed file")
    assert file["id"] not in {i["id"] for i in await trash(as_stranger)}
    # A viewer may see it but not restore it; a stranger does not know it exists.
    error(await as_viewer.post("/v1/trash/restore", json={"file_ids": [file["id"]]}), 403)
    error(await as_stranger.post("/v1/trash/restore", json={"file_ids": [file["id"]]}), 404)
    # Neither empties it: the viewer's empty leaves what they cannot restore.
    assert (await as_viewer.delete("/v1/trash")).json()["purged_files"] == 0
    assert (await as_stranger.delete("/v1/trash")).json()["purged_files"] == 0
    restored = await api.post("/v1/trash/restore", json={"file_ids": [file["id"]]})
    assert restored.status_code == 200, restored.text
    error(await api.get("/v1/trash", params={"cursor": "nope"}), 422)


async def test_a_restored_file_is_found_by_its_metadata_and_name_again(
    api: httpx.AsyncClient,
) -> None:
    """Metadata filters go through the catalog's typed side table and its metadata
    index, names through its trigram index: files back from the trash are in them
    again. Two files: the test stack takes a restore of two the way it takes a large
    one, the indexes' new rows merged after the answer."""
    top = await folder(api, unique("trash-meta"))
    inner = await folder(api, "inner", top["id"])
    name = unique("tiger")
    [file, other] = (
        await upload(api, inner["id"], (f"{name}.txt", text("m")), ("other.txt", text("o")))
    )["files"]
    key, value = unique("site").replace("-", "_"), unique("lyon")
    changed = await api.patch(f"/v1/files/{file['id']}", json={"metadata": {key: value}})
    assert changed.status_code == 200, changed.text

    async def found(**params: str) -> list[str]:
        answer = await api.get("/v1/search", params=params)
        assert answer.status_code == 200, answer.text
        return [i["id"] for i in answer.json()["items"]]

    by_metadata = {f"metadata.{key}": value}
    by_name = {"q": name[2:-2]}
    assert await found(**by_metadata) == [file["id"]]
    assert await found(**by_name) == [file["id"]]
    assert (await api.delete(f"/v1/folders/{inner['id']}")).status_code == 204
    assert await found(**by_metadata) == []
    assert await found(**by_name) == []
    restored = await api.post("/v1/trash/restore", json={"folder_ids": [inner["id"]]})
    assert restored.status_code == 200, restored.text
    assert restored.json()["restored_files"] == 2
    assert await found(**by_metadata) == [file["id"]]
    assert await found(**by_name) == [file["id"]]
    assert {i["id"] for i in await items(api, inner["id"])} == {file["id"], other["id"]}
    assert [i["id"] for i in await items(api, inner["id"], **{f"metadata.{key}": value})] == [
        file["id"]
    ]


async def test_the_trash_decides_rights_where_things_are_after_a_move_above_them(
    api: httpx.AsyncClient, as_key: Callable[[str], httpx.AsyncClient]
) -> None:
    """Alice edits A; F and G in A/B and the folder A/B/C go to the trash; B moves into
    the private P. The trash decides where they are now: P's admin's, no longer Alice's."""
    a, p = await folder(api, unique("moved-from")), await folder(api, unique("private"))
    b = await folder(api, "b", a["id"])
    c = await folder(api, "c", b["id"])
    f, g = (await upload(api, b["id"], ("f.txt", text("f")), ("g.txt", text("g"))))["files"]
    alice, admin = await member(api, "alice"), await member(api, "p-admin")
    for person, place, role in ((alice, a, "editor"), (admin, p, "admin")):
        invited = await api.post(
            f"/v1/folders/{place['id']}/collaborators",
            json={"emails": [person["email"]], "role": role},
        )
        assert invited.status_code in (200, 201), invited.text
    for gone in (f"/v1/files/{f['id']}", f"/v1/files/{g['id']}", f"/v1/folders/{c['id']}"):
        assert (await api.delete(gone)).status_code == 204
    moved = await api.post("/v1/move", json={"folder_ids": [b["id"]], "target_folder_id": p["id"]})
    assert moved.status_code == 200, moved.text
    as_alice, as_admin = as_key(alice["api_key"]), as_key(admin["api_key"])

    async def moved_for_alice() -> bool:
        return (await as_alice.get(f"/v1/folders/{b['id']}")).status_code == 404

    await eventually(moved_for_alice, what="B is out of Alice's reach")
    trashed = {f["id"], g["id"], c["id"]}
    assert not trashed & {i["id"] for i in await trash(as_alice)}
    error(await as_alice.post("/v1/trash/restore", json={"file_ids": [f["id"]]}), 404)
    error(await as_alice.post("/v1/trash/restore", json={"folder_ids": [c["id"]]}), 404)
    purged = await as_alice.delete("/v1/trash", params={"file_ids": g["id"], "folder_ids": c["id"]})
    assert purged.json() == {"purged_folders": 0, "purged_files": 0}, purged.text
    assert (await as_alice.delete("/v1/trash")).json() == {"purged_folders": 0, "purged_files": 0}

    seen = {i["id"]: i for i in await trash(as_admin)}
    assert trashed <= set(seen) and seen[f["id"]]["my_role"] == "admin", seen
    restored = await as_admin.post("/v1/trash/restore", json={"file_ids": [f["id"]]})
    assert restored.status_code == 200, restored.text
    purged = await as_admin.delete("/v1/trash", params={"file_ids": g["id"], "folder_ids": c["id"]})
    assert purged.json() == {"purged_folders": 1, "purged_files": 1}, purged.text
    back = (await as_admin.get(f"/v1/files/{f['id']}")).json()
    assert back["folder_id"] == b["id"], back


async def test_the_audit_of_a_restore_names_only_the_files_the_caller_sees(
    api: httpx.AsyncClient, as_key: Callable[[str], httpx.AsyncClient]
) -> None:
    top, private = await folder(api, unique("restore-audit")), await folder(api, unique("apart"))
    files = (await upload(api, top["id"], *((f"{n}.txt", text(str(n))) for n in range(16))))[
        "files"
    ]
    ids = [f["id"] for f in files]
    assert (await api.post("/v1/delete", json={"file_ids": ids})).status_code == 200
    restored = await api.post("/v1/trash/restore", json={"file_ids": ids})
    assert restored.status_code == 200, restored.text
    # A batch of two or more (16 files in fewer partitions): one stays, one moves apart.
    batches = [b for i in ids for b in await restored_batches(api, i)]
    stays, apart = next(b for b in batches if len(b) > 1)[:2]
    moved = await api.post(
        "/v1/move", json={"file_ids": [apart], "target_folder_id": private["id"]}
    )
    assert moved.status_code == 200, moved.text
    viewer = await member(api, "restore-viewer")
    invited = await api.post(
        f"/v1/folders/{top['id']}/collaborators", json={"emails": [viewer["email"]], "role": "user"}
    )
    assert invited.status_code in (200, 201), invited.text
    as_viewer = as_key(viewer["api_key"])

    async def sees_one_not_the_other() -> bool:
        one = await as_viewer.get(f"/v1/files/{stays}")
        return (
            one.status_code == 200
            and (await as_viewer.get(f"/v1/files/{apart}")).status_code == 404
        )

    await eventually(sees_one_not_the_other, what="the viewer sees the file that stayed alone")
    [batch] = [b for b in await restored_batches(as_viewer, stays) if stays in b]
    assert apart not in batch, batch


async def restored_batches(api: httpx.AsyncClient, file_id: str) -> list[list[str]]:
    audit = await api.get("/v1/audit", params={"subject_id": file_id, "limit": 100})
    assert audit.status_code == 200, audit.text
    return [
        e["data"]["file_ids"] for e in audit.json()["items"] if e["type"] == "catalog.FilesRestored"
    ]
