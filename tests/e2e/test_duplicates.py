"""Duplicates: a file says how many other files the caller may see hold its bytes, and
lists them; what the caller may not see is neither counted nor listed."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import httpx

from tests.e2e.support import error, folder, items, member, text, unique, upload


async def listed(api: httpx.AsyncClient, file_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        answer = await api.get(f"/v1/files/{file_id}/duplicates", params=params)
        assert answer.status_code == 200, answer.text
        found += answer.json()["items"]
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            return found


async def test_duplicates_are_counted_and_listed_as_far_as_the_caller_sees(
    api: httpx.AsyncClient, as_key: Callable[[str], httpx.AsyncClient]
) -> None:
    data = text(f"twins {os.urandom(8).hex()}")
    mine = await folder(api, unique("dupes-a"))
    theirs = await folder(api, unique("dupes-b"))
    a1, a2 = (await upload(api, mine["id"], ("a1.txt", data), ("a2.txt", data)))["files"]
    [b1] = (await upload(api, theirs["id"], ("b1.txt", data)))["files"]
    [alone] = (await upload(api, mine["id"], ("alone.txt", text(os.urandom(8).hex()))))["files"]

    got = (await api.get(f"/v1/files/{a1['id']}")).json()
    assert got["duplicates"] == 2
    assert {d["id"] for d in await listed(api, a1["id"])} == {a2["id"], b1["id"]}
    assert (await api.get(f"/v1/files/{alone['id']}")).json()["duplicates"] == 0
    assert await listed(api, alone["id"]) == []
    in_folder = {i["id"]: i for i in await items(api, mine["id"])}
    assert in_folder[a2["id"]]["duplicates"] == 2 and in_folder[alone["id"]]["duplicates"] == 0

    viewer = await member(api, "dupes")
    invited = await api.post(
        f"/v1/folders/{mine['id']}/collaborators",
        json={"emails": [viewer["email"]], "role": "user"},
    )
    assert invited.status_code in (200, 201), invited.text
    as_viewer = as_key(viewer["api_key"])
    seen = await as_viewer.get(f"/v1/files/{a1['id']}")
    assert seen.status_code == 200, seen.text
    assert seen.json()["duplicates"] == 1
    assert [d["id"] for d in await listed(as_viewer, a1["id"])] == [a2["id"]]
    error(await as_viewer.get(f"/v1/files/{b1['id']}/duplicates"), 404)
    error(await api.get(f"/v1/files/{a1['id']}/duplicates", params={"cursor": "x"}), 422)
