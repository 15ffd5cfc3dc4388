"""Organising at scale: listings and search filtered and ordered, files fetched and
edited in bulk (issue 17), as a user checks them, rights included."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
from files_client import Client

from shared.kit.stack import Stack
from tests.conftest import ADMIN_KEY
from tests.e2e.support import (
    CONSISTENCY,
    error,
    folder,
    items,
    member,
    pages,
    png,
    text,
    unique,
    upload,
)
from tests.e2e.test_cli import env, ok

__all__ = ["env"]  # the command's environment, a fixture of test_cli's
ZERO = "00000000-0000-0000-0000-000000000000"


async def _fixture(api: httpx.AsyncClient) -> dict[str, Any]:
    """A folder of five files of two kinds, sizes and metadata, and two subfolders."""
    top = await folder(api, unique("organise"))
    alpha = await folder(api, "alpha", top["id"], metadata={"site": "paris"})
    beta = await folder(api, "beta", top["id"])
    made = await upload(
        api,
        top["id"],
        ("cat-3.png", png(30, 20)),
        ("cat-1.png", png(4, 4)),
        ("dog.png", png(10, 10)),
        ("notes-a.txt", text("a" * 500)),
        ("notes-b.txt", text("b")),
    )
    files = {f["name"]: f for f in made["files"]}
    for name, metadata in (
        ("cat-3.png", {"score": 5, "site": "paris", "reviewed": True}),
        ("cat-1.png", {"score": 2, "site": "lyon"}),
        ("dog.png", {"score": 5, "site": "lyon", "reviewed": False}),
    ):
        changed = await api.patch(f"/v1/files/{files[name]['id']}", json={"metadata": metadata})
        assert changed.status_code == 200, changed.text
    return {"top": top, "alpha": alpha, "beta": beta, "files": files}


def names(found: list[dict[str, Any]]) -> list[str]:
    return [i["name"] for i in found]


async def test_a_folder_listed_by_name_part_kind_and_metadata(api: httpx.AsyncClient) -> None:
    t = await _fixture(api)
    top = t["top"]["id"]
    assert names(await items(api, top, q="cat")) == ["cat-1.png", "cat-3.png"]
    assert names(await items(api, top, q="ALP")) == ["alpha"]
    # kind repeats; folder is a kind of item too.
    listed = await items(api, top, kind=["text", "folder"])
    assert names(listed) == ["alpha", "beta", "notes-a.txt", "notes-b.txt"]
    assert names(await items(api, top, kind="image", **{"metadata.score": "5"})) == [
        "cat-3.png",
        "dog.png",
    ]
    # A value matches the number or the text; a key twice matches either value;
    # two keys must both match.
    assert names(await items(api, top, **{"metadata.site": ["paris", "nowhere"]})) == [
        "alpha",
        "cat-3.png",
    ]
    both = await items(api, top, **{"metadata.site": "lyon", "metadata.score": "5"})
    assert names(both) == ["dog.png"]
    assert names(await items(api, top, **{"metadata.reviewed": "false"})) == ["dog.png"]
    assert await items(api, top, **{"metadata.site": "Lyon"}) == []


async def test_every_order_pages_exactly_once_both_ways(api: httpx.AsyncClient) -> None:
    t = await _fixture(api)
    top = t["top"]["id"]
    files = t["files"]
    by_size = sorted(files.values(), key=lambda f: (f["size"], f["id"]))
    by_created = sorted(files.values(), key=lambda f: (f["created_at"], f["id"]))
    for order, expected in (
        ("name", sorted(files)),
        ("size", [f["name"] for f in by_size]),
        ("created_at", [f["name"] for f in by_created]),
    ):
        for limit in (1, 2, 100):
            ascending = await items(api, top, limit=limit, order=order, kind=["image", "text"])
            assert names(ascending) == expected, (order, limit)
            descending = await items(api, top, limit=limit, order=order, desc="true")
            # Folders first either way, each section reversed.
            assert names(descending) == ["beta", "alpha", *reversed(expected)], (order, limit)


async def test_a_cursor_holds_while_files_come_and_go(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("cursor"))
    await upload(api, top["id"], *((f"f{i:02}.txt", text(str(i))) for i in range(6)))
    first = (await api.get(f"/v1/folders/{top['id']}/items", params={"limit": 3})).json()
    assert names(first["items"]) == ["f00.txt", "f01.txt", "f02.txt"]
    # One before the cursor goes, one after it comes: the next page is exact.
    await api.delete(f"/v1/files/{first['items'][0]['id']}")
    await upload(api, top["id"], ("f03b.txt", text("late")))
    rest = await api.get(
        f"/v1/folders/{top['id']}/items", params={"limit": 10, "cursor": first["next_cursor"]}
    )
    assert names(rest.json()["items"]) == ["f03.txt", "f03b.txt", "f04.txt", "f05.txt"]
    # A cursor is for the order it was made in.
    refused = error(
        await api.get(
            f"/v1/folders/{top['id']}/items",
            params={"cursor": first["next_cursor"], "order": "size"},
        ),
        400,
        "cursor_order_mismatch",
    )
    assert refused["details"]["parameter"] == "cursor"
    refused = error(
        await api.get(
            f"/v1/folders/{top['id']}/items",
            params={"cursor": first["next_cursor"], "desc": "true"},
        ),
        400,
        "cursor_order_mismatch",
    )


async def test_unknown_parameters_and_bad_values_are_named(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("params"))
    path = f"/v1/folders/{top['id']}/items"
    refused = error(await api.get(path, params={"kindd": "image"}), 400, "unknown_parameter")
    assert refused["details"]["parameters"] == ["kindd"]
    error(await api.get("/v1/search", params={"q": "x", "sort": "name"}), 400, "unknown_parameter")
    # dataset_synced is a folder listing's; search does not take it.
    error(await api.get("/v1/search", params={"dataset_synced": "true"}), 400, "unknown_parameter")
    # A search names something to look for: q, or a filter.
    nothing = error(await api.get("/v1/search", params={"folder_id": top["id"]}), 422)
    assert nothing["details"]["parameter"] == "q"
    for params, parameter in (
        ({"order": "colour"}, "order"),
        ({"desc": "yes"}, "desc"),
        ({"in_dataset": "1"}, "in_dataset"),
        ({"dataset_synced": "maybe"}, "dataset_synced"),
        ({"kind": "Image"}, "kind"),
        ({"kind": "imag"}, "kind"),
        ({"limit": "0"}, "limit"),
        ({"order": ["name", "size"]}, "order"),
        ({"metadata.": "x"}, "metadata."),
        ({"metadata.score.gte": "3"}, "metadata.score.gte"),
        ({"q": ""}, "q"),
    ):
        refused = error(await api.get(path, params=params), 422)
        assert refused["details"]["parameter"] == parameter, (params, refused)
        assert parameter in refused["message"]
    # A kind it does not know: the word and the kinds it knows, as data (a client suggests
    # the closest from them), in a listing and in a search alike.
    kinds = ["folder", "image", "video", "image_group", "image_sequence", "dicom_series"]
    kinds += ["pdf", "audio", "text", "nifti"]
    for route, params, given in (
        (path, {"kind": ["image", "imag"]}, "imag"),
        ("/v1/search", {"kind": "Image"}, "Image"),
        ("/v1/search", {"q": "x", "kind": "imag"}, "imag"),
    ):
        refused = error(await api.get(route, params=params), 422)
        details = refused["details"]
        assert details["parameter"] == "kind", refused
        assert (details["kind"], details["kinds"]) == (given, kinds), refused


async def test_search_filters_orders_and_sees_only_what_the_caller_may(
    api: httpx.AsyncClient, as_key: Any
) -> None:
    t = await _fixture(api)
    tag = t["top"]["name"]
    sub = await folder(api, f"{tag}-inner", t["top"]["id"])
    await upload(api, sub["id"], (f"{tag}-deep.png", png()))
    # Search without q: by metadata alone, within a folder.
    hits = await pages(api, "/v1/search", 2, folder_id=t["top"]["id"], **{"metadata.site": "lyon"})
    assert sorted(names(hits)) == ["cat-1.png", "dog.png"]
    assert all(h["path"][0]["id"] == t["top"]["id"] for h in hits)
    ordered = await pages(
        api,
        "/v1/search",
        1,
        folder_id=t["top"]["id"],
        kind="image",
        order="size",
        desc="true",
    )
    sizes = [h["size"] for h in ordered]
    assert sizes == sorted(sizes, reverse=True) and len(ordered) == 4
    # Another member sees none of it, with any filter.
    stranger = as_key((await member(api, "stranger"))["api_key"])
    for params in ({"q": tag}, {"metadata.site": "lyon"}, {"q": tag, "order": "name"}):
        assert (await stranger.get("/v1/search", params=params)).json()["items"] == []
    error(await stranger.get(f"/v1/folders/{t['top']['id']}/items", params={"q": "cat"}), 404)


async def test_metadata_texts_long_and_short_match_exactly(api: httpx.AsyncClient) -> None:
    """Short texts are matched through the indexed side table, long ones (over 200
    characters) by containment, and text that reads as a number matches both."""
    top = await folder(api, unique("texts"))
    tag = top["name"]
    made = await upload(api, top["id"], ("long.png", png()), ("short.png", png()), ("n.png", png()))
    files = {f["name"]: f["id"] for f in made["files"]}
    long_note = f"{tag} " + "é" * 250
    for name, metadata in (
        ("long.png", {"note": long_note, "tag": tag}),
        ("short.png", {"note": f"{tag}-short", "tag": tag, "code": "7"}),
        ("n.png", {"note": 7, "tag": [tag], "code": 7}),
    ):
        changed = await api.patch(f"/v1/files/{files[name]}", json={"metadata": metadata})
        assert changed.status_code == 200, changed.text

    async def found(**params: Any) -> list[str]:
        hits = await pages(api, "/v1/search", 2, folder_id=top["id"], **params)
        return sorted(names(hits))

    assert await found(**{"metadata.note": long_note}) == ["long.png"]
    assert await found(**{"metadata.note": long_note[:-1]}) == []
    assert await found(**{"metadata.note": f"{tag}-short"}) == ["short.png"]
    # A list holding the value is not the value.
    assert await found(**{"metadata.tag": tag}) == ["long.png", "short.png"]
    assert await found(**{"metadata.tag": [tag, "other"], "metadata.note": long_note}) == [
        "long.png"
    ]
    assert await found(**{"metadata.code": "7"}) == ["n.png", "short.png"]
    # Ordered, across the whole catalog.
    ordered = await pages(api, "/v1/search", 1, order="name", **{"metadata.tag": tag})
    assert names(ordered) == ["long.png", "short.png"]


async def test_in_dataset_and_dataset_synced_follow_the_datasets(api: httpx.AsyncClient) -> None:
    t = await _fixture(api)
    top = t["top"]["id"]
    files = t["files"]
    made = await api.post("/v1/datasets", json={"name": unique("ds")})
    assert made.status_code == 201, made.text
    added = await api.post(
        f"/v1/datasets/{made.json()['id']}/files",
        json={"file_ids": [files["dog.png"]["id"], files["notes-b.txt"]["id"]]},
    )
    assert added.status_code == 200, added.text
    token = {CONSISTENCY: added.headers[CONSISTENCY]}
    linked = await api.get(f"/v1/folders/{top}/items", params={"in_dataset": "true"}, headers=token)
    assert names(linked.json()["items"]) == ["dog.png", "notes-b.txt"]
    unlinked = await api.get(
        f"/v1/folders/{top}/items", params={"in_dataset": "false"}, headers=token
    )
    assert names(unlinked.json()["items"]) == ["cat-1.png", "cat-3.png", "notes-a.txt"]
    found = await api.get(
        "/v1/search", params={"folder_id": top, "in_dataset": "true", "q": "dog"}, headers=token
    )
    assert names(found.json()["items"]) == ["dog.png"]
    synced = await api.post(
        "/v1/datasets", json={"name": unique("synced"), "synced_folder_id": t["beta"]["id"]}
    )
    assert synced.status_code == 201, synced.text
    token = {CONSISTENCY: synced.headers[CONSISTENCY]}
    listed = await api.get(
        f"/v1/folders/{top}/items", params={"dataset_synced": "true"}, headers=token
    )
    assert names(listed.json()["items"]) == ["beta"]
    listed = await api.get(
        f"/v1/folders/{top}/items", params={"dataset_synced": "false"}, headers=token
    )
    assert names(listed.json()["items"]) == ["alpha"]
    gone = await api.delete(f"/v1/datasets/{made.json()['id']}")
    assert gone.status_code == 204
    after = await api.get(
        f"/v1/folders/{top}/items",
        params={"in_dataset": "true"},
        headers={CONSISTENCY: gone.headers[CONSISTENCY]},
    )
    assert after.json()["items"] == []


async def test_files_looked_up_in_bulk_only_those_one_may_see(
    api: httpx.AsyncClient, as_key: Any
) -> None:
    t = await _fixture(api)
    files = t["files"]
    ghost = str(uuid.uuid4())
    ids = [files["dog.png"]["id"], ghost, files["cat-1.png"]["id"], files["dog.png"]["id"]]
    found = await api.post("/v1/files/lookup", json={"ids": ids})
    assert found.status_code == 200, found.text
    assert names(found.json()["items"]) == ["dog.png", "cat-1.png"]
    assert found.json()["not_found"] == [ghost]
    assert found.json()["items"][0]["metadata"] == {"score": 5, "site": "lyon", "reviewed": False}
    stranger = as_key((await member(api, "stranger"))["api_key"])
    hidden = (await stranger.post("/v1/files/lookup", json={"ids": ids})).json()
    assert hidden["items"] == [] and sorted(hidden["not_found"]) == sorted({*ids})
    error(await api.post("/v1/files/lookup", json={"ids": [ghost] * 1001}), 422)


async def test_files_edited_in_bulk_all_or_nothing(api: httpx.AsyncClient, as_key: Any) -> None:
    t = await _fixture(api)
    files = t["files"]
    cat, dog = files["cat-3.png"], files["dog.png"]
    edited = await api.patch(
        "/v1/files",
        json={
            "updates": [
                {"id": cat["id"], "name": "kitten.png", "description": "the best one"},
                {"id": dog["id"], "metadata": {"score": 7, "reviewed": None, "breed": "lab"}},
            ],
            "metadata_mode": "merge",
        },
    )
    assert edited.status_code == 200, edited.text
    assert edited.headers.get(CONSISTENCY)
    body = edited.json()
    assert body["updated"] == 2
    assert names(body["items"]) == ["kitten.png", "dog.png"]
    seen = (await api.get(f"/v1/files/{cat['id']}")).json()
    assert (seen["name"], seen["description"]) == ("kitten.png", "the best one")
    assert seen["metadata"] == {"score": 5, "site": "paris", "reviewed": True}
    assert (await api.get(f"/v1/files/{dog['id']}")).json()["metadata"] == {
        "score": 7,
        "site": "lyon",
        "breed": "lab",
    }
    replaced = await api.patch(
        "/v1/files",
        json={"updates": [{"id": dog["id"], "metadata": {"only": 1}}], "metadata_mode": "replace"},
    )
    assert replaced.json()["items"][0]["metadata"] == {"only": 1}
    # The history shows each change.
    audit = await api.get("/v1/audit", params={"subject_id": cat["id"]})
    types = [e["type"] for e in audit.json()["items"]]
    assert "catalog.FileRenamed" in types and "catalog.FileDescribed" in types
    # One unknown id, or one bad name: nothing changes, and the refusal names it.
    ghost = str(uuid.uuid4())
    refused = error(
        await api.patch(
            "/v1/files",
            json={"updates": [{"id": cat["id"], "name": "changed.png"}, {"id": ghost}]},
        ),
        404,
        "not_found",
    )
    assert ghost in refused["message"]
    refused = error(
        await api.patch(
            "/v1/files",
            json={
                "updates": [
                    {"id": cat["id"], "name": "changed.png"},
                    {"id": dog["id"], "name": "bad/name"},
                ]
            },
        ),
        422,
        "invalid_name",
    )
    assert refused["details"]["file_id"] == dog["id"]
    error(
        await api.patch(
            "/v1/files", json={"updates": [{"id": cat["id"]}, {"id": cat["id"], "name": "x"}]}
        ),
        422,
        "duplicate_ids",
    )
    assert (await api.get(f"/v1/files/{cat['id']}")).json()["name"] == "kitten.png"
    # Another member: the files are as missing to them; a viewer may not edit.
    stranger_user = await member(api, "stranger")
    stranger = as_key(stranger_user["api_key"])
    refused = error(
        await stranger.patch("/v1/files", json={"updates": [{"id": cat["id"], "name": "mine"}]}),
        404,
    )
    assert cat["id"] in refused["message"]
    invited = await api.post(
        f"/v1/folders/{t['top']['id']}/collaborators",
        json={"emails": [stranger_user["email"]], "role": "user"},
    )
    assert invited.status_code == 200, invited.text
    refused = error(
        await stranger.patch("/v1/files", json={"updates": [{"id": cat["id"], "name": "mine"}]}),
        403,
    )
    assert refused["details"]["role_needed"] == "editor"
    assert (await api.get(f"/v1/files/{cat['id']}")).json()["name"] == "kitten.png"


async def test_a_bulk_edit_retried_with_its_key_is_applied_once(api: httpx.AsyncClient) -> None:
    t = await _fixture(api)
    dog = t["files"]["dog.png"]
    key = {"Idempotency-Key": str(uuid.uuid4())}
    body = {"updates": [{"id": dog["id"], "description": "once"}]}
    first = await api.patch("/v1/files", json=body, headers=key)
    again = await api.patch("/v1/files", json=body, headers=key)
    assert first.status_code == again.status_code == 200
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json() == first.json()
    audit = await api.get("/v1/audit", params={"subject_id": dog["id"]})
    described = [e for e in audit.json()["items"] if e["type"] == "catalog.FileDescribed"]
    assert len(described) == 1


def test_the_client_and_the_command_filter_fetch_and_edit(
    platform: Stack, env: dict[str, str], tmp_path: Path
) -> None:
    with Client(platform.gateway_url, api_key=ADMIN_KEY) as c:
        top = c.create_folder(unique("client-filters"))
        (tmp_path / "big.png").write_bytes(png(40, 40))
        (tmp_path / "small.png").write_bytes(png(2, 2))
        (tmp_path / "notes.txt").write_bytes(text("n"))
        made = {
            f.name: f
            for f in top.upload([tmp_path / n for n in ("big.png", "small.png", "notes.txt")])
        }
        edited = c.update_files(
            [
                {"id": made["big.png"], "metadata": {"split": "train"}, "description": "big one"},
                {"id": made["small.png"].id, "metadata": {"split": "test"}},
            ]
        )
        assert [f.description for f in edited] == ["big one", ""]
        found, missing = c.lookup_files([made["small.png"], made["big.png"].id, ZERO])
        assert [f.name for f in found] == ["small.png", "big.png"] and missing == [ZERO]
        assert found[1].metadata == {"split": "train"}
        by_size = [i.name for i in top.items(kind=["image", "text"], order="size", desc=True)]
        assert by_size == ["big.png", "small.png", "notes.txt"]
        assert [i.name for i in top.items(metadata={"split": ["test", "val"]})] == ["small.png"]
        hits = list(c.search(kind="image", folder=top, metadata={"split": "train"}))
        assert [h.name for h in hits] == ["big.png"]
        width = f"width_{uuid.uuid4().hex[:8]}"
        schema = c.metadata_schema().keys
        typed = c.set_metadata_schema({**schema, width: {"type": "number"}})
        assert typed.keys[width] == {"type": "number", "retired": False}
        c.update_files([{"id": made["big.png"], "metadata": {width: 40}}])
        c.update_files([{"id": made["small.png"], "metadata": {width: 2}}])
        wide = [i.name for i in top.items(metadata={f"{width}.gte": 10})]
        assert wide == ["big.png"]
    path = top.name
    listed = ok(env, "ls", path, "--meta", "split=train", "--json")
    assert [json.loads(line)["name"] for line in listed.splitlines()] == ["big.png"]
    listed = ok(env, "ls", path, "--order", "size", "--kind", "image", "--json")
    assert [json.loads(line)["name"] for line in listed.splitlines()] == ["small.png", "big.png"]
    hits = ok(env, "search", "--in", path, "--kind", "text", "--json")
    assert [json.loads(line)["name"] for line in hits.splitlines()] == ["notes.txt"]


async def test_a_metadata_schema_types_keys_checks_writes_and_ranges_them(
    api: httpx.AsyncClient, as_key: Any
) -> None:
    t = await _fixture(api)
    top = t["top"]["id"]
    files = t["files"]
    tag = uuid.uuid4().hex[:8]  # the schema is the organisation's: keys of this test's own
    num, when, label, vec = f"n{tag}", f"w{tag}", f"e{tag}", f"v{tag}"
    keys = {
        num: {"type": "number"},
        when: {"type": "datetime"},
        label: {"type": "enum", "values": ["cat", "dog"]},
        vec: {"type": "embedding", "dimension": 3},
    }
    someone = as_key((await member(api, "schema-member"))["api_key"])
    refused = error(await someone.put("/v1/metadata-schema", json={"keys": keys}), 403)
    assert refused["details"]["role_needed"] == "org_admin"
    for bad in ({"type": "enum"}, {"type": "embedding"}, {"type": "number", "values": ["1"]}):
        error(await api.put("/v1/metadata-schema", json={"keys": {num: bad}}), 422)
    put = await api.put("/v1/metadata-schema", json={"keys": keys})
    assert put.status_code == 200, put.text
    assert put.json()["keys"][label] == {"type": "enum", "values": ["cat", "dog"], "retired": False}
    seen = await someone.get("/v1/metadata-schema")
    assert seen.json()["keys"][num] == {"type": "number", "retired": False}
    # Writes are checked against it, naming the key and the type it needs.
    cat, dog, notes = files["cat-1.png"], files["dog.png"], files["notes-a.txt"]
    for metadata, key in (
        ({num: "high"}, num),
        ({num: True}, num),
        ({when: "yesterday"}, when),
        ({label: "bird"}, label),
        ({vec: [1, 2]}, vec),
    ):
        refused = error(await api.patch(f"/v1/files/{cat['id']}", json={"metadata": metadata}), 422)
        assert refused["code"] == "metadata_type_mismatch"
        assert refused["details"]["key"] == key and key in refused["message"]
    refused = error(
        await api.patch(
            "/v1/files",
            json={
                "updates": [
                    {"id": cat["id"], "metadata": {num: 1}},
                    {"id": dog["id"], "metadata": {num: "many"}},
                ]
            },
        ),
        422,
        "metadata_type_mismatch",
    )
    assert refused["details"]["file_id"] == dog["id"]
    assert num not in (await api.get(f"/v1/files/{cat['id']}")).json()["metadata"]
    edited = await api.patch(
        "/v1/files",
        json={
            "updates": [
                {"id": cat["id"], "metadata": {num: 1, when: "2026-01-05T10:00:00Z"}},
                {"id": dog["id"], "metadata": {num: 5.5, when: "2026-03-01T00:00:00+02:00"}},
                {"id": notes["id"], "metadata": {num: 10, label: "dog", vec: [0.1, 0.2, 0.3]}},
            ]
        },
    )
    assert edited.status_code == 200, edited.text
    # Ranges on typed keys; inclusive, files only.
    ranged = await items(api, top, **{f"metadata.{num}.gte": "2", f"metadata.{num}.lte": "10"})
    assert names(ranged) == ["dog.png", "notes-a.txt"]
    ranged = await items(api, top, **{f"metadata.{when}.gte": "2026-02-01T00:00:00Z"})
    assert names(ranged) == ["dog.png"]
    hits = await pages(
        api, "/v1/search", 1, folder_id=top, order="name", **{f"metadata.{num}.lte": "5.5"}
    )
    assert names(hits) == ["cat-1.png", "dog.png"]
    for params in (
        {f"metadata.{label}.gte": "a"},  # an enum has no range
        {f"metadata.nothing{tag}.gte": "1"},  # an untyped key neither
        {f"metadata.{num}.gte": "ten"},
        {f"metadata.{when}.lte": "2026-13-01"},
    ):
        refused = error(await api.get(f"/v1/folders/{top}/items", params=params), 422)
        assert refused["details"]["parameter"] == next(iter(params))
    # Retired: kept, no longer checked nor ranged; restored: both again.
    retired = {**keys, num: {"type": "number", "retired": True}}
    assert (await api.put("/v1/metadata-schema", json={"keys": retired})).status_code == 200
    loose = await api.patch(f"/v1/files/{cat['id']}", json={"metadata": {num: "high"}})
    assert loose.status_code == 200, loose.text
    error(await api.get(f"/v1/folders/{top}/items", params={f"metadata.{num}.gte": "0"}), 422)
    assert (await api.put("/v1/metadata-schema", json={"keys": keys})).status_code == 200
    ranged = await items(api, top, **{f"metadata.{num}.gte": "0"})
    assert names(ranged) == ["dog.png", "notes-a.txt"]
    error(await api.patch(f"/v1/files/{dog['id']}", json={"metadata": {num: "x"}}), 422)
