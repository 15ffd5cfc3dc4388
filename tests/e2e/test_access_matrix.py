"""Who gets what, route by route: each role on a folder, its subfolder and a sibling.

A member is invited on folder A with a role (or none). Roles hold for A and
everything below it (A/sub) and nothing beside it (B). An organisation admin may
do everything everywhere. A caller without any role gets 404 (existence does not
leak); one who sees but lacks the role gets 403 naming the role needed.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import ADMIN_KEY
from tests.e2e.support import error, folder, text, unique, upload

ROLES = ("none", "user", "editor", "admin", "org_admin")
PLACES = ("folder", "subfolder", "sibling")
RANK = {"none": 0, "user": 1, "editor": 2, "admin": 3, "org_admin": 4}


@dataclass
class Place:
    folder: dict[str, Any]
    file: dict[str, Any]
    job_id: str


@dataclass
class World:
    places: dict[str, Place]
    keys: dict[str, str]
    users: dict[str, dict[str, Any]]
    bystander: dict[str, Any]


async def user(api: httpx.AsyncClient, name: str, org_role: str = "member") -> dict[str, Any]:
    answer = await api.post(
        "/v1/users",
        json={"email": f"{unique(name)}@example.com", "name": name, "org_role": org_role},
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


async def invite(api: httpx.AsyncClient, folder_id: str, email: str, role: str) -> None:
    answer = await api.post(
        f"/v1/folders/{folder_id}/collaborators", json={"emails": [email], "role": role}
    )
    assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
async def world(stack: Any) -> World:
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
    ) as api:
        return await build_world(api)


async def build_world(api: httpx.AsyncClient) -> World:
    top = await folder(api, unique("matrix"))
    a = await folder(api, "a", top["id"])
    sub = await folder(api, "sub", a["id"])
    b = await folder(api, "b", top["id"])
    places = {}
    for place, f in (("folder", a), ("subfolder", sub), ("sibling", b)):
        uploaded = await upload(api, f["id"], (f"{unique('doc')}.txt", text(place)))
        places[place] = Place(f, uploaded["files"][0], uploaded["job_id"])
    users = {role: await user(api, role) for role in ("none", "user", "editor", "admin")}
    users["org_admin"] = await user(api, "org-admin", "admin")
    for role in ("user", "editor", "admin"):
        await invite(api, a["id"], users[role]["email"], role)
    bystander = await user(api, "bystander")
    return World(places, {r: u["api_key"] for r, u in users.items()}, users, bystander)


Call = Callable[[httpx.AsyncClient, Place, World], Awaitable[httpx.Response]]


async def throwaway_file(api: httpx.AsyncClient, place: Place) -> str:
    uploaded = await upload(api, place.folder["id"], (f"{unique('gone')}.txt", text("x")))
    return str(uploaded["files"][0]["id"])


# (route, role needed, what success answers, the call)
ROUTES: list[tuple[str, str, int, Call]] = [
    ("GET folder", "user", 200, lambda c, p, w: c.get(f"/v1/folders/{p.folder['id']}")),
    (
        "GET items",
        "user",
        200,
        lambda c, p, w: c.get(f"/v1/folders/{p.folder['id']}/items"),
    ),
    (
        "GET summary",
        "user",
        200,
        lambda c, p, w: c.get(f"/v1/folders/{p.folder['id']}/summary"),
    ),
    (
        "GET children",
        "user",
        200,
        lambda c, p, w: c.get("/v1/folders", params={"parent_id": p.folder["id"]}),
    ),
    (
        "GET collaborators",
        "user",
        200,
        lambda c, p, w: c.get(f"/v1/folders/{p.folder['id']}/collaborators"),
    ),
    ("GET file", "user", 200, lambda c, p, w: c.get(f"/v1/files/{p.file['id']}")),
    (
        "GET content",
        "user",
        200,
        lambda c, p, w: c.get(f"/v1/files/{p.file['id']}/content"),
    ),
    (
        "GET linked to",
        "user",
        200,
        lambda c, p, w: c.get(f"/v1/files/{p.file['id']}/datasets"),
    ),
    ("GET job", "user", 200, lambda c, p, w: c.get(f"/v1/jobs/{p.job_id}")),
    ("GET job files", "user", 200, lambda c, p, w: c.get(f"/v1/jobs/{p.job_id}/files")),
    ("GET job errors", "user", 200, lambda c, p, w: c.get(f"/v1/jobs/{p.job_id}/errors")),
    # An upload's job is done when it answers: past the check, nothing to cancel.
    ("POST job cancel", "editor", 409, lambda c, p, w: c.post(f"/v1/jobs/{p.job_id}/cancel")),
    (
        "POST dataset synced",
        "user",
        201,
        lambda c, p, w: c.post(
            "/v1/datasets", json={"name": unique("ds"), "synced_folder_id": p.folder["id"]}
        ),
    ),
    (
        "PATCH folder",
        "editor",
        200,
        lambda c, p, w: c.patch(
            f"/v1/folders/{p.folder['id']}", json={"description": unique("described")}
        ),
    ),
    (
        "POST subfolder",
        "editor",
        201,
        lambda c, p, w: c.post(
            "/v1/folders", json={"name": unique("child"), "parent_id": p.folder["id"]}
        ),
    ),
    (
        "POST upload",
        "editor",
        201,
        lambda c, p, w: c.post(
            f"/v1/folders/{p.folder['id']}/files",
            files=[("file", ("up.txt", b"uploaded\n", "text/plain"))],
        ),
    ),
    (
        "PATCH file",
        "editor",
        200,
        lambda c, p, w: c.patch(f"/v1/files/{p.file['id']}", json={"metadata": {"k": "v"}}),
    ),
    (
        "POST move (dry run)",
        "editor",
        200,
        lambda c, p, w: c.post(
            "/v1/move",
            json={
                "file_ids": [p.file["id"]],
                "target_folder_id": p.folder["id"],
                "dry_run": True,
            },
        ),
    ),
    (
        "POST delete (dry run)",
        "editor",
        200,
        lambda c, p, w: c.post(
            "/v1/delete", json={"folder_ids": [p.folder["id"]], "dry_run": True}
        ),
    ),
    (
        "POST collaborators",
        "admin",
        200,
        lambda c, p, w: c.post(
            f"/v1/folders/{p.folder['id']}/collaborators",
            json={"emails": [w.bystander["email"]], "role": "user"},
        ),
    ),
]


def expected(role: str, place: str, needed: str, success: int) -> int:
    if role == "org_admin":
        return success
    if role == "none" or place == "sibling":
        return 404
    return success if RANK[role] >= RANK[needed] else 403


@pytest.mark.parametrize(
    ("role", "place", "route"),
    list(itertools.product(ROLES, PLACES, [r[0] for r in ROUTES])),
)
async def test_status_by_role_and_place(
    stack: Any, world: World, role: str, place: str, route: str
) -> None:
    _, needed, success, call = next(r for r in ROUTES if r[0] == route)
    want = expected(role, place, needed, success)
    async with httpx.AsyncClient(
        base_url=stack.gateway_url,
        headers={"Authorization": f"Bearer {world.keys[role]}"},
        timeout=30,
    ) as client:
        answer = await call(client, world.places[place], world)
        if want == 404 and " job" in route:
            # Word for word the answer for no such job: the job's existence does not leak.
            ghost = str(uuid.uuid4())
            missing = await call(client, replace(world.places[place], job_id=ghost), world)
            as_ghost = answer.content.replace(world.places[place].job_id.encode(), ghost.encode())
            assert orjson.loads(as_ghost)["error"] == error(missing, 404), answer.text
    if want in (403, 404):
        found = error(answer, want)
        if want == 403:
            assert found["details"].get("role_needed") == needed, found
    else:
        assert answer.status_code == want, (role, place, route, answer.text)


@pytest.mark.parametrize(("role", "place"), list(itertools.product(ROLES, PLACES)))
async def test_deleting_a_file_needs_the_editor_role(
    api: httpx.AsyncClient, stack: Any, world: World, role: str, place: str
) -> None:
    file_id = await throwaway_file(api, world.places[place])
    async with httpx.AsyncClient(
        base_url=stack.gateway_url,
        headers={"Authorization": f"Bearer {world.keys[role]}"},
        timeout=30,
    ) as client:
        answer = await client.delete(f"/v1/files/{file_id}")
    want = expected(role, place, "editor", 204)
    if want == 204:
        assert answer.status_code == 204, answer.text
        error(await api.get(f"/v1/files/{file_id}"), 404)
    else:
        error(answer, want)
        assert (await api.get(f"/v1/files/{file_id}")).status_code == 200


@pytest.mark.parametrize("role", ROLES)
async def test_search_and_top_level_show_only_what_the_role_reaches(
    stack: Any, world: World, role: str
) -> None:
    async with httpx.AsyncClient(
        base_url=stack.gateway_url,
        headers={"Authorization": f"Bearer {world.keys[role]}"},
        timeout=30,
    ) as client:
        for place in PLACES:
            name = world.places[place].file["name"]
            found = await client.get("/v1/search", params={"q": name})
            assert found.status_code == 200, found.text
            ids = {i["id"] for i in found.json()["items"]}
            visible = role == "org_admin" or (role != "none" and place != "sibling")
            assert (world.places[place].file["id"] in ids) == visible, (role, place)
        tops = await client.get("/v1/folders", params={"limit": 1000})
        assert tops.status_code == 200, tops.text
        top_ids = {f["id"] for f in tops.json()["items"]}
        a = world.places["folder"].folder
        if role in ("user", "editor", "admin"):
            # Shared with them below someone else's top folder: it is their top level,
            # and its path starts there (the names above are not theirs to read).
            assert a["id"] in top_ids
            shown = next(f for f in tops.json()["items"] if f["id"] == a["id"])
            assert [p["id"] for p in shown["path"]] == [a["id"]]
            assert shown["my_role"] == role
        elif role == "none":
            assert a["id"] not in top_ids
        else:
            assert a["parent_id"] in top_ids
