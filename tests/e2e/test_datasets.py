"""Datasets through the gateway: CRUD, membership, "linked to", sync, cascade, dry runs, races."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from tests.conftest import eventually
from tests.e2e.support import CONSISTENCY, error, folder, pages, png, text, unique, upload

# The fresh trees made, and how many at once (each still one request after another).
TREES = 5
TREES_AT_ONCE = 5


async def dataset(api: httpx.AsyncClient, name: str | None = None, **fields: Any) -> dict[str, Any]:
    answer = await api.post("/v1/datasets", json={"name": name or unique("ds"), **fields})
    assert answer.status_code == 201, answer.text
    assert answer.headers.get(CONSISTENCY), answer.headers
    return dict(answer.json())


async def get(api: httpx.AsyncClient, dataset_id: str, token: str | None = None) -> dict[str, Any]:
    headers = {CONSISTENCY: token} if token else {}
    answer = await api.get(f"/v1/datasets/{dataset_id}", headers=headers)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def members(
    api: httpx.AsyncClient, dataset_id: str, token: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Every file of a dataset, page by page (the first read waits for `token`)."""
    found: list[dict[str, Any]] = []
    cursor = None
    headers = {CONSISTENCY: token} if token else {}
    for _ in range(10_000):
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        answer = await api.get(f"/v1/datasets/{dataset_id}/files", params=params, headers=headers)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert set(page) == {"items", "next_cursor"}, page
        assert len(page["items"]) <= limit
        found += page["items"]
        cursor = page["next_cursor"]
        headers = {}
        if cursor is None:
            break
    ids = [f["id"] for f in found]
    assert len(ids) == len(set(ids)), "a file came twice across pages"
    return found


async def member_ids(api: httpx.AsyncClient, dataset_id: str, token: str | None = None) -> set[str]:
    return {f["id"] for f in await members(api, dataset_id, token)}


async def add(api: httpx.AsyncClient, dataset_id: str, file_ids: list[str]) -> httpx.Response:
    return await api.post(f"/v1/datasets/{dataset_id}/files", json={"file_ids": file_ids})


async def added(api: httpx.AsyncClient, dataset_id: str, file_ids: list[str]) -> int:
    answer = await add(api, dataset_id, file_ids)
    assert answer.status_code == 200, answer.text
    assert answer.headers.get(CONSISTENCY)
    return int(answer.json()["added"])


async def linked(api: httpx.AsyncClient, file_id: str, token: str | None = None) -> list[str]:
    headers = {CONSISTENCY: token} if token else {}
    answer = await api.get(f"/v1/files/{file_id}/datasets", headers=headers)
    assert answer.status_code == 200, answer.text
    return [d["id"] for d in answer.json()["items"]]


async def files(api: httpx.AsyncClient, folder_id: str, n: int, prefix: str = "f") -> list[str]:
    uploaded = await upload(api, folder_id, *((f"{prefix}{i}.txt", text(f"{i}")) for i in range(n)))
    return [f["id"] for f in uploaded["files"]]


async def move(api: httpx.AsyncClient, target: str, **ids: list[str]) -> str:
    answer = await api.post("/v1/move", json={**ids, "target_folder_id": target})
    assert answer.status_code == 200, answer.text
    return answer.headers[CONSISTENCY]


async def delete(api: httpx.AsyncClient, **ids: list[str]) -> str:
    answer = await api.post("/v1/delete", json=ids)
    assert answer.status_code == 200, answer.text
    return answer.headers[CONSISTENCY]


# -- the dataset itself ------------------------------------------------------------------


