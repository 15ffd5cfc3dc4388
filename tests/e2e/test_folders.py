"""Folders: the tree, its listings, names, summary and recursive delete."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.e2e.support import (
    CONSISTENCY,
    PDF,
    error,
    folder,
    items,
    pages,
    png,
    text,
    unique,
    upload,
    wav,
)


async def test_nested_folders_have_paths_and_counts(api: httpx.AsyncClient) -> None:
    me = (await api.get("/v1/users/me")).json()
    top = await folder(api, unique("tree"), description="the top", metadata={"team": "vision"})
    assert top["parent_id"] is None
    assert top["description"] == "the top"
    assert top["metadata"] == {"team": "vision"}
    assert top["created_by"] == me["id"]
    assert top["path"] == [{"id": top["id"], "name": top["name"]}]
    child = await folder(api, "child", top["id"])
    grandchild = await folder(api, "grandchild", child["id"])
    assert child["parent_id"] == top["id"]

    got = (await api.get(f"/v1/folders/{grandchild['id']}")).json()
    assert got["path"] == [
        {"id": top["id"], "name": top["name"]},
        {"id": child["id"], "name": "child"},
        {"id": grandchild["id"], "name": "grandchild"},
    ]
    assert got["parent_id"] == child["id"]
    assert (got["file_count"], got["folder_count"]) == (0, 0)

    await folder(api, "second child", top["id"])
    await upload(api, top["id"], ("a.txt", text("a")), ("b.png", png()))
    got = (await api.get(f"/v1/folders/{top['id']}")).json()
    assert (got["file_count"], got["folder_count"]) == (2, 2)
    assert got["description"] == "the top" and got["my_role"] == "admin"


async def test_children_and_top_level_are_listed_page_by_page(api: httpx.AsyncClient) -> None:
    parent = await folder(api, unique("parent"))
    names = [f"child-{n:02}" for n in (7, 3, 1, 6, 2, 5, 4)]
    for name in names:
        await folder(api, name, parent["id"])
    await folder(api, "not a child", (await folder(api, unique("elsewhere")))["id"])

    everything = await pages(api, "/v1/folders", 100, parent_id=parent["id"])
    assert [f["name"] for f in everything] == sorted(names)
    for limit in (1, 2, 3, 7):
        paged = await pages(api, "/v1/folders", limit, parent_id=parent["id"])
        assert [f["id"] for f in paged] == [f["id"] for f in everything], limit
    first = (await api.get("/v1/folders", params={"parent_id": parent["id"], "limit": 3})).json()
    assert len(first["items"]) == 3 and first["next_cursor"]
    # A page that holds exactly what is left says there is no more.
    exact = (await api.get(f"/v1/folders/{parent['id']}/items", params={"limit": 7})).json()
    assert len(exact["items"]) == 7 and exact["next_cursor"] is None

    tops = [await folder(api, unique(f"top{n}")) for n in range(3)]
    listed = await pages(api, "/v1/folders", 2)
    assert all(f["parent_id"] is None for f in listed)
    assert {t["id"] for t in tops} <= {f["id"] for f in listed}
    assert parent["id"] in {f["id"] for f in listed}
    # `?parent_id=` with no value, as the contract writes it, is the top level too.
    blank = await pages(api, "/v1/folders", 1000, parent_id="")
    assert {f["id"] for f in blank} == {f["id"] for f in listed}


async def test_rename_describe_and_metadata_round_trip(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("rename"))
    renamed = await api.patch(f"/v1/folders/{top['id']}", json={"name": top["name"] + " (old)"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.headers.get(CONSISTENCY)
    assert renamed.json()["name"] == top["name"] + " (old)"

    metadata = {
        "labels": ["cat", "dog"],
        "score": 0.75,
        "count": 3,
        "reviewed": True,
        "nothing": None,
        "nested": {"ünïcode": "✓", "deep": {"list": [1, {"x": "y"}]}},
    }
    described = await api.patch(
        f"/v1/folders/{top['id']}", json={"description": "now described", "metadata": metadata}
    )
    assert described.status_code == 200, described.text
    got = (await api.get(f"/v1/folders/{top['id']}")).json()
    assert got["name"] == top["name"] + " (old)"
    assert got["description"] == "now described"
    assert got["metadata"] == metadata

    # Fields left out stay as they were.
    again = await api.patch(f"/v1/folders/{top['id']}", json={"description": "only this"})
    assert again.json()["metadata"] == metadata
    assert again.json()["name"] == top["name"] + " (old)"


async def test_summary_counts_everything_below(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("summary"))
    child = await folder(api, "child", top["id"])
    grandchild = await folder(api, "grandchild", child["id"])
    image, notes, sound = png(), text("some notes\n"), wav()
    await upload(api, top["id"], ("a.png", image), ("b.txt", notes))
    await upload(api, grandchild["id"], ("c.pdf", PDF), ("d.wav", sound), ("e.png", image))

    summary = (await api.get(f"/v1/folders/{top['id']}/summary")).json()
    assert summary["folders"] == 2
    assert summary["files"] == 5
    assert summary["bytes"] == 2 * len(image) + len(notes) + len(PDF) + len(sound)
    assert summary["by_kind"] == {
        "audio": {"files": 1, "bytes": len(sound)},
        "image": {"files": 2, "bytes": 2 * len(image)},
        "pdf": {"files": 1, "bytes": len(PDF)},
        "text": {"files": 1, "bytes": len(notes)},
    }
    below = (await api.get(f"/v1/folders/{child['id']}/summary")).json()
    assert (below["folders"], below["files"]) == (1, 3)
    assert set(below["by_kind"]) == {"audio", "image", "pdf"}
    empty = (await api.get(f"/v1/folders/{grandchild['id']}/summary")).json()
    assert (empty["folders"], empty["files"]) == (0, 3)


async def test_sibling_names_are_unique(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("siblings"))
    await folder(api, "Scans", top["id"])
    other = await folder(api, "Other", top["id"])

    clash = error(
        await api.post("/v1/folders", json={"name": "Scans", "parent_id": top["id"]}), 409
    )
    assert "Scans" in clash["message"]
    taken = error(await api.patch(f"/v1/folders/{other['id']}", json={"name": "Scans"}), 409)
    assert "Scans" in taken["message"]
    assert (await api.get(f"/v1/folders/{other['id']}")).json()["name"] == "Other"
    # Top-level names are unique too, and the same name is fine under another parent.
    error(await api.post("/v1/folders", json={"name": top["name"]}), 409)
    await folder(api, "Scans", other["id"])

    # Moving a folder in beside a same-named one is refused, and nothing moves.
    inner = await folder(api, "Scans", (await folder(api, "box", top["id"]))["id"])
    a_file = (await upload(api, other["id"], ("stay.txt", text())))["files"][0]
    moved = await api.post(
        "/v1/move",
        json={
            "folder_ids": [inner["id"]],
            "file_ids": [a_file["id"]],
            "target_folder_id": top["id"],
        },
    )
    conflict = error(moved, 409)
    assert "Scans" in conflict["message"]
    assert (await api.get(f"/v1/folders/{inner['id']}")).json()["parent_id"] != top["id"]
    assert (await api.get(f"/v1/files/{a_file['id']}")).json()["folder_id"] == other["id"]
    top_items = await items(api, top["id"])
    assert sorted(i["name"] for i in top_items) == ["Other", "Scans", "box"]


async def test_names_equal_but_for_their_unicode_form_are_taken(
    api: httpx.AsyncClient, pool: Any
) -> None:
    """`café` composed (NFC) and decomposed (NFD) look the same: beside each other they
    conflict as equal names do, in every way a folder comes to be beside another; names
    are kept as given, case is compared as before, and files' names stay free."""
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    top = await folder(api, unique("forms"))
    first = await folder(api, composed, top["id"])
    clash = error(
        await api.post("/v1/folders", json={"name": decomposed, "parent_id": top["id"]}),
        409,
        "name_taken",
    )
    assert decomposed in clash["message"]
    # Case aside too, as before: "CAFÉ" decomposed is "café".
    error(
        await api.post("/v1/folders", json={"name": "CAFE\u0301", "parent_id": top["id"]}),
        409,
        "name_taken",
    )
    other = await folder(api, "other", top["id"])
    error(await api.patch(f"/v1/folders/{other['id']}", json={"name": decomposed}), 409)
    away = await folder(api, decomposed, other["id"])  # another parent: free
    assert away["name"] == decomposed  # stored as given
    conflict = error(
        await api.post(
            "/v1/move", json={"folder_ids": [away["id"]], "target_folder_id": top["id"]}
        ),
        409,
        "name_taken",
    )
    assert decomposed in conflict["message"]
    # A folder back from the trash beside a twin made meanwhile.
    assert (await api.delete(f"/v1/folders/{first['id']}")).status_code == 204
    twin = await folder(api, decomposed, top["id"])
    error(await api.post("/v1/trash/restore", json={"folder_ids": [first["id"]]}), 409)
    # An image group's folder takes the next name free of either form.
    made = await api.post(
        f"/v1/folders/{other['id']}/image-groups",
        files=[
            ("kind", (None, "image_group")),
            ("name", (None, composed)),
            ("file", ("a.png", png(), "image/png")),
        ],
    )
    assert made.status_code == 201, made.text
    assert made.json()["folder"]["name"] == f"{composed} (images)"
    group_folder = made.json()["folder"]
    renamed = await api.patch(
        f"/v1/folders/{group_folder['id']}", json={"name": f"{decomposed} (images)"}
    )
    assert renamed.status_code == 200, renamed.text  # its own name, in another form
    again = await api.post(
        f"/v1/folders/{other['id']}/image-groups",
        files=[
            ("kind", (None, "image_group")),
            ("name", (None, composed)),
            ("file", ("b.png", png(), "image/png")),
        ],
    )
    assert again.status_code == 201, again.text
    assert again.json()["folder"]["name"] == f"{composed} (images 2)"
    # Python's lower() and PostgreSQL's disagree on a final sigma ("ΟΔΟΣ" is "οδος" to
    # one, "οδοσ" to the other): the name chosen is free by the catalog's index.
    await folder(api, "\u03bf\u03b4\u03bf\u03c3 (images)", other["id"])
    sigma = await api.post(
        f"/v1/folders/{other['id']}/image-groups",
        files=[
            ("kind", (None, "image_group")),
            ("name", (None, "\u039f\u0394\u039f\u03a3")),
            ("file", ("c.png", png(), "image/png")),
        ],
    )
    assert sigma.status_code == 201, sigma.text
    assert sigma.json()["folder"]["name"] == "\u039f\u0394\u039f\u03a3 (images 2)"
    # Files' names need not be unique, in any form.
    both = await upload(api, top["id"], (f"{composed}.png", png()), (f"{decomposed}.png", png()))
    assert [f["name"] for f in both["files"]] == [f"{composed}.png", f"{decomposed}.png"]
    listed = await items(api, top["id"])
    assert sorted(i["name"] for i in listed if i["type"] == "folder") == sorted(
        [decomposed, "other"]
    )
    assert twin["name"] == decomposed

    # Twins from before the rule (the upgrade marked the later one) inside a folder sent
    # to the trash come back with it: they were siblings already.
    legacy = await folder(api, "legacy", top["id"])
    await folder(api, composed, legacy["id"])
    later = await folder(api, "later", legacy["id"])
    await pool.execute(
        "UPDATE catalog.folders SET name = $2, grandfathered = true WHERE id = $1",
        uuid.UUID(later["id"]),
        decomposed,
    )
    try:
        assert (await api.delete(f"/v1/folders/{legacy['id']}")).status_code == 204
        back = await api.post("/v1/trash/restore", json={"folder_ids": [legacy["id"]]})
        assert back.status_code == 200, back.text
        assert sorted(i["name"] for i in await items(api, legacy["id"])) == sorted(
            [composed, decomposed]
        )
    finally:
        # The row as its events make it: the shared platform's read model is compared
        # with its rebuild (tests/integration/test_rebuild.py).
        await pool.execute(
            "UPDATE catalog.folders SET name = 'later', grandfathered = false WHERE id = $1",
            uuid.UUID(later["id"]),
        )


