"""Image groups and sequences through the gateway: one file for the group, a folder for its
images, only images, one size per sequence, constituents kept while the group exists, and
datasets that never sync the constituent folder."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.conftest import eventually
from tests.e2e.support import (
    CONSISTENCY,
    error,
    folder,
    items,
    member,
    png,
    text,
    unique,
    upload,
)


async def post_group(
    api: httpx.AsyncClient, folder_id: str, kind: str, name: str, *files: tuple[str, bytes]
) -> httpx.Response:
    fields: list[tuple[str, Any]] = [("kind", (None, kind)), ("name", (None, name))]
    return await api.post(
        f"/v1/folders/{folder_id}/image-groups",
        files=fields + [("file", (n, data, "application/octet-stream")) for n, data in files],
    )


async def group(
    api: httpx.AsyncClient, folder_id: str, kind: str, name: str, *files: tuple[str, bytes]
) -> dict[str, Any]:
    answer = await post_group(api, folder_id, kind, name, *files)
    assert answer.status_code == 201, answer.text
    assert answer.headers.get(CONSISTENCY)
    return dict(answer.json())


async def test_a_group_and_a_sequence(api: httpx.AsyncClient, pool: Any) -> None:
    top = await folder(api, unique("groups"))
    made = await group(
        api, top["id"], "image_group", "cats", ("a.png", png()), ("b.png", png(4, 4))
    )
    file, sub = made["file"], made["folder"]
    assert file["kind"] == "image_group" and file["name"] == "cats"
    assert file["folder_id"] == top["id"]
    assert sub["name"] == "cats (images)" and sub["parent_id"] == top["id"]
    assert file["group"]["constituent_folder_id"] == sub["id"]
    images = [i for i in await items(api, sub["id"]) if i["type"] == "file"]
    assert sorted(i["name"] for i in images) == ["a.png", "b.png"]
    assert {i["id"] for i in images} == set(file["group"]["file_ids"])
    assert all(i["kind"] == "image" for i in images)

    frames = [(f"f{n}.png", png(5, 3)) for n in (3, 1, 2)]
    seq = await group(api, top["id"], "image_sequence", "cats", *frames)
    assert seq["folder"]["name"] == "cats (images 2)"  # unique among the subfolders
    found = (await api.get(f"/v1/files/{seq['file']['id']}")).json()
    assert found["kind"] == "image_sequence"
    assert found["group"]["constituent_folder_id"] == seq["folder"]["id"]
    ids = found["group"]["file_ids"]
    names = [(await api.get(f"/v1/files/{i}")).json()["name"] for i in ids]
    assert names == ["f3.png", "f1.png", "f2.png"]  # the order given
    # Its job (the answer names none: found where ingest keeps it) lists the group's
    # file first, then its images in the order given.
    job_id = await pool.fetchval(
        "SELECT id FROM ingest.jobs WHERE folder_id = $1 AND kind = 'image_sequence'",
        uuid.UUID(top["id"]),
    )
    job = (await api.get(f"/v1/jobs/{job_id}")).json()
    assert [f["id"] for f in job["files"]] == [seq["file"]["id"], *ids]
    assert (job["file_count"], job["next_files_cursor"]) == (4, None)
    assert job["progress"] == {"done": 3, "total": 3}


async def test_only_images_and_one_size_per_sequence(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("groups"))
    refused = error(
        await post_group(
            api, top["id"], "image_group", "g", ("a.png", png()), ("notes.txt", text())
        ),
        415,
    )
    assert "notes.txt" in refused["message"]
    refused = error(
        await post_group(
            api, top["id"], "image_sequence", "s", ("a.png", png(8, 6)), ("b.png", png(9, 6))
        ),
        422,
        "dimensions_differ",
    )
    assert "b.png" in refused["message"] and "9x6" in refused["message"]
    assert "8x6" in refused["message"]
    error(await post_group(api, top["id"], "image_group", "empty"), 422)
    error(await post_group(api, top["id"], "video_group", "v", ("a.png", png())), 422)
    assert await items(api, top["id"]) == []  # nothing of those was recorded


async def test_constituents_stay_while_their_group_exists(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("groups"))
    made = await group(api, top["id"], "image_group", "kept", ("a.png", png()), ("b.png", png()))
    first = made["file"]["group"]["file_ids"][0]
    for answer in (
        await api.delete(f"/v1/files/{first}"),
        await api.post("/v1/delete", json={"file_ids": [first]}),
        await api.delete(f"/v1/folders/{made['folder']['id']}"),
    ):
        refused = error(answer, 409, "constituent_of_group")
        assert "kept" in refused["message"]
        assert refused["details"]["groups"][0]["id"] == made["file"]["id"]
    # Nor moved away from their group: not an image, not the constituent folder.
    elsewhere = await folder(api, unique("elsewhere"))
    for moving in ({"file_ids": [first]}, {"folder_ids": [made["folder"]["id"]]}):
        refused = error(
            await api.post("/v1/move", json={**moving, "target_folder_id": elsewhere["id"]}),
            409,
            "constituent_of_group",
        )
        assert "move the group instead" in refused["message"]
    # With the folder that holds both, the group and its images move together.
    moved = await api.post(
        "/v1/move", json={"folder_ids": [top["id"]], "target_folder_id": elsewhere["id"]}
    )
    assert moved.status_code == 200, moved.text
    # A later image in the constituent folder does not join the group.
    later = (await upload(api, made["folder"]["id"], ("c.png", png())))["files"][0]
    found = (await api.get(f"/v1/files/{made['file']['id']}")).json()
    assert later["id"] not in found["group"]["file_ids"]
    assert len(found["group"]["file_ids"]) == 2

    deleted = await api.delete(f"/v1/files/{made['file']['id']}")
    assert deleted.status_code == 204, deleted.text
    # Freed: ordinary files now, which may go.
    assert (await api.delete(f"/v1/files/{first}")).status_code == 204
    assert (await api.delete(f"/v1/folders/{made['folder']['id']}")).status_code == 204


async def test_datasets_never_sync_the_constituent_folder(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("groups"))
    answer = await api.post(
        "/v1/datasets", json={"name": unique("ds"), "synced_folder_id": top["id"]}
    )
    assert answer.status_code == 201, answer.text
    dataset = answer.json()
    made = await group(api, top["id"], "image_sequence", "seq", ("a.png", png()), ("b.png", png()))
    plain = (await upload(api, top["id"], ("plain.png", png())))["files"][0]

    async def linked() -> bool:
        found = await api.get(f"/v1/datasets/{dataset['id']}/files")
        ids = {f["id"] for f in found.json()["items"]}
        return {made["file"]["id"], plain["id"]} <= ids

    await eventually(linked, what="the group file joins the synced dataset")
    found = await api.get(f"/v1/datasets/{dataset['id']}/files")
    ids = {f["id"] for f in found.json()["items"]}
    assert ids == {made["file"]["id"], plain["id"]}  # not the constituent images

    refused = error(
        await api.post(
            "/v1/datasets",
            json={"name": unique("ds"), "synced_folder_id": made["folder"]["id"]},
        ),
        422,
        "constituent_folder",
    )
    assert made["file"]["id"] in refused["message"]


async def test_a_group_back_from_the_trash_keeps_its_images_out_of_synced_datasets(
    api: httpx.AsyncClient,
) -> None:
    top = await folder(api, unique("groups"))
    inner = await folder(api, "inner", top["id"])
    answer = await api.post(
        "/v1/datasets", json={"name": unique("ds"), "synced_folder_id": top["id"]}
    )
    assert answer.status_code == 201, answer.text
    dataset = answer.json()
    made = await group(api, inner["id"], "image_group", "pets", ("a.png", png()), ("b.png", png()))

    async def linked(**headers: str) -> set[str]:
        found = await api.get(f"/v1/datasets/{dataset['id']}/files", headers=headers)
        assert found.status_code == 200, found.text
        return {f["id"] for f in found.json()["items"]}

    async def only_the_group() -> bool:
        return await linked() == {made["file"]["id"]}

    await eventually(only_the_group, what="the group file joins the synced dataset")
    assert (await api.delete(f"/v1/folders/{inner['id']}")).status_code == 204
    restored = await api.post("/v1/trash/restore", json={"folder_ids": [inner["id"]]})
    assert restored.status_code == 200, restored.text
    # Once the datasets have seen the whole restore: the group, not its images.
    assert await linked(**{CONSISTENCY: restored.headers[CONSISTENCY]}) == {made["file"]["id"]}


async def test_a_group_moved_alone_names_its_images_only_to_who_sees_them(
    api: httpx.AsyncClient, as_key: Any
) -> None:
    """A group's file may move on its own, away from its images: a member who sees only
    where it went is not told which files its images are, in its answer or its history."""
    home, shared = await folder(api, unique("groups")), await folder(api, unique("shared"))
    made = await group(
        api, home["id"], "image_sequence", "pets", ("a.png", png()), ("b.png", png())
    )
    image_ids = set(made["file"]["group"]["file_ids"])
    moved = await api.post(
        "/v1/move", json={"file_ids": [made["file"]["id"]], "target_folder_id": shared["id"]}
    )
    assert moved.status_code == 200, moved.text
    reader = await member(api, "reader")
    invited = await api.post(
        f"/v1/folders/{shared['id']}/collaborators",
        json={"emails": [reader["email"]], "role": "editor"},
    )
    assert invited.status_code == 200, invited.text
    client = as_key(reader["api_key"])

    def names_an_image(answer: httpx.Response) -> bool:
        assert answer.status_code == 200, answer.text
        return any(i in answer.text for i in image_ids)

    seen = await client.get(f"/v1/files/{made['file']['id']}")
    assert seen.json()["group"]["file_ids"] == [] and seen.json()["group"]["images"] == 2
    assert not names_an_image(seen)
    assert not names_an_image(await client.get(f"/v1/folders/{shared['id']}/items"))
    assert not names_an_image(await client.get("/v1/search", params={"q": "pets"}))
    history = await client.get("/v1/audit", params={"subject_id": made["file"]["id"]})
    assert history.json()["items"], history.text
    assert not names_an_image(history)
    # Nor is its video made for them: it would show the images.
    refused = error(
        await client.post("/v1/files/re-encode", json={"file_ids": [made["file"]["id"]]}),
        403,
        "forbidden",
    )
    assert "no role" in refused["message"] and made["file"]["id"] in refused["message"]
    # Who sees the images is told them, as before.
    found = (await api.get(f"/v1/files/{made['file']['id']}")).json()
    assert set(found["group"]["file_ids"]) == image_ids
    history = await api.get("/v1/audit", params={"subject_id": made["file"]["id"]})
    assert names_an_image(history)