async def test_create_get_rename_describe_delete(api: httpx.AsyncClient) -> None:
    name = unique("ds")
    created = await dataset(api, name, description="cats")
    assert created["name"] == name
    assert created["description"] == "cats"
    assert created["synced_folder_id"] is None
    assert created["file_count"] == 0
    assert created["created_at"]
    assert await get(api, created["id"]) == created

    renamed = await api.patch(f"/v1/datasets/{created['id']}", json={"name": name + "-2"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.headers.get(CONSISTENCY)
    assert (renamed.json()["name"], renamed.json()["description"]) == (name + "-2", "cats")
    described = await api.patch(f"/v1/datasets/{created['id']}", json={"description": "dogs"})
    assert described.status_code == 200, described.text
    assert (described.json()["name"], described.json()["description"]) == (name + "-2", "dogs")
    unchanged = await api.patch(f"/v1/datasets/{created['id']}", json={})
    assert unchanged.status_code == 200, unchanged.text
    assert await get(api, created["id"]) == described.json()

    gone = await api.delete(f"/v1/datasets/{created['id']}")
    assert gone.status_code == 204, gone.text
    assert gone.headers.get(CONSISTENCY)
    error(await api.get(f"/v1/datasets/{created['id']}"), 404)
    error(await api.delete(f"/v1/datasets/{created['id']}"), 404)


@pytest.mark.parametrize("name", ["", "a/b", "bad\x01name", "x" * 301])
async def test_bad_names_are_refused(api: httpx.AsyncClient, name: str) -> None:
    error(await api.post("/v1/datasets", json={"name": name}), 422)
    created = await dataset(api)
    error(await api.patch(f"/v1/datasets/{created['id']}", json={"name": name}), 422)
    assert (await get(api, created["id"]))["name"] == created["name"]


async def test_malformed_requests_are_422(api: httpx.AsyncClient) -> None:
    error(await api.post("/v1/datasets", json={}), 422)
    error(await api.post("/v1/datasets", json={"name": "x", "synced_folder_id": "nope"}), 422)
    # An id in the path that is not a UUID is as unknown as any (and goes nowhere).
    error(await api.get("/v1/datasets/not-a-uuid"), 404, "not_found")
    error(await api.get("/v1/datasets", params={"cursor": "garbage!"}), 422)
    error(await api.get("/v1/datasets", params={"limit": 0}), 422)
    created = await dataset(api)
    error(await add(api, created["id"], ["not-a-uuid"]), 422)
    error(await api.post(f"/v1/datasets/{created['id']}/files", json={}), 422)
    error(await api.get(f"/v1/datasets/{created['id']}/files", params={"cursor": "x"}), 422)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"name": "nul\\u0000name"}', 422, None),
        (b'{"name": "ok", "description": "nul \\u0000"}', 422, None),
        # Half a surrogate pair is no Unicode text at all: the JSON is malformed.
        (b'{"name": "half \\ud800 a pair"}', 400, "malformed_json"),
        (b'{"name": "ok", "description": "\\udfff"}', 400, "malformed_json"),
    ],
)
async def test_text_that_cannot_be_stored_is_refused(
    api: httpx.AsyncClient, body: bytes, status: int, code: str | None
) -> None:
    json_body = {"content": body, "headers": {"Content-Type": "application/json"}}
    error(await api.post("/v1/datasets", **json_body), status, code)
    created = await dataset(api)
    error(await api.patch(f"/v1/datasets/{created['id']}", **json_body), status, code)
    assert await get(api, created["id"]) == created


async def test_unknown_dataset_is_404_everywhere(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("ds-unknown"))
    [file_id] = await files(api, top["id"], 1)
    missing = str(uuid.uuid4())
    error(await api.get(f"/v1/datasets/{missing}"), 404)
    error(await api.patch(f"/v1/datasets/{missing}", json={"name": "x"}), 404)
    error(await api.delete(f"/v1/datasets/{missing}"), 404)
    error(await add(api, missing, [file_id]), 404)
    error(await api.get(f"/v1/datasets/{missing}/files"), 404)
    error(await api.delete(f"/v1/datasets/{missing}/files/{file_id}"), 404)
    assert await linked(api, file_id) == []
    error(await api.post("/v1/datasets", json={"name": "x", "synced_folder_id": missing}), 404)


async def test_list_datasets_with_cursor(api: httpx.AsyncClient) -> None:
    mine = [(await dataset(api))["id"] for _ in range(5)]
    listed = await pages(api, "/v1/datasets", limit=2)
    ids = [d["id"] for d in listed]
    assert set(mine) <= set(ids)
    assert ids == sorted(ids)


# -- membership --------------------------------------------------------------------------