async def test_deleting_a_folder_deletes_everything_inside(
    api: httpx.AsyncClient, pool: Any
) -> None:
    top = await folder(api, unique("doomed"))
    child = await folder(api, "child", top["id"])
    grandchild = await folder(api, "grandchild", child["id"])
    keeper = await folder(api, unique("keeper"))
    files = [
        (await upload(api, where["id"], (f"{n}-{where['name']}.txt", text(n))))["files"][0]
        for n, where in (("a", top), ("b", child), ("c", grandchild), ("d", keeper))
    ]

    deleted = await api.delete(f"/v1/folders/{top['id']}")
    assert deleted.status_code == 204, deleted.text
    assert deleted.headers.get(CONSISTENCY)
    for gone in (top, child, grandchild):
        error(await api.get(f"/v1/folders/{gone['id']}"), 404, "not_found")
        error(await api.get(f"/v1/folders/{gone['id']}/items"), 404)
    for gone in files[:3]:
        error(await api.get(f"/v1/files/{gone['id']}"), 404, "not_found")
        error(await api.get(f"/v1/files/{gone['id']}/content"), 404)
    assert (await api.get(f"/v1/files/{files[3]['id']}")).status_code == 200
    tops = await pages(api, "/v1/folders", 1000)
    assert top["id"] not in {f["id"] for f in tops}
    error(await api.delete(f"/v1/folders/{top['id']}"), 404)

    # The cascade's events, in the order recorded, each caused by its folder's deletion.
    events = await pool.fetch(
        """SELECT event_id::text AS id, type, data, metadata->>'causation_id' AS cause
           FROM catalog.events WHERE type IN ('catalog.FolderDeleted', 'catalog.FileDeleted')
             AND metadata->>'correlation_id' = $1 ORDER BY position""",
        deleted.headers["X-Request-Id"],
    )
    deletion = {e["data"]["folder_id"]: e["id"] for e in events if "Folder" in e["type"]}
    assert [e["type"] for e in events] == ["catalog.FolderDeleted"] * 3 + [
        "catalog.FileDeleted"
    ] * 3
    assert set(deletion) == {top["id"], child["id"], grandchild["id"]}
    caused_by = {e["data"].get("file_id") or e["data"]["folder_id"]: e["cause"] for e in events}
    assert caused_by[child["id"]] == deletion[top["id"]]
    assert caused_by[grandchild["id"]] == deletion[child["id"]]
    assert [caused_by[f["id"]] for f in files[:3]] == [
        deletion[top["id"]],
        deletion[child["id"]],
        deletion[grandchild["id"]],
    ]


