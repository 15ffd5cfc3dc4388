"""Move, delete and search across folders."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from tests.e2e.support import (
    CONSISTENCY,
    error,
    folder,
    items,
    pages,
    png,
    text,
    unique,
    upload,
)


async def _tree(api: httpx.AsyncClient, prefix: str) -> dict[str, Any]:
    """source/{a.txt, b.txt, sub/{c.txt, deep/{d.txt}}} and an empty target."""
    source = await folder(api, unique(prefix))
    sub = await folder(api, "sub", source["id"])
    deep = await folder(api, "deep", sub["id"])
    target = await folder(api, unique(prefix + "-target"))
    ab = await upload(api, source["id"], ("a.txt", text("a")), ("b.txt", text("b")))
    c = await upload(api, sub["id"], ("c.txt", text("c")))
    d = await upload(api, deep["id"], ("d.txt", text("d")))
    return {
        "source": source,
        "sub": sub,
        "deep": deep,
        "target": target,
        "a": ab["files"][0],
        "b": ab["files"][1],
        "c": c["files"][0],
        "d": d["files"][0],
    }


async def _where(api: httpx.AsyncClient, file: dict[str, Any]) -> str:
    return str((await api.get(f"/v1/files/{file['id']}")).json()["folder_id"])


async def test_move_files_and_folders_and_paths_follow(api: httpx.AsyncClient) -> None:
    t = await _tree(api, "move")
    moved = await api.post(
        "/v1/move",
        json={
            "file_ids": [t["a"]["id"]],
            "folder_ids": [t["sub"]["id"]],
            "target_folder_id": t["target"]["id"],
        },
    )
    assert moved.status_code == 200, moved.text
    assert moved.headers.get(CONSISTENCY)
    assert moved.json()["moved"] == 2

    assert await _where(api, t["a"]) == t["target"]["id"]
    assert await _where(api, t["b"]) == t["source"]["id"]
    assert await _where(api, t["d"]) == t["deep"]["id"]
    deep = (await api.get(f"/v1/folders/{t['deep']['id']}")).json()
    assert [p["name"] for p in deep["path"]] == [t["target"]["name"], "sub", "deep"]
    assert [p["id"] for p in deep["path"]] == [t["target"]["id"], t["sub"]["id"], t["deep"]["id"]]
    sub = (await api.get(f"/v1/folders/{t['sub']['id']}")).json()
    assert sub["parent_id"] == t["target"]["id"]
    assert [(i["type"], i["name"]) for i in await items(api, t["target"]["id"])] == [
        ("folder", "sub"),
        ("file", "a.txt"),
    ]
    assert [i["name"] for i in await items(api, t["source"]["id"])] == ["b.txt"]
    hit = (
        await api.get("/v1/search", params={"q": "d.txt", "folder_id": t["target"]["id"]})
    ).json()["items"]
    assert [h["id"] for h in hit] == [t["d"]["id"]]
    assert [p["id"] for p in hit[0]["path"]] == [p["id"] for p in deep["path"]]
    summary = (await api.get(f"/v1/folders/{t['target']['id']}/summary")).json()
    assert (summary["folders"], summary["files"]) == (2, 3)


async def test_a_folder_cannot_move_into_itself_or_below(api: httpx.AsyncClient) -> None:
    t = await _tree(api, "cycle")
    for target in (t["sub"], t["deep"]):
        refused = await api.post(
            "/v1/move",
            json={
                "file_ids": [t["a"]["id"]],
                "folder_ids": [t["sub"]["id"]],
                "target_folder_id": target["id"],
            },
        )
        problem = error(refused, 409)
        assert "itself" in problem["message"] or "subfolder" in problem["message"]
        assert "sub" in problem["message"]
    # All or nothing: the valid file in the same request stayed where it was.
    assert await _where(api, t["a"]) == t["source"]["id"]
    assert (await api.get(f"/v1/folders/{t['sub']['id']}")).json()["parent_id"] == t["source"]["id"]
    deep = (await api.get(f"/v1/folders/{t['deep']['id']}")).json()
    assert [p["id"] for p in deep["path"]] == [t["source"]["id"], t["sub"]["id"], t["deep"]["id"]]


async def test_move_with_unknown_ids_moves_nothing(api: httpx.AsyncClient) -> None:
    t = await _tree(api, "unknown")
    ghost = str(uuid.uuid4())
    for body in (
        {"file_ids": [t["a"]["id"], ghost], "target_folder_id": t["target"]["id"]},
        {"file_ids": [t["a"]["id"]], "folder_ids": [ghost], "target_folder_id": t["target"]["id"]},
        {"file_ids": [t["a"]["id"]], "target_folder_id": ghost},
    ):
        problem = error(await api.post("/v1/move", json=body), 404)
        assert ghost in problem["message"]
    assert await _where(api, t["a"]) == t["source"]["id"]
    assert await items(api, t["target"]["id"]) == []


async def test_move_dry_run_counts_and_changes_nothing(api: httpx.AsyncClient) -> None:
    t = await _tree(api, "dryrun")
    answer = await api.post(
        "/v1/move",
        json={
            "file_ids": [t["a"]["id"]],
            "folder_ids": [t["sub"]["id"]],
            "target_folder_id": t["target"]["id"],
            "dry_run": True,
        },
    )
    assert answer.status_code == 200, answer.text
    impact = answer.json()
    assert (impact["folders"], impact["files"]) == (2, 3)  # sub, deep; a, c, d
    assert await _where(api, t["a"]) == t["source"]["id"]
    assert (await api.get(f"/v1/folders/{t['sub']['id']}")).json()["parent_id"] == t["source"]["id"]
    assert await items(api, t["target"]["id"]) == []


async def test_concurrent_moves_of_the_same_things_all_answer(api: httpx.AsyncClient) -> None:
    t = await _tree(api, "race")
    other = await folder(api, unique("race-other"))
    targets = [t["target"]["id"], other["id"]] * 5
    answers = await asyncio.gather(
        *(
            api.post(
                "/v1/move",
                json={
                    "file_ids": [t["a"]["id"]],
                    "folder_ids": [t["sub"]["id"]],
                    "target_folder_id": target,
                },
            )
            for target in targets
        )
    )
    assert all(a.status_code in (200, 409) for a in answers), [a.text for a in answers]
    where = await _where(api, t["a"])
    sub = (await api.get(f"/v1/folders/{t['sub']['id']}")).json()
    assert where in (t["target"]["id"], other["id"])
    assert sub["parent_id"] in (t["target"]["id"], other["id"])
    deep = (await api.get(f"/v1/folders/{t['deep']['id']}")).json()
    assert [p["id"] for p in deep["path"]] == [sub["parent_id"], t["sub"]["id"], t["deep"]["id"]]


async def test_bulk_delete(api: httpx.AsyncClient) -> None:
    t = await _tree(api, "bulkdelete")
    ghost = str(uuid.uuid4())
    refused = await api.post(
        "/v1/delete", json={"file_ids": [t["a"]["id"]], "folder_ids": [t["sub"]["id"], ghost]}
    )
    assert ghost in error(refused, 404)["message"]
    assert await _where(api, t["a"]) == t["source"]["id"]
    assert (await api.get(f"/v1/folders/{t['sub']['id']}")).status_code == 200

    dry = await api.post(
        "/v1/delete",
        json={"file_ids": [t["a"]["id"]], "folder_ids": [t["sub"]["id"]], "dry_run": True},
    )
    assert dry.status_code == 200, dry.text
    assert (dry.json()["folders"], dry.json()["files"]) == (2, 3)
    assert (await api.get(f"/v1/files/{t['c']['id']}")).status_code == 200

    deleted = await api.post(
        "/v1/delete", json={"file_ids": [t["a"]["id"]], "folder_ids": [t["sub"]["id"]]}
    )
    assert deleted.status_code == 200, deleted.text
    assert deleted.headers.get(CONSISTENCY)
    assert deleted.json()["deleted"] == 2
    for gone in ("a", "c", "d"):
        error(await api.get(f"/v1/files/{t[gone]['id']}"), 404)
    for gone in ("sub", "deep"):
        error(await api.get(f"/v1/folders/{t[gone]['id']}"), 404)
    assert [i["name"] for i in await items(api, t["source"]["id"])] == ["b.txt"]
    source = (await api.get(f"/v1/folders/{t['source']['id']}/summary")).json()
    assert (source["folders"], source["files"]) == (0, 1)


async def test_search_by_name_across_folders(api: httpx.AsyncClient) -> None:
    token = uuid.uuid4().hex[:8]
    top = await folder(api, unique("search"))
    inner = await folder(api, f"Zebra-{token} crossing", top["id"])
    elsewhere = await folder(api, unique("search-elsewhere"))
    f1 = (await upload(api, top["id"], (f"ZEBRA-{token}-1.png", png())))["files"][0]
    f2 = (await upload(api, inner["id"], (f"zebra-{token}-2.txt", text())))["files"][0]
    f3 = (await upload(api, elsewhere["id"], (f"old-zebra-{token}.txt", text())))["files"][0]
    await upload(api, top["id"], ("unrelated.txt", text()))

    hits = await pages(api, "/v1/search", 100, q=f"zEbRa-{token}")
    assert {h["id"] for h in hits} == {inner["id"], f1["id"], f2["id"], f3["id"]}
    by_id = {h["id"]: h for h in hits}
    assert [p["id"] for p in by_id[f2["id"]]["path"]] == [top["id"], inner["id"]]
    assert [p["name"] for p in by_id[f3["id"]]["path"]] == [elsewhere["name"]]
    assert by_id[inner["id"]]["type"] == "folder"
    assert by_id[f1["id"]]["type"] == "file"

    for limit in (1, 2, 3):
        paged = await pages(api, "/v1/search", limit, q=token)
        assert {h["id"] for h in paged} == {h["id"] for h in hits}, limit

    texts = await pages(api, "/v1/search", 100, q=token, kind="text")
    assert {h["id"] for h in texts} == {f2["id"], f3["id"]}
    only_folders = await pages(api, "/v1/search", 100, q=token, kind="folder")
    assert [h["id"] for h in only_folders] == [inner["id"]]
    below = await pages(api, "/v1/search", 100, q=token, folder_id=top["id"])
    assert {h["id"] for h in below} == {inner["id"], f1["id"], f2["id"]}
    deeper = await pages(api, "/v1/search", 1, q=token, folder_id=inner["id"])
    assert f2["id"] in {h["id"] for h in deeper} and f1["id"] not in {h["id"] for h in deeper}


async def test_search_wildcards_are_literal(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("wildcards"))
    await upload(
        api,
        top["id"],
        ("100%_done.txt", text()),
        ("100x_done.txt", text()),
        ("100%xdone.txt", text()),
        ("plain.txt", text()),
    )

    async def names(q: str) -> list[str]:
        found = await pages(api, "/v1/search", 100, q=q, folder_id=top["id"])
        return sorted(h["name"] for h in found)

    assert await names("%") == ["100%_done.txt", "100%xdone.txt"]
    assert await names("_") == ["100%_done.txt", "100x_done.txt"]
    assert await names("%_") == ["100%_done.txt"]
    assert await names("0%") == ["100%_done.txt", "100%xdone.txt"]
    assert await names("\\") == []