async def test_add_many_files_and_list_them_in_pages(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("ds-many"))
    ids = await files(api, top["id"], 25)
    created = await dataset(api)
    assert await added(api, created["id"], ids) == 25
    assert await added(api, created["id"], ids[:3]) == 0  # again: not an error
    assert await added(api, created["id"], [ids[0], ids[0]]) == 0
    listed = await members(api, created["id"], limit=4)
    assert sorted(f["id"] for f in listed) == sorted(ids)
    assert {f["name"] for f in listed} == {f"f{i}.txt" for i in range(25)}
    assert all(f["folder_id"] == top["id"] for f in listed)
    assert (await get(api, created["id"]))["file_count"] == 25


async def test_unknown_or_deleted_files_are_refused_and_nothing_is_added(
    api: httpx.AsyncClient,
) -> None:
    top = await folder(api, unique("ds-unknown-files"))
    good = await files(api, top["id"], 3)
    doomed = await files(api, top["id"], 1, prefix="doomed")
    await delete(api, file_ids=doomed)
    created = await dataset(api)
    unknown = str(uuid.uuid4())

    refused = error(await add(api, created["id"], [*good, unknown]), 404)
    assert unknown in refused["message"]
    assert refused["details"]["missing_file_ids"] == [unknown]
    refused = error(await add(api, created["id"], [good[0], doomed[0]]), 404)
    assert doomed[0] in refused["message"]
    assert (await get(api, created["id"]))["file_count"] == 0
    assert await member_ids(api, created["id"]) == set()
    assert await linked(api, good[0]) == []


async def test_remove_a_file(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("ds-remove"))
    ids = await files(api, top["id"], 3)
    created = await dataset(api)
    await added(api, created["id"], ids)
    removed = await api.delete(f"/v1/datasets/{created['id']}/files/{ids[1]}")
    assert removed.status_code == 204, removed.text
    assert removed.headers.get(CONSISTENCY)
    assert await member_ids(api, created["id"]) == {ids[0], ids[2]}
    assert (await get(api, created["id"]))["file_count"] == 2
    assert await linked(api, ids[1]) == []
    error(await api.delete(f"/v1/datasets/{created['id']}/files/{ids[1]}"), 404)
    error(await api.delete(f"/v1/datasets/{created['id']}/files/{uuid.uuid4()}"), 404)
    assert (await api.get(f"/v1/files/{ids[1]}")).status_code == 200  # the file itself stays


async def test_remove_files_at_once_all_or_none(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("ds-remove-many"))
    ids = await files(api, top["id"], 5)
    created = await dataset(api)
    await added(api, created["id"], ids)
    path = f"/v1/datasets/{created['id']}/files/remove"
    # One not in the dataset: nothing is removed, and it is named.
    stranger = str(uuid.uuid4())
    refused = error(await api.post(path, json={"file_ids": [ids[0], stranger]}), 404)
    assert refused["code"] == "files_not_in_dataset" and stranger in refused["message"]
    assert refused["details"] == {"missing_file_ids": [stranger], "missing": 1}
    assert await member_ids(api, created["id"]) == set(ids)
    # Three at once (one named twice): one answer, with its token.
    removed = await api.post(path, json={"file_ids": [ids[1], ids[2], ids[3], ids[1]]})
    assert removed.status_code == 200, removed.text
    assert removed.json() == {"removed": 3} and removed.headers.get(CONSISTENCY)
    token = removed.headers[CONSISTENCY]
    assert await member_ids(api, created["id"], token) == {ids[0], ids[4]}
    assert (await get(api, created["id"]))["file_count"] == 2
    assert await linked(api, ids[2], token) == []
    error(await api.post(path, json={"file_ids": [ids[1]]}), 404, "files_not_in_dataset")
    assert (await api.post(path, json={"file_ids": []})).json() == {"removed": 0}
    error(await api.post(path, json={"file_ids": ["not-an-id"]}), 422)


async def test_a_file_in_several_datasets_is_linked_to_all(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("ds-several"))
    [file_id] = await files(api, top["id"], 1)
    first, second = await dataset(api, unique("a")), await dataset(api, unique("b"))
    await dataset(api, unique("c"))
    for d in (first, second):
        assert await added(api, d["id"], [file_id]) == 1
    assert sorted(await linked(api, file_id)) == sorted([first["id"], second["id"]])
    shown = (await api.get(f"/v1/files/{file_id}")).json()["datasets"]
    assert sorted((d["id"], d["name"]) for d in shown) == sorted(
        (d["id"], d["name"]) for d in (first, second)
    )
    renamed = await api.patch(f"/v1/datasets/{first['id']}", json={"name": unique("renamed")})
    shown = (await api.get(f"/v1/files/{file_id}")).json()["datasets"]
    assert renamed.json()["name"] in {d["name"] for d in shown}
    await api.delete(f"/v1/datasets/{second['id']}")
    assert await linked(api, file_id) == [first["id"]]


