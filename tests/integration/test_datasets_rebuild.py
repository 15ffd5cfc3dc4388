"""Rebuilding datasets' membership from their own events gives the live rows back."""

from __future__ import annotations

import asyncpg
import httpx

from services.datasets.projections import membership
from shared.kit.eventstore import EventStore
from shared.kit.projections import rebuild
from tests.conftest import eventually
from tests.e2e.support import CONSISTENCY, folder, text, unique, upload

SNAPSHOT = {
    "datasets.datasets": "SELECT * FROM datasets.datasets ORDER BY id",
    "datasets.members": "SELECT * FROM datasets.members ORDER BY dataset_id, file_id",
    "datasets.shares": "SELECT * FROM datasets.shares ORDER BY dataset_id, user_id",
}


async def rows(pool: asyncpg.Pool) -> dict[str, list[dict[str, object]]]:
    return {t: [dict(r) for r in await pool.fetch(q)] for t, q in SNAPSHOT.items()}


async def make_history(api: httpx.AsyncClient) -> str:
    """Every kind of datasets event, by hand and by reaction; returns the last write's token."""
    top = await folder(api, unique("ds-rebuild"))
    sub = await folder(api, "sub", top["id"])
    other = await folder(api, unique("ds-rebuild-other"))
    uploaded = await upload(api, sub["id"], *((f"{i}.txt", text(str(i))) for i in range(4)))
    ids = [f["id"] for f in uploaded["files"]]
    outside = [f["id"] for f in (await upload(api, other["id"], ("o.txt", text("o"))))["files"]]
    synced = (
        await api.post("/v1/datasets", json={"name": unique("s"), "synced_folder_id": top["id"]})
    ).json()
    manual = (await api.post("/v1/datasets", json={"name": unique("m"), "description": "d"})).json()
    doomed = (await api.post("/v1/datasets", json={"name": unique("x")})).json()
    await api.post(f"/v1/datasets/{manual['id']}/files", json={"file_ids": ids + outside})
    await api.post(f"/v1/datasets/{doomed['id']}/files", json={"file_ids": outside})
    await api.patch(f"/v1/datasets/{manual['id']}", json={"name": unique("m2"), "description": "e"})
    await api.delete(f"/v1/datasets/{manual['id']}/files/{ids[0]}")
    users = [
        (await api.post("/v1/users", json={"email": f"{unique(n)}@example.com", "name": n})).json()
        for n in ("kept", "gone")
    ]
    collaborators = f"/v1/datasets/{manual['id']}/collaborators"
    emails = [u["email"] for u in users]
    await api.post(collaborators, json={"emails": emails, "role": "user"})
    await api.post(collaborators, json={"emails": emails[:1], "role": "editor"})
    await api.delete(f"{collaborators}/{users[1]['id']}")
    await api.post(
        f"/v1/datasets/{doomed['id']}/collaborators", json={"emails": emails, "role": "admin"}
    )
    await api.delete(f"/v1/datasets/{doomed['id']}")
    await api.post("/v1/move", json={"file_ids": outside, "target_folder_id": sub["id"]})
    await api.post("/v1/move", json={"file_ids": [ids[1]], "target_folder_id": other["id"]})
    await api.post("/v1/delete", json={"file_ids": [ids[2]]})
    # A synced folder and its files back from the trash with their links.
    kept = await folder(api, unique("ds-rebuild-kept"))
    back = await folder(api, "back", kept["id"])
    returned = [f["id"] for f in (await upload(api, back["id"], ("r.txt", text("r"))))["files"]]
    again = (
        await api.post("/v1/datasets", json={"name": unique("k"), "synced_folder_id": kept["id"]})
    ).json()
    await api.post(f"/v1/datasets/{manual['id']}/files", json={"file_ids": returned})
    gone = await api.delete(f"/v1/folders/{back['id']}")
    token = gone.headers[CONSISTENCY]
    assert (await api.get(f"/v1/datasets/{again['id']}", headers={CONSISTENCY: token})).json()[
        "file_count"
    ] == 0
    restored = await api.post("/v1/trash/restore", json={"folder_ids": [back["id"]]})
    assert restored.status_code == 200, restored.text

    async def linked_again() -> bool:
        shown = [
            (await api.get(f"/v1/datasets/{d}/files", params={"limit": 100})).json()["items"]
            for d in (again["id"], manual["id"])
        ]
        return all(returned[0] in {f["id"] for f in items} for items in shown)

    await eventually(linked_again, what="the restored file linked again")
    answer = await api.post("/v1/delete", json={"folder_ids": [top["id"]]})
    assert answer.status_code == 200, answer.text
    token = answer.headers[CONSISTENCY]
    after = (await api.get(f"/v1/datasets/{synced['id']}", headers={CONSISTENCY: token})).json()
    assert after["synced"] is False
    return token


async def test_rebuilt_membership_has_the_same_rows_as_the_live_one(
    api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    await make_history(api)
    live = await rows(pool)
    assert live["datasets.datasets"] and live["datasets.members"]
    assert any(r["unsynced_from"] for r in live["datasets.datasets"])
    assert any(r["role"] == "editor" for r in live["datasets.shares"])
    replayed = await rebuild(pool, EventStore("datasets"), membership)
    assert replayed > 0
    assert await rows(pool) == live
