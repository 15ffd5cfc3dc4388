""" "Delete forever" for chosen items (`DELETE /v1/trash?file_ids=&folder_ids=`): only
those go, and only where the caller could restore them; the rest of the trash stays."""

from __future__ import annotations

from typing import Any

import httpx

from tests.e2e.support import error, folder, member, text, unique, upload


async def trashed(api: httpx.AsyncClient) -> set[str]:
    answer = await api.get("/v1/trash", params={"limit": 1000})
    assert answer.status_code == 200, answer.text
    return {i["id"] for i in answer.json()["items"]}


async def grant(api: httpx.AsyncClient, folder_id: str, person: dict[str, Any], role: str) -> None:
    answer = await api.post(
        f"/v1/folders/{folder_id}/collaborators", json={"emails": [person["email"]], "role": role}
    )
    assert answer.status_code in (200, 201), answer.text


async def test_delete_forever_takes_only_the_chosen_items_the_caller_could_restore(
    api: httpx.AsyncClient,
) -> None:
    mine, theirs = await folder(api, unique("purge-a")), await folder(api, unique("purge-b"))
    f1, f2 = (await upload(api, mine["id"], ("f1.txt", text("1\n")), ("f2.txt", text("2\n"))))[
        "files"
    ]
    (g1,) = (await upload(api, theirs["id"], ("g1.txt", text("g\n"))))["files"]
    inner = await folder(api, "inner", parent_id=mine["id"])
    (h,) = (await upload(api, inner["id"], ("h.txt", text("h\n"))))["files"]
    person = await member(api, "purger")
    await grant(api, mine["id"], person, "user")  # sees it, could not restore it
    await grant(api, theirs["id"], person, "editor")
    for file in (f1, f2, g1):
        assert (await api.delete(f"/v1/files/{file['id']}")).status_code == 204
    assert (await api.delete(f"/v1/folders/{inner['id']}")).status_code == 204
    assert {f1["id"], f2["id"], g1["id"], inner["id"]} <= await trashed(api)

    async with httpx.AsyncClient(
        base_url=str(api.base_url),
        headers={"Authorization": f"Bearer {person['api_key']}"},
        timeout=30,
    ) as as_person:
        # They chose f1 (only seen) and g1 (theirs to restore): g1 alone goes.
        gone = await as_person.delete("/v1/trash", params={"file_ids": f"{f1['id']},{g1['id']}"})
        assert gone.status_code == 200, gone.text
        assert gone.json() == {"purged_folders": 0, "purged_files": 1}
        error(await as_person.delete("/v1/trash", params={"file_ids": "nope"}), 422)
    left = await trashed(api)
    assert g1["id"] not in left and {f1["id"], f2["id"], inner["id"]} <= left

    # Repeated parameters work as a list does; a folder goes with what is inside it.
    gone = await api.delete(
        "/v1/trash", params=[("file_ids", f1["id"]), ("folder_ids", inner["id"])]
    )
    assert gone.json() == {"purged_folders": 1, "purged_files": 2}, gone.text
    left = await trashed(api)
    assert not {f1["id"], inner["id"], h["id"]} & left and f2["id"] in left
    # What was not chosen is still restorable.
    back = await api.post("/v1/trash/restore", json={"file_ids": [f2["id"]]})
    assert back.status_code == 200 and back.json()["restored_files"] == 1, back.text
    error(await api.get(f"/v1/files/{f1['id']}"), 404)