async def test_files_can_be_added_right_after_their_upload(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("ds-fresh"))
    created = await dataset(api)
    for round_ in range(5):
        uploaded = await upload(api, top["id"], (f"p{round_}.png", png(4, 4 + round_)))
        file_id = uploaded["files"][0]["id"]
        assert await added(api, created["id"], [file_id]) == 1
        assert await linked(api, file_id) == [created["id"]]
    assert (await get(api, created["id"]))["file_count"] == 5


# -- sync --------------------------------------------------------------------------------


async def test_synced_dataset_starts_with_the_folder_and_its_subfolders(
    api: httpx.AsyncClient,
) -> None:
    top = await folder(api, unique("ds-sync"))
    sub = await folder(api, "sub", top["id"])
    deep = await folder(api, "deep", sub["id"])
    outside = await folder(api, unique("ds-sync-outside"))
    ids = (
        await files(api, top["id"], 2)
        + await files(api, sub["id"], 2)
        + await files(api, deep["id"], 1)
    )
    await files(api, outside["id"], 2)
    created = await dataset(api, synced_folder_id=top["id"])
    assert created["synced_folder_id"] == top["id"]
    assert created["synced"] is True
    assert created["file_count"] == 5
    assert await member_ids(api, created["id"]) == set(ids)


async def test_sync_follows_uploads_and_moves(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("ds-follow"))
    sub = await folder(api, "sub", top["id"])
    outside = await folder(api, unique("ds-follow-out"))
    loose = await folder(api, "loose", outside["id"])
    loose_files = await files(api, loose["id"], 2, prefix="loose")
    stray = await files(api, outside["id"], 1, prefix="stray")
    first = await dataset(api, synced_folder_id=top["id"])
    second = await dataset(api, synced_folder_id=top["id"])

    # Uploads into the folder and into a subfolder join both datasets.
    answer = await api.post(
        f"/v1/folders/{top['id']}/files", files=[("file", ("top.txt", b"t", "text/plain"))]
    )
    top_file = answer.json()["files"][0]["id"]
    answer = await api.post(
        f"/v1/folders/{sub['id']}/files", files=[("file", ("sub.txt", b"s", "text/plain"))]
    )
    sub_file = answer.json()["files"][0]["id"]
    token = answer.headers[CONSISTENCY]
    for d in (first, second):
        assert await member_ids(api, d["id"], token) == {top_file, sub_file}

    # A file moved in joins; moved out leaves.
    token = await move(api, sub["id"], file_ids=stray)
    assert await member_ids(api, first["id"], token) == {top_file, sub_file, *stray}
    token = await move(api, outside["id"], file_ids=[top_file])
    assert await member_ids(api, first["id"], token) == {sub_file, *stray}
    assert await member_ids(api, second["id"], token) == {sub_file, *stray}
    assert sorted(await linked(api, sub_file)) == sorted([first["id"], second["id"]])

    # A whole subfolder moved in brings its files; moved out takes them away.
    token = await move(api, sub["id"], folder_ids=[loose["id"]])
    assert await member_ids(api, first["id"], token) == {sub_file, *stray, *loose_files}
    assert (await get(api, first["id"]))["file_count"] == 4
    token = await move(api, outside["id"], folder_ids=[sub["id"]])
    assert await member_ids(api, first["id"], token) == set()
    assert await member_ids(api, second["id"], token) == set()
    assert (await get(api, second["id"]))["file_count"] == 0
    token = await move(api, top["id"], folder_ids=[sub["id"]])
    assert await member_ids(api, second["id"], token) == {sub_file, *stray, *loose_files}

    # A move inside the synced folder changes nothing.
    token = await move(api, top["id"], file_ids=[sub_file])
    assert await member_ids(api, second["id"], token) == {sub_file, *stray, *loose_files}

    # A deleted dataset stops following.
    gone = await api.delete(f"/v1/datasets/{first['id']}")
    assert gone.status_code == 204
    error(await api.get(f"/v1/datasets/{first['id']}"), 404)
    answer = await api.post(
        f"/v1/folders/{top['id']}/files", files=[("file", ("late.txt", b"l", "text/plain"))]
    )
    late = answer.json()["files"][0]["id"]
    assert await linked(api, late, answer.headers[CONSISTENCY]) == [second["id"]]
    error(await api.get(f"/v1/datasets/{first['id']}/files"), 404)


