"""A property: whatever the tree, the grants and the moves, search and listings
never show a member a file they may not see, and show every one they may.

Hypothesis draws a tree of folders (each with a file), grants for a new member
on some of them and moves of folders within the tree; a model says which files
the member may see (a grant reaches everything below its folder, after the moves).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ADMIN_KEY
from tests.e2e.support import folder, text, unique, upload

ROLES = ("user", "editor", "admin")


@dataclass(frozen=True)
class Plan:
    parents: list[int]  # parent index of each folder, -1 for the example's root
    grants: list[tuple[int, str]]
    moves: list[tuple[int, int]]  # (folder, new parent or -1)


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    size = draw(st.integers(2, 6))
    parents = [draw(st.integers(-1, i - 1)) for i in range(size)]
    grants = draw(st.lists(st.tuples(st.integers(0, size - 1), st.sampled_from(ROLES)), max_size=3))
    moves = draw(
        st.lists(st.tuples(st.integers(0, size - 1), st.integers(-1, size - 1)), max_size=3)
    )
    return Plan(parents, grants, moves)


def ancestors(parents: list[int], i: int) -> list[int]:
    chain = [i]
    while parents[chain[-1]] != -1:
        chain.append(parents[chain[-1]])
    return chain


@pytest.fixture(scope="module")
async def admin(stack: Any) -> Any:
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
    ) as client:
        yield client


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(plan=plans())
async def test_members_see_exactly_what_their_grants_reach(
    stack: Any, admin: httpx.AsyncClient, plan: Plan
) -> None:
    tag = unique("prop")
    root = await folder(admin, tag)
    ids: list[str] = []
    files: list[str] = []
    for i, parent in enumerate(plan.parents):
        made = await folder(admin, f"f{i}", ids[parent] if parent >= 0 else root["id"])
        ids.append(made["id"])
        uploaded = await upload(admin, made["id"], (f"{tag}-{i}.txt", text(str(i))))
        files.append(uploaded["files"][0]["id"])

    member = await admin.post(
        "/v1/users",
        json={"email": f"{tag}@example.com", "name": "member", "org_role": "member"},
    )
    assert member.status_code == 201, member.text
    for i, role in plan.grants:
        answer = await admin.post(
            f"/v1/folders/{ids[i]}/collaborators",
            json={"emails": [f"{tag}@example.com"], "role": role},
        )
        assert answer.status_code in (200, 409), answer.text

    parents = list(plan.parents)
    for moving, to in plan.moves:
        if to != -1 and moving in ancestors(parents, to):
            continue  # into itself or below itself: refused, and not what is tested
        target = ids[to] if to >= 0 else root["id"]
        answer = await admin.post(
            "/v1/move", json={"folder_ids": [ids[moving]], "target_folder_id": target}
        )
        if answer.status_code == 409:  # a sibling of that name is there already
            continue
        assert answer.status_code == 200, answer.text
        parents[moving] = to

    granted = {i for i, _ in plan.grants}
    visible = {i for i in range(len(ids)) if granted & set(ancestors(parents, i))}

    async with httpx.AsyncClient(
        base_url=stack.gateway_url,
        headers={"Authorization": f"Bearer {member.json()['api_key']}"},
        timeout=30,
    ) as client:
        found = await client.get("/v1/search", params={"q": tag, "limit": 1000})
        assert found.status_code == 200, found.text
        shown = {i["id"] for i in found.json()["items"] if i["type"] == "file"}
        assert shown == {files[i] for i in visible}, (plan, parents)

        tops = await client.get("/v1/folders", params={"limit": 1000})
        assert tops.status_code == 200, tops.text
        mine = {f["id"] for f in tops.json()["items"]} & set(ids)
        # The top level shows each granted folder that no other grant reaches from above.
        assert mine == {ids[i] for i in visible if not granted & set(ancestors(parents, i)[1:])}, (
            plan,
            parents,
        )

        for i, folder_id in enumerate(ids):
            listed = await client.get(f"/v1/folders/{folder_id}/items", params={"limit": 1000})
            if i in visible:
                assert listed.status_code == 200, listed.text
                listed_files = {x["id"] for x in listed.json()["items"] if x["type"] == "file"}
                assert listed_files == {files[i]}
            else:
                assert listed.status_code == 404, listed.text
