"""Each delete is its own item of the trash: a file or folder deleted on its own, then
the folder it was in, stays an item; the folder's restore, count and "Delete forever"
are of what went to the trash with it."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import eventually
from tests.e2e.support import error, folder, items, text, unique, upload


async def listed(api: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    answer = await api.get("/v1/trash", params={"limit": 1000})
    assert answer.status_code == 200, answer.text
    return {i["id"]: i for i in answer.json()["items"]}


async def deleted(api: httpx.AsyncClient, **ids: list[str]) -> None:
    answer = await api.post("/v1/delete", json=ids)
    assert answer.status_code == 200, answer.text


async def restored(api: httpx.AsyncClient, **ids: list[str]) -> dict[str, int]:
    answer = await api.post("/v1/trash/restore", json=ids)
    assert answer.status_code == 200, answer.text
    result: dict[str, int] = answer.json()
    return result


async def test_a_file_deleted_before_its_folder_stays_its_own_item(
    api: httpx.AsyncClient,
) -> None:
    f = await folder(api, unique("sep-f"))
    a, b = (await upload(api, f["id"], ("a.txt", text("a")), ("b.txt", text("b"))))["files"]
    await deleted(api, file_ids=[a["id"]])
    await deleted(api, folder_ids=[f["id"]])

    trash = await listed(api)
    assert a["id"] in trash and f["id"] in trash and b["id"] not in trash
    assert trash[f["id"]]["files"] == 1 and trash[a["id"]]["folder_id"] == f["id"]

    # The folder comes back with what went with it, not with the file deleted before.
    assert await restored(api, folder_ids=[f["id"]]) == {"restored_folders": 1, "restored_files": 1}
    assert {i["id"] for i in await items(api, f["id"])} == {b["id"]}
    trash = await listed(api)
    assert a["id"] in trash and f["id"] not in trash

    # Then the file, on its own, into its folder.
    assert await restored(api, file_ids=[a["id"]]) == {"restored_folders": 0, "restored_files": 1}
    assert {i["id"] for i in await items(api, f["id"])} == {a["id"], b["id"]}


async def test_the_file_restored_alone_brings_its_folder_back_without_the_folders_contents(
    api: httpx.AsyncClient,
) -> None:
    f = await folder(api, unique("sep-path"))
    a, b = (await upload(api, f["id"], ("a.txt", text("a")), ("b.txt", text("b"))))["files"]
    await deleted(api, file_ids=[a["id"]])
    await deleted(api, folder_ids=[f["id"]])

    assert await restored(api, file_ids=[a["id"]]) == {"restored_folders": 1, "restored_files": 1}
    assert {i["id"] for i in await items(api, f["id"])} == {a["id"]}
    # What went with the folder waits in the trash, an item now (its folder is back).
    assert b["id"] in await listed(api)
    assert await restored(api, file_ids=[b["id"]]) == {"restored_folders": 0, "restored_files": 1}


async def test_a_subfolder_deleted_before_its_parent_stays_its_own_item(
    api: httpx.AsyncClient,
) -> None:
    f = await folder(api, unique("sep-sub"))
    s = await folder(api, "s", f["id"])
    t = await folder(api, "t", f["id"])
    [x] = (await upload(api, s["id"], ("x.txt", text("x"))))["files"]
    [y] = (await upload(api, t["id"], ("y.txt", text("y"))))["files"]
    await deleted(api, folder_ids=[s["id"]])
    await deleted(api, folder_ids=[f["id"]])

    trash = await listed(api)
    assert {f["id"], s["id"]} <= set(trash) and not {t["id"], x["id"], y["id"]} & set(trash)
    assert trash[f["id"]]["files"] == 1 and trash[s["id"]]["files"] == 1

    assert await restored(api, folder_ids=[f["id"]]) == {"restored_folders": 2, "restored_files": 1}
    error(await api.get(f"/v1/folders/{s['id']}"), 404)
    assert s["id"] in await listed(api)
    assert await restored(api, folder_ids=[s["id"]]) == {"restored_folders": 1, "restored_files": 1}
    assert {i["id"] for i in await items(api, s["id"])} == {x["id"]}


async def test_delete_forever_of_the_folder_leaves_the_item_deleted_before_it(
    api: httpx.AsyncClient,
) -> None:
    f = await folder(api, unique("sep-purge"))
    a, b = (await upload(api, f["id"], ("a.txt", text("a")), ("b.txt", text("b"))))["files"]
    await deleted(api, file_ids=[a["id"]])
    await deleted(api, folder_ids=[f["id"]])

    gone = await api.delete("/v1/trash", params={"folder_ids": f["id"]})
    assert gone.status_code == 200, gone.text
    # b went; the folder stays as the place a.txt comes back to, until a.txt goes.
    assert gone.json() == {"purged_folders": 0, "purged_files": 1}
    trash = await listed(api)
    assert b["id"] not in trash and a["id"] in trash and trash[f["id"]]["files"] == 0
    assert await restored(api, file_ids=[a["id"]]) == {"restored_folders": 1, "restored_files": 1}
    assert {i["id"] for i in await items(api, f["id"])} == {a["id"]}


async def test_delete_forever_of_the_folder_leaves_an_empty_subfolder_deleted_before_it(
    api: httpx.AsyncClient,
) -> None:
    f = await folder(api, unique("sep-purge-sub"))
    d = await folder(api, "d", f["id"])
    inner = await folder(api, "inner", f["id"])
    e = await folder(api, "e", inner["id"])
    [b] = (await upload(api, f["id"], ("b.txt", text("b"))))["files"]
    await deleted(api, folder_ids=[d["id"]])
    await deleted(api, folder_ids=[e["id"]])
    await deleted(api, folder_ids=[f["id"]])

    gone = await api.delete("/v1/trash", params={"folder_ids": f["id"]})
    assert gone.status_code == 200, gone.text
    # b and `inner` went with f; f stays as the place d and e (inside `inner`, which
    # stays for e too) come back to.
    assert gone.json() == {"purged_folders": 0, "purged_files": 1}
    trash = await listed(api)
    assert {f["id"], d["id"], e["id"]} <= set(trash) and b["id"] not in trash
    assert await restored(api, folder_ids=[d["id"]]) == {"restored_folders": 2, "restored_files": 0}
    assert await restored(api, folder_ids=[e["id"]]) == {"restored_folders": 2, "restored_files": 0}
    assert {i["id"] for i in await items(api, f["id"])} == {d["id"], inner["id"]}


async def test_what_a_path_only_restore_left_is_not_taken_by_the_folders_next_delete(
    api: httpx.AsyncClient,
) -> None:
    f = await folder(api, unique("sep-again"))
    a, b = (await upload(api, f["id"], ("a.txt", text("a")), ("b.txt", text("b"))))["files"]
    await deleted(api, folder_ids=[f["id"]])
    await restored(api, file_ids=[a["id"]])  # f back as its path; b stays
    await deleted(api, folder_ids=[f["id"]])

    trash = await listed(api)
    assert {f["id"], b["id"]} <= set(trash) and trash[f["id"]]["files"] == 1
    assert await restored(api, folder_ids=[f["id"]]) == {"restored_folders": 1, "restored_files": 1}
    assert {i["id"] for i in await items(api, f["id"])} == {a["id"]}


async def dataset_files(api: httpx.AsyncClient, dataset_id: str) -> set[str]:
    answer = await api.get(f"/v1/datasets/{dataset_id}/files", params={"limit": 1000})
    assert answer.status_code == 200, answer.text
    return {f["id"] for f in answer.json()["items"]}


async def test_the_folders_restore_gives_back_only_the_links_of_what_went_with_it(
    api: httpx.AsyncClient,
) -> None:
    f = await folder(api, unique("sep-links"))
    a, b = (await upload(api, f["id"], ("a.txt", text("a")), ("b.txt", text("b"))))["files"]
    both = {a["id"], b["id"]}
    synced = (
        await api.post("/v1/datasets", json={"name": unique("sep"), "synced_folder_id": f["id"]})
    ).json()
    manual = (await api.post("/v1/datasets", json={"name": unique("sep-manual")})).json()
    added = await api.post(f"/v1/datasets/{manual['id']}/files", json={"file_ids": sorted(both)})
    assert added.status_code == 200, added.text

    async def linked(want: set[str]) -> bool:
        return (
            await dataset_files(api, synced["id"]) == want
            and await dataset_files(api, manual["id"]) == want
        )

    await eventually(lambda: linked(both), what="both datasets hold both files")
    await deleted(api, file_ids=[a["id"]])
    await eventually(lambda: linked({b["id"]}), what="a.txt left both datasets")
    await deleted(api, folder_ids=[f["id"]])
    await eventually(lambda: linked(set()), what="b.txt left both datasets")

    await restored(api, folder_ids=[f["id"]])
    await eventually(lambda: linked({b["id"]}), what="b.txt is back in both, a.txt is not")
    await restored(api, file_ids=[a["id"]])
    await eventually(lambda: linked(both), what="a.txt is back in both")