async def test_without_the_header_sync_shows_eventually(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("ds-eventually"))
    created = await dataset(api, synced_folder_id=top["id"])
    ids = await files(api, top["id"], 3)

    async def joined() -> bool:
        return (await get(api, created["id"]))["file_count"] == 3

    await eventually(joined, what="the uploads join the synced dataset")
    assert await member_ids(api, created["id"]) == set(ids)


# -- cascade -----------------------------------------------------------------------------


async def test_deleting_files_and_folders_unlinks_them_everywhere(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("ds-cascade"))
    sub = await folder(api, "sub", top["id"])
    deep = await folder(api, "deep", sub["id"])
    kept = await files(api, top["id"], 2, prefix="kept")
    one = await files(api, top["id"], 1, prefix="one")
    below = await files(api, sub["id"], 2) + await files(api, deep["id"], 2)
    a, b = await dataset(api), await dataset(api)
    for d in (a, b):
        await added(api, d["id"], kept + one + below)

    token = await delete(api, file_ids=one)
    for d in (a, b):
        assert await member_ids(api, d["id"], token) == {*kept, *below}
    # A deleted file is gone, "linked to" included.
    error(await api.get(f"/v1/files/{one[0]}/datasets"), 404, "not_found")

    token = await delete(api, folder_ids=[sub["id"]])
    for d in (a, b):
        assert await member_ids(api, d["id"], token) == set(kept)
        assert (await get(api, d["id"]))["file_count"] == 2
    for file_id in below:
        error(await api.get(f"/v1/files/{file_id}"), 404)
        error(await api.get(f"/v1/files/{file_id}/datasets"), 404)


async def test_a_dataset_whose_synced_folder_is_deleted_keeps_existing(
    api: httpx.AsyncClient,
) -> None:
    top = await folder(api, unique("ds-unsync"))
    sub = await folder(api, "sub", top["id"])
    other = await folder(api, unique("ds-unsync-other"))
    inside = await files(api, top["id"], 2) + await files(api, sub["id"], 2)
    elsewhere = await files(api, other["id"], 2)
    synced = await dataset(api, synced_folder_id=top["id"])
    on_sub = await dataset(api, synced_folder_id=sub["id"])
    assert await added(api, synced["id"], elsewhere) == 2

    token = await delete(api, folder_ids=[top["id"]])
    after = await get(api, synced["id"], token)
    assert after["synced"] is False
    assert after["synced_folder_id"] is None
    assert after["unsynced_from_folder_id"] == top["id"]
    assert after["file_count"] == 2
    assert await member_ids(api, synced["id"]) == set(elsewhere)
    nested = await get(api, on_sub["id"])
    assert (nested["synced"], nested["unsynced_from_folder_id"]) == (False, sub["id"])
    assert nested["file_count"] == 0
    assert await member_ids(api, on_sub["id"]) == set()
    for file_id in inside:
        error(await api.get(f"/v1/files/{file_id}"), 404)

    # No longer synced: a new folder of the same kind feeds nothing, manual adds still work.
    fresh = await files(api, other["id"], 1, prefix="fresh")
    assert await added(api, synced["id"], fresh) == 1
    renamed = await api.patch(f"/v1/datasets/{synced['id']}", json={"name": unique("kept")})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["unsynced_from_folder_id"] == top["id"]


# -- dry runs ----------------------------------------------------------------------------


