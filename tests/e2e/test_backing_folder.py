"""A dataset with its own folder: `create_backing_folder` makes a folder synced with it."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.conftest import eventually
from tests.e2e.support import error, folder, member, text, unique, upload


async def test_a_member_makes_a_dataset_with_its_own_folder_and_fills_it_by_uploading(
    api: httpx.AsyncClient, as_key: Callable[[str], httpx.AsyncClient]
) -> None:
    someone = await member(api, "backed")
    mine = as_key(someone["api_key"])
    name = unique("backed")
    made = await mine.post("/v1/datasets", json={"name": name, "create_backing_folder": True})
    assert made.status_code == 201, made.text
    dataset = made.json()
    assert dataset["synced"] is True and dataset["synced_folder_id"]
    backing = await mine.get(f"/v1/folders/{dataset['synced_folder_id']}")
    assert backing.status_code == 200, backing.text
    assert backing.json()["name"] == name and backing.json()["parent_id"] is None
    assert backing.json()["my_role"] == "admin"

    [file] = (await upload(mine, dataset["synced_folder_id"], ("a.txt", text("a"))))["files"]

    async def linked() -> bool:
        answer = await mine.get(f"/v1/datasets/{dataset['id']}/files")
        return file["id"] in {f["id"] for f in answer.json()["items"]}

    await eventually(linked, what="the upload joined the dataset")

    # Its name taken by a folder of the caller's: 409, and no dataset is made.
    taken = await folder(mine, unique("taken"))
    before = (await mine.get("/v1/datasets")).json()["items"]
    clash = await mine.post(
        "/v1/datasets", json={"name": taken["name"], "create_backing_folder": True}
    )
    error(clash, 409)
    assert (await mine.get("/v1/datasets")).json()["items"] == before
    other = await folder(api, unique("other"))
    error(
        await mine.post(
            "/v1/datasets",
            json={"name": "x", "create_backing_folder": True, "synced_folder_id": other["id"]},
        ),
        422,
    )


async def test_a_body_nested_too_deep_to_pass_on_leaves_no_folder_behind(
    api: httpx.AsyncClient,
) -> None:
    """A field nested deeper than the gateway's JSON encoder goes (orjson stops at 254
    levels; a body may nest 1,024) is still passed on or refused as the caller's (never
    a 500), and a refused dataset leaves no backing folder: the same name can be used."""
    name = unique("deep")
    nested: object = 1
    for _ in range(300):
        nested = [nested]
    answer = await api.post(
        "/v1/datasets", json={"name": name, "create_backing_folder": True, "extra": nested}
    )
    assert answer.status_code < 500, answer.text
    assert answer.status_code != 201  # the datasets context takes no such field
    made = await api.post("/v1/datasets", json={"name": name, "create_backing_folder": True})
    assert made.status_code == 201, made.text
