"""Who may see and do what in the datasets context, and sharing a dataset.

The datasets service is called directly, with the token the gateway signs for a
caller (their id and access). Folders, files and users are made through
the gateway with the admin key. The member of these tests has the `user` role on
folder `a` (and so on `a/sub`) and none on its sibling `b`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import httpx
import pytest

from services.gateway.files_pb.files.v1 import files_pb2 as pb
from services.gateway.files_pb.files.v1 import files_pb2_grpc as rpc
from shared.kit import db
from shared.kit.access import Access
from shared.kit.stack import Stack
from tests.conftest import ADMIN_KEY, eventually
from tests.e2e.support import CONSISTENCY, error, folder, text, unique, upload
from tests.signing import Signed, as_user, sign_as_gateway


@dataclass
class World:
    datasets: httpx.AsyncClient  # the datasets service, no headers of its own
    parent: str
    a: str  # the member sees it
    sub: str  # below a
    b: str  # a's sibling: the member does not see it
    in_a: list[str]  # files in a
    in_sub: list[str]  # files in a/sub
    in_b: list[str]  # files in b
    member: dict[str, Any]  # users made through the gateway (id, email)
    other: dict[str, Any]
    third: dict[str, Any]

    def as_member(self) -> Signed:
        return headers(self.member["id"], grants={uuid.UUID(self.a): "user"})

    def as_other(self) -> Signed:
        return headers(self.other["id"])

    def as_third(self) -> Signed:
        return headers(self.third["id"])


def headers(
    user_id: str, *, org_admin: bool = False, grants: dict[uuid.UUID, str] | None = None
) -> Signed:
    return as_user(user_id, Access(user_id=user_id, org_admin=org_admin, grants=grants or {}))


# An org admin who did not create any of these datasets.
ORG_ADMIN_ID = str(uuid.uuid4())
ORG_ADMIN = headers(ORG_ADMIN_ID, org_admin=True)


async def user(api: httpx.AsyncClient, prefix: str) -> dict[str, Any]:
    answer = await api.post(
        "/v1/users", json={"email": f"{unique(prefix)}@example.com", "name": prefix}
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


async def mirrored(pool: asyncpg.Pool, where: dict[str, list[str]]) -> bool:
    """Whether the datasets' mirror has each file below each of its folders' paths."""
    for top, file_ids in where.items():
        found = await pool.fetchval(
            """SELECT count(*) FROM datasets.files f
               JOIN datasets.folders fo ON fo.id = f.folder_id
               WHERE f.id = ANY($1::uuid[]) AND fo.path @> ARRAY[$2::uuid]""",
            file_ids,
            top,
        )
        if found != len(file_ids):
            return False
    return True


@pytest.fixture(scope="module")
async def world(stack: Stack) -> AsyncIterator[World]:
    async with (
        httpx.AsyncClient(
            base_url=stack.gateway_url,
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=30,
        ) as api,
        httpx.AsyncClient(
            base_url=stack.env["FILES_DATASETS_URL"],
            timeout=30,
            event_hooks={"request": [sign_as_gateway]},
        ) as datasets,
    ):
        parent = await folder(api, unique("ds-access"))
        a = await folder(api, "a", parent["id"])
        sub = await folder(api, "sub", a["id"])
        b = await folder(api, "b", parent["id"])

        async def files(folder_id: str, n: int, prefix: str) -> list[str]:
            sent = await upload(
                api, folder_id, *((f"{prefix}{i}.txt", text(prefix)) for i in range(n))
            )
            return [f["id"] for f in sent["files"]]

        in_a, in_sub, in_b = (
            await files(a["id"], 7, "a"),
            await files(sub["id"], 2, "s"),
            await files(b["id"], 6, "b"),
        )
        pool = await db.connect_pool(stack.env["FILES_DATABASE_URL"], max_size=2)
        try:
            where = {a["id"]: in_a + in_sub, sub["id"]: in_sub, b["id"]: in_b}
            await eventually(lambda: mirrored(pool, where), what="the datasets' mirror")
        finally:
            await pool.close()
        yield World(
            datasets=datasets,
            parent=parent["id"],
            a=a["id"],
            sub=sub["id"],
            b=b["id"],
            in_a=in_a,
            in_sub=in_sub,
            in_b=in_b,
            member=await user(api, "member"),
            other=await user(api, "other"),
            third=await user(api, "third"),
        )


# -- helpers over the datasets service -------------------------------------------------


async def create(w: World, as_: Signed, **fields: Any) -> dict[str, Any]:
    answer = await w.datasets.post(
        "/v1/datasets", json={"name": unique("ds"), **fields}, headers=as_
    )
    assert answer.status_code == 201, answer.text
    assert answer.headers.get(CONSISTENCY)
    return dict(answer.json())


async def get(w: World, as_: Signed, dataset_id: str) -> httpx.Response:
    return await w.datasets.get(f"/v1/datasets/{dataset_id}", headers=as_)


async def add(w: World, as_: Signed, dataset_id: str, ids: list[str]) -> httpx.Response:
    return await w.datasets.post(
        f"/v1/datasets/{dataset_id}/files", json={"file_ids": ids}, headers=as_
    )


async def added(w: World, as_: Signed, dataset_id: str, ids: list[str]) -> int:
    answer = await add(w, as_, dataset_id, ids)
    assert answer.status_code == 200, answer.text
    return int(answer.json()["added"])


async def share(
    w: World, as_: Signed, dataset_id: str, emails: list[str], role: str
) -> httpx.Response:
    return await w.datasets.post(
        f"/v1/datasets/{dataset_id}/collaborators",
        json={"emails": emails, "role": role},
        headers=as_,
    )


async def shared(
    w: World, as_: Signed, dataset_id: str, emails: list[str], role: str
) -> list[dict[str, Any]]:
    answer = await share(w, as_, dataset_id, emails, role)
    assert answer.status_code == 200, answer.text
    assert answer.headers.get(CONSISTENCY)
    body = answer.json()
    assert set(body) == {"items", "next_cursor"} and body["next_cursor"] is None, body
    return list(body["items"])


async def collaborators(w: World, as_: Signed, dataset_id: str) -> dict[str, str]:
    answer = await w.datasets.get(f"/v1/datasets/{dataset_id}/collaborators", headers=as_)
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    roles = {i["user_id"]: i["role"] for i in items}
    assert len(roles) == len(items), "a collaborator came twice"
    return roles


async def visible(w: World, as_: Signed) -> dict[str, str | None]:
    """Every dataset the caller lists, page by page: {id: my_role}."""
    found: dict[str, str | None] = {}
    cursor = None
    for _ in range(10_000):
        params: dict[str, Any] = {"limit": 50, **({"cursor": cursor} if cursor else {})}
        answer = await w.datasets.get("/v1/datasets", params=params, headers=as_)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        for item in page["items"]:
            assert item["id"] not in found
            found[item["id"]] = item["my_role"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    return found


async def file_ids(w: World, as_: Signed, dataset_id: str, limit: int = 100) -> list[str]:
    """Every file id a caller gets, page by page; every page but the last is full."""
    found: list[str] = []
    cursor = None
    for _ in range(10_000):
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        answer = await w.datasets.get(
            f"/v1/datasets/{dataset_id}/files", params=params, headers=as_
        )
        assert answer.status_code == 200, answer.text
        page = answer.json()
        cursor = page["next_cursor"]
        assert len(page["file_ids"]) == limit if cursor else len(page["file_ids"]) <= limit
        found += page["file_ids"]
        if cursor is None:
            break
    assert len(found) == len(set(found)), "a file came twice across pages"
    return found


async def linked(w: World, as_: Signed, file_id: str) -> httpx.Response:
    return await w.datasets.get(f"/v1/files/{file_id}/datasets", headers=as_)


# -- rule 1 and 4: who sees a dataset ------------------------------------------------------


async def test_a_dataset_is_seen_by_its_creator_org_admins_and_those_it_is_shared_with(
    world: World,
) -> None:
    w = world
    mine = await create(w, w.as_member(), description="the member's")
    assert mine["my_role"] == "admin"
    assert mine["created_by"] == w.member["id"]
    assert (await get(w, w.as_member(), mine["id"])).json() == mine

    as_admin = (await get(w, ORG_ADMIN, mine["id"])).json()
    # The change key is each caller's: the org admin's is the dataset's version.
    assert {**as_admin, "version": None} == {**mine, "my_role": "admin", "version": None}

    # Someone else: it does not exist, on every route.
    ds = f"/v1/datasets/{mine['id']}"
    other = w.as_other()
    for answer in (
        await w.datasets.get(ds, headers=other),
        await w.datasets.patch(ds, json={"name": "x"}, headers=other),
        await w.datasets.delete(ds, headers=other),
        await w.datasets.get(f"{ds}/files", headers=other),
        await add(w, other, mine["id"], w.in_a),
        await w.datasets.delete(f"{ds}/files/{w.in_a[0]}", headers=other),
        await w.datasets.get(f"{ds}/collaborators", headers=other),
        await share(w, other, mine["id"], [w.third["email"]], "user"),
        await w.datasets.delete(f"{ds}/collaborators/{w.third['id']}", headers=other),
    ):
        assert error(answer, 404, "not_found")["message"] == (
            f"dataset {mine['id']} does not exist"
        )
    unknown = str(uuid.uuid4())
    assert error(await get(w, other, unknown), 404)["message"] == (
        f"dataset {unknown} does not exist"
    )

    # Listing: only what each one sees, with their role.
    theirs = await create(w, other)
    member_sees = await visible(w, w.as_member())
    assert member_sees.get(mine["id"]) == "admin"
    assert theirs["id"] not in member_sees
    other_sees = await visible(w, other)
    assert mine["id"] not in other_sees and other_sees.get(theirs["id"]) == "admin"
    admin_sees = await visible(w, ORG_ADMIN)
    assert admin_sees.get(mine["id"]) == admin_sees.get(theirs["id"]) == "admin"

    # Shared: now the other sees it, as what it was shared as.
    await shared(w, w.as_member(), mine["id"], [w.other["email"]], "user")
    assert (await get(w, other, mine["id"])).json()["my_role"] == "user"
    assert (await visible(w, other)).get(mine["id"]) == "user"
    assert (await visible(w, w.as_third())).get(mine["id"]) is None


async def test_no_caller_is_401(world: World) -> None:
    error(await world.datasets.get("/v1/datasets"), 401, "unauthenticated")


# -- rule 2 and 3: sharing and what each role may do ---------------------------------------


async def test_sharing_roles_and_what_each_may_do(world: World) -> None:
    w = world
    ds = await create(w, ORG_ADMIN)
    path = f"/v1/datasets/{ds['id']}"
    member = w.as_member()
    assert await added(w, ORG_ADMIN, ds["id"], w.in_a[:2]) == 2

    # user: sees it and its files; may change nothing.
    items = await shared(w, ORG_ADMIN, ds["id"], [w.member["email"]], "viewer")
    assert items[0] == {"user_id": ORG_ADMIN_ID, "role": "admin"}
    # Named, for a member who cannot list users (the ACL context's emails and names).
    named = {"email": w.member["email"], "name": w.member["name"]}
    assert {"user_id": w.member["id"], "role": "user", **named} in items
    assert (await get(w, member, ds["id"])).json()["my_role"] == "user"
    assert sorted(await file_ids(w, member, ds["id"])) == sorted(w.in_a[:2])
    assert await collaborators(w, member, ds["id"]) == {
        ORG_ADMIN_ID: "admin",
        w.member["id"]: "user",
    }
    forbidden = error(await w.datasets.patch(path, json={"name": "x"}, headers=member), 403)
    assert forbidden["code"] == "forbidden"
    assert forbidden["details"] == {"role_needed": "editor", "role": "user"}
    error(await add(w, member, ds["id"], w.in_a[2:3]), 403, "forbidden")
    error(await w.datasets.delete(f"{path}/files/{w.in_a[0]}", headers=member), 403)
    some = {"file_ids": w.in_a[:1]}
    error(await w.datasets.post(f"{path}/files/remove", json=some, headers=member), 403)
    error(await w.datasets.delete(path, headers=member), 403)
    error(await share(w, member, ds["id"], [w.third["email"]], "user"), 403)
    error(await w.datasets.delete(f"{path}/collaborators/{w.member['id']}", headers=member), 403)

    # editor (sharing again changes the role): files, name, description; not delete, share.
    await shared(w, ORG_ADMIN, ds["id"], [w.member["email"]], "editor")
    assert await collaborators(w, ORG_ADMIN, ds["id"]) == {
        ORG_ADMIN_ID: "admin",
        w.member["id"]: "editor",
    }
    renamed = await w.datasets.patch(path, json={"description": "edited"}, headers=member)
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["description"] == "edited" and renamed.json()["my_role"] == "editor"
    assert await added(w, member, ds["id"], w.in_a[2:3]) == 1
    gone = await w.datasets.delete(f"{path}/files/{w.in_a[0]}", headers=member)
    assert gone.status_code == 204, gone.text
    needs_admin = error(await w.datasets.delete(path, headers=member), 403)
    assert needs_admin["details"] == {"role_needed": "admin", "role": "editor"}
    error(await share(w, member, ds["id"], [w.third["email"]], "user"), 403)

    # admin: shares, unshares, deletes.
    await shared(w, ORG_ADMIN, ds["id"], [w.member["email"]], "admin")
    items = await shared(w, member, ds["id"], [w.third["email"], w.other["email"]], "editor")
    assert {i["user_id"]: i["role"] for i in items} == {
        ORG_ADMIN_ID: "admin",
        w.member["id"]: "admin",
        w.third["id"]: "editor",
        w.other["id"]: "editor",
    }
    assert (await get(w, w.as_third(), ds["id"])).json()["my_role"] == "editor"
    unshared = await w.datasets.delete(f"{path}/collaborators/{w.third['id']}", headers=member)
    assert unshared.status_code == 204, unshared.text
    assert unshared.headers.get(CONSISTENCY)
    error(await get(w, w.as_third(), ds["id"]), 404)
    assert w.third["id"] not in await collaborators(w, member, ds["id"])
    error(await w.datasets.delete(f"{path}/collaborators/{w.third['id']}", headers=member), 404)
    # The creator stays its admin.
    creator = ORG_ADMIN_ID
    error(
        await w.datasets.delete(f"{path}/collaborators/{creator}", headers=member),
        409,
        "creator_stays_admin",
    )
    deleted = await w.datasets.delete(path, headers=member)
    assert deleted.status_code == 204, deleted.text
    error(await get(w, ORG_ADMIN, ds["id"]), 404)


async def test_the_creator_is_admin_and_sharing_with_them_changes_nothing(world: World) -> None:
    w = world
    ds = await create(w, w.as_member())
    items = await shared(w, w.as_member(), ds["id"], [w.member["email"]], "user")
    named = {"email": w.member["email"], "name": w.member["name"]}
    assert items == [{"user_id": w.member["id"], "role": "admin", **named}]
    assert (await get(w, w.as_member(), ds["id"])).json()["my_role"] == "admin"


async def test_unknown_emails_and_roles_share_with_nobody(world: World) -> None:
    w = world
    ds = await create(w, w.as_member())
    nobody = f"{unique('nobody')}@example.com"
    refused = error(
        await share(w, w.as_member(), ds["id"], [w.other["email"], nobody], "user"),
        422,
        "unknown_emails",
    )
    assert refused["details"]["unknown_emails"] == [nobody]
    error(await share(w, w.as_member(), ds["id"], [w.other["email"]], "owner"), 422, "invalid_role")
    error(await share(w, w.as_member(), ds["id"], [], "user"), 422)
    assert await collaborators(w, w.as_member(), ds["id"]) == {w.member["id"]: "admin"}
    error(await get(w, w.as_other(), ds["id"]), 404)


# -- rule 5 and 6: files need a role on their folder ---------------------------------------


async def test_files_the_caller_cannot_see_are_refused_like_unknown_ones(world: World) -> None:
    w = world
    ds = await create(w, w.as_member())
    unknown = str(uuid.uuid4())
    hidden = error(await add(w, w.as_member(), ds["id"], [w.in_a[0], w.in_b[0]]), 404)
    missing = error(await add(w, w.as_member(), ds["id"], [w.in_a[0], unknown]), 404)
    assert hidden["code"] == missing["code"] == "files_not_found"
    assert hidden["details"] == {"missing_file_ids": [w.in_b[0]], "missing": 1}
    assert missing["details"] == {"missing_file_ids": [unknown], "missing": 1}
    assert hidden["message"].replace(w.in_b[0], "?") == missing["message"].replace(unknown, "?")
    assert (await get(w, w.as_member(), ds["id"])).json()["file_count"] == 0  # nothing added

    # A role on a folder holds below it.
    assert await added(w, w.as_member(), ds["id"], [w.in_a[0], *w.in_sub]) == 3
    # An org admin sees every file; the member counts those they see.
    assert await added(w, ORG_ADMIN, ds["id"], [w.in_b[0]]) == 1
    assert (await get(w, w.as_member(), ds["id"])).json()["file_count"] == 3
    assert (await get(w, ORG_ADMIN, ds["id"])).json()["file_count"] == 4


async def test_removing_a_file_the_caller_cannot_see_is_404(world: World) -> None:
    w = world
    ds = await create(w, ORG_ADMIN)
    await added(w, ORG_ADMIN, ds["id"], [w.in_a[0], w.in_b[0]])
    await shared(w, ORG_ADMIN, ds["id"], [w.member["email"]], "editor")
    path = f"/v1/datasets/{ds['id']}/files"
    hidden = error(await w.datasets.delete(f"{path}/{w.in_b[0]}", headers=w.as_member()), 404)
    unknown = str(uuid.uuid4())
    missing = error(await w.datasets.delete(f"{path}/{unknown}", headers=w.as_member()), 404)
    assert hidden["code"] == missing["code"] == "not_found"
    assert hidden["message"].replace(w.in_b[0], "?") == missing["message"].replace(unknown, "?")
    # At once, in the service itself: the hidden file is refused as an unknown one,
    # and nothing of the request is removed.
    many = {"file_ids": [w.in_a[0], w.in_b[0]]}
    refused = error(await w.datasets.post(f"{path}/remove", json=many, headers=w.as_member()), 404)
    assert refused["code"] == "files_not_in_dataset"
    assert refused["details"]["missing_file_ids"] == [w.in_b[0]]
    assert sorted(await file_ids(w, ORG_ADMIN, ds["id"])) == sorted([w.in_a[0], w.in_b[0]])
    gone = await w.datasets.delete(f"{path}/{w.in_a[0]}", headers=w.as_member())
    assert gone.status_code == 204, gone.text
    assert await file_ids(w, ORG_ADMIN, ds["id"]) == [w.in_b[0]]


# -- rule 7: a dataset's files, as far as the caller sees them ---------------------------


@pytest.mark.parametrize("limit", [1, 2, 3, 100])
async def test_a_datasets_files_are_those_the_caller_sees_page_by_page(
    world: World, limit: int
) -> None:
    w = world
    ds = await create(w, ORG_ADMIN)
    everything = w.in_a + w.in_sub + w.in_b
    assert await added(w, ORG_ADMIN, ds["id"], everything) == len(everything)
    await shared(w, ORG_ADMIN, ds["id"], [w.member["email"]], "user")
    seen = await file_ids(w, w.as_member(), ds["id"], limit)
    assert seen == sorted(w.in_a + w.in_sub)
    assert await file_ids(w, ORG_ADMIN, ds["id"], limit) == sorted(everything)
    # The count is of the files each one sees, as the list shows them.
    assert (await get(w, w.as_member(), ds["id"])).json()["file_count"] == len(seen)
    assert (await get(w, ORG_ADMIN, ds["id"])).json()["file_count"] == len(everything)
    # Shared with someone who sees no folder: the dataset, and no file.
    await shared(w, ORG_ADMIN, ds["id"], [w.other["email"]], "user")
    assert await file_ids(w, w.as_other(), ds["id"], limit) == []
    assert (await get(w, w.as_other(), ds["id"])).json()["file_count"] == 0


# -- rule 8: "linked to" ------------------------------------------------------------------


async def test_linked_to_lists_only_the_datasets_the_caller_sees(world: World) -> None:
    w = world
    file_id = w.in_a[1]
    private = await create(w, ORG_ADMIN, name=unique("private"))
    shared_one = await create(w, ORG_ADMIN, name=unique("shared"))
    own = await create(w, w.as_member(), name=unique("own"))
    for ds in (private, shared_one, own):
        await added(w, ORG_ADMIN, ds["id"], [file_id, w.in_b[1]])
    await shared(w, ORG_ADMIN, shared_one["id"], [w.member["email"]], "user")

    answer = await linked(w, w.as_member(), file_id)
    assert answer.status_code == 200, answer.text
    listed = {d["id"] for d in answer.json()["items"]}
    assert {shared_one["id"], own["id"]} <= listed and private["id"] not in listed
    # With their role on each: what they may do there (the web app offers Remove to
    # an Editor of it only).
    roles = {d["id"]: d["my_role"] for d in answer.json()["items"]}
    assert (roles[shared_one["id"]], roles[own["id"]]) == ("user", "admin")
    # Other tests link this file too: the member sees only datasets they may see.
    assert listed <= set(await visible(w, w.as_member()))
    everyone = {d["id"] for d in (await linked(w, ORG_ADMIN, file_id)).json()["items"]}
    assert {private["id"], shared_one["id"], own["id"]} <= everyone
    # A file the caller cannot see does not exist for them.
    error(await linked(w, w.as_member(), w.in_b[1]), 404, "not_found")


# -- rule 9: syncing with a folder --------------------------------------------------------


async def test_a_synced_dataset_needs_a_role_on_its_folder(world: World) -> None:
    w = world
    synced = await create(w, w.as_member(), synced_folder_id=w.a)
    assert synced["synced_folder_id"] == w.a
    assert synced["file_count"] == len(w.in_a) + len(w.in_sub)

    body = {"name": unique("ds"), "synced_folder_id": w.b}
    hidden = error(await w.datasets.post("/v1/datasets", json=body, headers=w.as_member()), 404)
    unknown = str(uuid.uuid4())
    body = {"name": unique("ds"), "synced_folder_id": unknown}
    missing = error(await w.datasets.post("/v1/datasets", json=body, headers=w.as_member()), 404)
    assert hidden["code"] == missing["code"] == "not_found"
    assert hidden["message"].replace(w.b, "?") == missing["message"].replace(unknown, "?")
    assert (await create(w, ORG_ADMIN, synced_folder_id=w.b))["file_count"] == len(w.in_b)


# -- rule 10: impact is internal and unrestricted -----------------------------------------


async def test_impact_is_not_restricted(world: World) -> None:
    w = world
    ds = await create(w, w.as_member())
    await added(w, ORG_ADMIN, ds["id"], [w.in_b[2]])
    answer = await w.datasets.post("/internal/impact", json={"file_ids": [w.in_b[2]]})
    assert answer.status_code == 200, answer.text
    assert {"id": ds["id"], "name": ds["name"], "links_removed": 1} in answer.json()["datasets"]


# -- rule 7, as a member sees it through the gateway (HTTP and gRPC) ------------------------


async def test_file_count_through_the_gateway_counts_only_the_files_the_caller_sees(
    stack: Stack,
) -> None:
    """A dataset linking files of a folder its member cannot see: `file_count` on every
    route that shows the dataset (HTTP and gRPC) is the number of files its file list
    shows them, not how many there are; the org admin sees them all. Its creator too
    counts only what they see: removed from the folder, they see 0."""
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
    ) as api:
        top = await folder(api, unique("count-leak"))
        seen = await folder(api, "seen", top["id"])
        hidden = await folder(api, "hidden", top["id"])
        in_seen = await upload(api, seen["id"], *((f"s{i}.txt", text("s")) for i in range(2)))
        in_hidden = await upload(api, hidden["id"], *((f"h{i}.txt", text("h")) for i in range(5)))
        made = await user(api, "counter")
        invited = await api.post(
            f"/v1/folders/{seen['id']}/collaborators",
            json={"emails": [made["email"]], "role": "editor"},
        )
        assert invited.status_code == 200, invited.text
        async with httpx.AsyncClient(
            base_url=stack.gateway_url,
            headers={"Authorization": f"Bearer {made['api_key']}"},
            timeout=30,
        ) as member_api:
            # The member makes the dataset (its admin) with the files they see ...
            created = await member_api.post("/v1/datasets", json={"name": unique("counted")})
            assert created.status_code == 201, created.text
            ds = created.json()
            linked = await member_api.post(
                f"/v1/datasets/{ds['id']}/files",
                json={"file_ids": [f["id"] for f in in_seen["files"]]},
            )
            assert linked.status_code == 200, linked.text
            # ... and an org admin links 5 more, from a folder the member cannot see.
            more = await api.post(
                f"/v1/datasets/{ds['id']}/files",
                json={"file_ids": [f["id"] for f in in_hidden["files"]]},
                headers={CONSISTENCY: linked.headers[CONSISTENCY]},
            )
            assert more.status_code == 200, more.text
            after = {CONSISTENCY: more.headers[CONSISTENCY]}

            listed = await member_api.get(f"/v1/datasets/{ds['id']}/files", headers=after)
            assert listed.status_code == 200, listed.text
            assert len(listed.json()["items"]) == 2
            one = await member_api.get(f"/v1/datasets/{ds['id']}", headers=after)
            assert one.json()["file_count"] == 2, one.json()
            everyone = await member_api.get("/v1/datasets", params={"limit": 1000}, headers=after)
            [mine] = [d for d in everyone.json()["items"] if d["id"] == ds["id"]]
            assert mine["file_count"] == 2
            as_admin = await api.get(f"/v1/datasets/{ds['id']}", headers=after)
            assert as_admin.json()["file_count"] == 7

            async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
                stub = rpc.DatasetsStub(channel)
                by_key = (("authorization", f"Bearer {made['api_key']}"),)
                got = await stub.GetDataset(
                    pb.GetDatasetRequest(dataset_id=ds["id"]), metadata=by_key
                )
                assert got.file_count == 2
                page = await stub.ListDatasets(pb.ListDatasetsRequest(limit=1000), metadata=by_key)
                assert [d.file_count for d in page.items if d.id == ds["id"]] == [2]

            # The creator loses their role on the folder: they see none of its files.
            removed = await api.delete(f"/v1/folders/{seen['id']}/collaborators/{made['id']}")
            assert removed.status_code == 204, removed.text
            gone = {CONSISTENCY: removed.headers[CONSISTENCY]}

            async def counted_none() -> bool:
                answer = await member_api.get(f"/v1/datasets/{ds['id']}", headers=gone)
                return bool(answer.json()["file_count"] == 0)

            await eventually(counted_none, what="the creator's count without the folder")
            listed = await member_api.get(f"/v1/datasets/{ds['id']}/files", headers=gone)
            assert listed.json()["items"] == []


# -- the change key (`version`): only of what the caller sees -------------------------------


async def test_a_members_change_key_moves_only_with_what_they_see(
    world: World, stack: Stack
) -> None:
    """A member with a role on a dataset and none on its synced folder: files coming into
    that folder (linked by the sync) and leaving it leave their `version` as it was, as
    they leave their count; a file they see linked or unlinked, or moved out with another
    in (the count as it was), changes it. The org admin, who sees every file, watches
    the dataset's own version."""
    w = world
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
    ) as api:
        hidden = await folder(api, "hidden-synced", w.parent)
        made: list[dict[str, Any]] = []

        async def synced_made() -> bool:
            # Once the datasets' mirror knows the folder.
            answer = await w.datasets.post(
                "/v1/datasets",
                json={"name": unique("ds"), "synced_folder_id": hidden["id"]},
                headers=ORG_ADMIN,
            )
            made.extend([answer.json()] if answer.status_code == 201 else [])
            return answer.status_code == 201

        await eventually(synced_made, what="a dataset synced with the new folder")
        [ds] = made
        await shared(w, ORG_ADMIN, ds["id"], [w.member["email"]], "user")
        assert await added(w, ORG_ADMIN, ds["id"], [w.in_a[0]]) == 1

        async def seen(as_: Signed) -> dict[str, Any]:
            one = (await get(w, as_, ds["id"])).json()
            listed = await w.datasets.get("/v1/datasets", params={"limit": 1000}, headers=as_)
            [item] = [d for d in listed.json()["items"] if d["id"] == ds["id"]]
            assert item["version"] == one["version"], (item, one)
            return dict(one)

        before = await seen(w.as_member())
        admin_before = (await seen(ORG_ADMIN))["version"]
        assert before["file_count"] == 1

        # Files uploaded one by one into the synced folder the member does not see.
        for i in range(3):
            await upload(api, hidden["id"], (f"h{i}.txt", text("h")))

        async def all_linked() -> bool:
            return bool((await get(w, ORG_ADMIN, ds["id"])).json()["file_count"] == 4)

        await eventually(all_linked, what="the synced folder's uploads linked")
        assert (await seen(ORG_ADMIN))["version"] != admin_before
        assert await seen(w.as_member()) == before
        # One of them unlinked: still nothing the member sees.
        [gone, *_] = [f for f in await file_ids(w, ORG_ADMIN, ds["id"]) if f != w.in_a[0]]
        removed = await w.datasets.delete(
            f"/v1/datasets/{ds['id']}/files/{gone}", headers=ORG_ADMIN
        )
        assert removed.status_code == 204, removed.text
        assert await seen(w.as_member()) == before

        # A file they see linked, then unlinked: it changes each time.
        assert await added(w, ORG_ADMIN, ds["id"], [w.in_a[1]]) == 1
        with_one = await seen(w.as_member())
        assert with_one["file_count"] == 2 and with_one["version"] != before["version"]
        removed = await w.datasets.delete(
            f"/v1/datasets/{ds['id']}/files/{w.in_a[1]}", headers=ORG_ADMIN
        )
        assert removed.status_code == 204, removed.text
        back = await seen(w.as_member())
        assert back["file_count"] == 1 and back["version"] != with_one["version"]
        # One moved out and another in: the count as it was, the key not.
        removed = await w.datasets.delete(
            f"/v1/datasets/{ds['id']}/files/{w.in_a[0]}", headers=ORG_ADMIN
        )
        assert removed.status_code == 204, removed.text
        assert await added(w, ORG_ADMIN, ds["id"], [w.in_sub[0]]) == 1
        swapped = await seen(w.as_member())
        assert swapped["file_count"] == 1 and swapped["version"] != back["version"]
