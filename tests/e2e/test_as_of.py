"""A folder as it was: `?as_of=` answers its items at a moment, from the history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.e2e.support import error, folder, text, unique, upload


async def as_of(api: httpx.AsyncClient, folder_id: str, at: datetime) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"as_of": at.isoformat(), "limit": 1}
        if cursor:
            params["cursor"] = cursor
        answer = await api.get(f"/v1/folders/{folder_id}/items", params=params)
        assert answer.status_code == 200, answer.text
        found += answer.json()["items"]
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            return found


async def test_a_folder_as_it_was_before_renames_deletes_moves_and_uploads(
    api: httpx.AsyncClient,
) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    top = await folder(api, unique("as-of"))
    other = await folder(api, unique("as-of-other"))
    a, b, c = (
        await upload(
            api, top["id"], ("a.txt", text("a")), ("b.txt", text("b")), ("c.txt", text("c"))
        )
    )["files"]
    sub = await folder(api, "sub", top["id"])
    then = datetime.now(UTC)
    renamed = await api.patch(f"/v1/files/{a['id']}", json={"name": "a2.txt"})
    assert renamed.status_code == 200, renamed.text
    assert (await api.delete(f"/v1/files/{b['id']}")).status_code == 204
    moved = await api.post(
        "/v1/move", json={"file_ids": [c["id"]], "target_folder_id": other["id"]}
    )
    assert moved.status_code == 200, moved.text
    await upload(api, top["id"], ("d.txt", text("d")))
    assert (await api.delete(f"/v1/folders/{sub['id']}")).status_code == 204

    past = await as_of(api, top["id"], then)
    assert [(i["type"], i["name"]) for i in past] == [
        ("folder", "sub"),
        ("file", "a.txt"),
        ("file", "b.txt"),
        ("file", "c.txt"),
    ]
    assert [i["id"] for i in past[1:]] == [a["id"], b["id"], c["id"]]
    now = await as_of(api, top["id"], datetime.now(UTC) + timedelta(seconds=1))
    assert [i["name"] for i in now] == ["a2.txt", "d.txt"]
    assert [i["name"] for i in await as_of(api, other["id"], then)] == []
    assert [i["name"] for i in await as_of(api, other["id"], datetime.now(UTC))] == ["c.txt"]

    error(
        await api.get(f"/v1/folders/{top['id']}/items", params={"as_of": before.isoformat()}), 404
    )
    for bad in ("yesterday", "2026-12-03", "2026-12-03T10:00:00", "2026-13-03T10:00:00Z"):
        error(await api.get(f"/v1/folders/{top['id']}/items", params={"as_of": bad}), 422)
    error(
        await api.get(
            f"/v1/folders/{top['id']}/items", params={"as_of": then.isoformat(), "q": "a"}
        ),
        400,
    )