async def test_dry_runs_answer_links_removed_and_change_nothing(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("ds-dry"))
    sub = await folder(api, "sub", top["id"])
    target = await folder(api, unique("ds-dry-target"))
    at_top = await files(api, top["id"], 2)
    in_sub = await files(api, sub["id"], 3)
    synced = await dataset(api, unique("synced"), synced_folder_id=top["id"])
    manual = await dataset(api, unique("manual"))
    await added(api, manual["id"], [at_top[0], *in_sub[:2]])
    untouched = await dataset(api, unique("untouched"))
    [outsider] = await files(api, target["id"], 1)
    await added(api, untouched["id"], [outsider])

    def by_id(answer: httpx.Response) -> dict[str, dict[str, Any]]:
        assert answer.status_code == 200, answer.text
        return {d["id"]: d for d in answer.json()["datasets"]}

    dry = await api.post(
        "/v1/delete", json={"file_ids": [at_top[0]], "folder_ids": [sub["id"]], "dry_run": True}
    )
    assert (dry.json()["files"], dry.json()["folders"]) == (4, 1)
    impact = by_id(dry)
    assert impact[synced["id"]] == {"id": synced["id"], "name": synced["name"], "links_removed": 4}
    assert impact[manual["id"]]["links_removed"] == 3
    assert untouched["id"] not in impact

    dry = await api.post(
        "/v1/move",
        json={
            "file_ids": [at_top[0]],
            "folder_ids": [sub["id"]],
            "target_folder_id": target["id"],
            "dry_run": True,
        },
    )
    assert (dry.json()["files"], dry.json()["folders"]) == (4, 1)
    impact = by_id(dry)
    # Only the sync loses them: manual links stay wherever the file goes.
    assert impact == {
        synced["id"]: {"id": synced["id"], "name": synced["name"], "links_removed": 4}
    }

    # Within the synced folder nothing is lost.
    dry = await api.post(
        "/v1/move",
        json={"file_ids": [at_top[1]], "target_folder_id": sub["id"], "dry_run": True},
    )
    assert by_id(dry) == {}

    for d, count in ((synced, 5), (manual, 3), (untouched, 1)):
        assert (await get(api, d["id"]))["file_count"] == count
    assert await member_ids(api, synced["id"]) == {*at_top, *in_sub}
    for file_id in at_top + in_sub:
        assert (await api.get(f"/v1/files/{file_id}")).status_code == 200


# -- races -------------------------------------------------------------------------------


async def test_upload_then_immediate_moves_end_in_the_right_membership(
    api: httpx.AsyncClient,
) -> None:
    synced_folder = await folder(api, unique("ds-race-synced"))
    outside = await folder(api, unique("ds-race-outside"))
    created = await dataset(api, synced_folder_id=synced_folder["id"])
    expected: set[str] = set()
    for round_ in range(8):
        # Uploaded outside, moved in: a member.
        [came] = await files(api, outside["id"], 1, prefix=f"in{round_}-")
        await move(api, synced_folder["id"], file_ids=[came])
        expected.add(came)
        # Uploaded inside, moved out at once: not a member.
        [left] = await files(api, synced_folder["id"], 1, prefix=f"out{round_}-")
        await move(api, outside["id"], file_ids=[left])
        # In and out again: not a member.
        [both] = await files(api, outside["id"], 1, prefix=f"both{round_}-")
        await move(api, synced_folder["id"], file_ids=[both])
        token = await move(api, outside["id"], file_ids=[both])
        assert await member_ids(api, created["id"], token) == expected
        assert (await get(api, created["id"]))["file_count"] == len(expected)
        assert await linked(api, left) == []
        assert await linked(api, came) == [created["id"]]


async def test_folder_deleted_while_its_files_are_added_leaves_no_dangling_member(
    api: httpx.AsyncClient,
) -> None:
    created = await dataset(api)
    keeper = await folder(api, unique("ds-race-keep"))
    kept = await files(api, keeper["id"], 2)
    await added(api, created["id"], kept)
    for round_ in range(6):
        doomed = await folder(api, unique(f"ds-race-doomed{round_}"))
        sub = await folder(api, "sub", doomed["id"])
        ids = await files(api, doomed["id"], 3) + await files(api, sub["id"], 3)
        adding, deleting = await asyncio.gather(
            add(api, created["id"], ids),
            api.post("/v1/delete", json={"folder_ids": [doomed["id"]]}),
        )
        assert deleting.status_code == 200, deleting.text
        if adding.status_code == 409:  # the deletion's reaction and the add crossed
            error(adding, 409, "concurrent_change")
        elif adding.status_code != 200:
            error(adding, 404, "files_not_found")
        token = deleting.headers[CONSISTENCY]
        listed = await member_ids(api, created["id"], token)
        assert listed == set(kept), f"round {round_}: added {adding.status_code}"
        for file_id in listed:
            assert (await api.get(f"/v1/files/{file_id}")).status_code == 200
        assert (await get(api, created["id"]))["file_count"] == len(listed)
        for file_id in ids:
            error(await api.get(f"/v1/files/{file_id}/datasets"), 404)