async def test_items_list_folders_then_files_by_name(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("items"))
    for name in ("b-folder", "a-folder", "c-folder"):
        await folder(api, name, top["id"])
    await upload(
        api,
        top["id"],
        ("d.txt", text("d")),
        ("a.png", png()),
        ("c.txt", text("c")),
        ("b.txt", text("b")),
    )
    expected = [
        ("folder", "a-folder"),
        ("folder", "b-folder"),
        ("folder", "c-folder"),
        ("file", "a.png"),
        ("file", "b.txt"),
        ("file", "c.txt"),
        ("file", "d.txt"),
    ]
    everything = await items(api, top["id"])
    assert [(i["type"], i["name"]) for i in everything] == expected
    for limit in range(1, 9):
        paged = await items(api, top["id"], limit=limit)
        assert [(i["type"], i["name"]) for i in paged] == expected, f"limit={limit}"

    assert await items(api, top["id"], limit=3, kind="") == everything
    only_folders = await items(api, top["id"], limit=2, kind="folder")
    assert [i["name"] for i in only_folders] == ["a-folder", "b-folder", "c-folder"]
    only_text = await items(api, top["id"], limit=2, kind="text")
    assert [i["name"] for i in only_text] == ["b.txt", "c.txt", "d.txt"]
    only_images = await items(api, top["id"], kind="image")
    assert [(i["type"], i["kind"]) for i in only_images] == [("file", "image")]