async def test_a_synced_dataset_created_during_uploads_and_moves_gets_them_all(
    api: httpx.AsyncClient,
) -> None:
    elsewhere = await folder(api, unique("ds-race-create-src"))
    for round_ in range(10):
        top = await folder(api, unique(f"ds-race-create{round_}"))
        sub = await folder(api, "sub", elsewhere["id"])
        ready = await files(api, elsewhere["id"], 2, prefix=f"r{round_}-")
        carried = await files(api, sub["id"], 2, prefix=f"c{round_}-")
        uploading, moving, creating = await asyncio.gather(
            api.post(
                f"/v1/folders/{top['id']}/files",
                files=[("file", (f"{n}.txt", text(str(n)), "text/plain")) for n in range(3)],
            ),
            api.post(
                "/v1/move",
                json={
                    "file_ids": ready,
                    "folder_ids": [sub["id"]],
                    "target_folder_id": top["id"],
                },
            ),
            api.post("/v1/datasets", json={"name": unique("ds"), "synced_folder_id": top["id"]}),
        )
        assert uploading.status_code == 201, uploading.text
        assert moving.status_code == 200, moving.text
        assert creating.status_code == 201, creating.text
        uploaded = {f["id"] for f in uploading.json()["files"]}
        # Both writes' tokens in one header: the read waits for both.
        token = f"{uploading.headers[CONSISTENCY]},{moving.headers[CONSISTENCY]}"
        listed = await member_ids(api, creating.json()["id"], token)
        assert listed == {*uploaded, *ready, *carried}, f"round {round_}"
        assert (await get(api, creating.json()["id"]))["file_count"] == 7


async def test_a_tree_made_a_moment_ago_is_synced_to_its_depth(api: httpx.AsyncClient) -> None:
    # A tree made one request after another and a dataset following its top at once:
    # the file deep in it, and one moved in later, are members as soon as asked. (Its
    # folders travel on several partitions, but this seldom sees a child reach datasets
    # before its parent: test_datasets_reactions.py feeds them deepest first.) The trees
    # at once: a round spends most of its time waiting on the reactions, not working.
    async def a_tree(round_: int) -> None:
        top = await folder(api, unique(f"ds-fresh-tree{round_}"))
        a = await folder(api, "a", top["id"])
        b = await folder(api, "b", a["id"])
        c = await folder(api, "c", b["id"])
        uploaded = await api.post(
            f"/v1/folders/{c['id']}/files", files=[("file", ("c.txt", b"c", "text/plain"))]
        )
        [file_id] = [f["id"] for f in uploaded.json()["files"]]
        early = await dataset(api, synced_folder_id=top["id"])
        assert await member_ids(api, early["id"], uploaded.headers[CONSISTENCY]) == {file_id}
        late = await folder(api, "late", c["id"])
        again = await upload(api, late["id"], ("late.txt", text("late")))
        token = await move(api, top["id"], file_ids=[again["files"][0]["id"]])
        expected = {file_id, again["files"][0]["id"]}
        assert await member_ids(api, early["id"], token) == expected, f"round {round_}"

    at_once = asyncio.Semaphore(TREES_AT_ONCE)

    async def in_turn(round_: int) -> None:
        async with at_once:
            await a_tree(round_)

    async with asyncio.TaskGroup() as trees:  # one failing stops the others
        for round_ in range(TREES):
            trees.create_task(in_turn(round_))


async def test_linked_to_of_an_unknown_file_is_404(api: httpx.AsyncClient) -> None:
    answer = await api.get(f"/v1/files/{uuid.uuid4()}/datasets")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"
