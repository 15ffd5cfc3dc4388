"""The ACL service driven directly over HTTP: collaborators, roles, keys, authentication.

The gateway's part (authenticating, asking the catalog for the folder's path) is
played here by the tests: they sign the caller's identity token, with the folder's
path in it, themselves, as the gateway does.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from shared.kit.access import Access
from shared.kit.stack import Stack
from tests.conftest import ADMIN_KEY, eventually
from tests.e2e.support import CONSISTENCY, error, unique
from tests.signing import Signed, as_user, sign_as_gateway


class Person:
    """A user as the gateway would present them to the ACL service."""

    def __init__(self, acl: httpx.AsyncClient, key: str, user: dict[str, Any]) -> None:
        self.acl = acl
        self.key = key
        self.id: str = user["id"]
        self.email: str = user["email"]

    async def headers(self, *path: str) -> Signed:
        """Fresh access (grants change under the tests), and the folder path if given."""
        me = await authenticate(self.acl, self.key)
        assert me is not None
        return as_user(self.id, me["access"], folder_path=",".join(path) if path else None)


@pytest.fixture
async def acl(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=stack.env["FILES_ACL_URL"],
        timeout=30,
        event_hooks={"request": [sign_as_gateway]},
    ) as client:
        yield client


@pytest.fixture
async def admin(acl: httpx.AsyncClient) -> Person:
    me = await authenticate(acl, ADMIN_KEY)
    assert me is not None
    return Person(acl, ADMIN_KEY, me)


async def authenticate(acl: httpx.AsyncClient, key: str) -> dict[str, Any] | None:
    answer = await acl.post("/internal/authenticate", json={"api_key": key})
    if answer.status_code == 401:
        return None
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


async def grants(acl: httpx.AsyncClient, key: str) -> dict[str, str]:
    """The folder grants the gateway would forward for this key: {folder id: role}."""
    me = await authenticate(acl, key)
    assert me is not None
    return {str(folder): role for folder, role in Access.decode(me["access"]).grants.items()}


async def person(acl: httpx.AsyncClient, admin: Person, name: str = "member") -> Person:
    answer = await acl.post(
        "/v1/users",
        json={"email": f"{unique(name)}@Example.com", "name": name},
        headers=await admin.headers(),
    )
    assert answer.status_code == 201, answer.text
    user = answer.json()
    return Person(acl, user.pop("api_key"), user)


async def invite(caller: Person, path: list[str], emails: list[str], role: str) -> httpx.Response:
    return await caller.acl.post(
        f"/v1/folders/{path[-1]}/collaborators",
        json={"emails": emails, "role": role},
        headers=await caller.headers(*path),
    )


async def listed(caller: Person, path: list[str]) -> list[dict[str, Any]]:
    answer = await caller.acl.get(
        f"/v1/folders/{path[-1]}/collaborators", headers=await caller.headers(*path)
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["next_cursor"] is None
    return list(body["items"])


def folders(depth: int = 1) -> list[str]:
    """A folder path of ids the ACL service is told about (it needs no catalog folder)."""
    return [str(uuid.uuid4()) for _ in range(depth)]


async def test_authenticate_answers_the_user_and_their_access(
    acl: httpx.AsyncClient, admin: Person
) -> None:
    me = await authenticate(acl, ADMIN_KEY)
    assert me is not None
    assert set(me) == {"id", "email", "name", "org_role", "created_at", "access", "key_id"}
    assert (me["org_role"], me["access"]) == ("admin", f"{me['id']};admin")
    alice = await person(acl, admin, "alice")
    found = await authenticate(acl, alice.key)
    assert found is not None and found["access"] == f"{alice.id};member;"
    assert await authenticate(acl, "files_not_a_key") is None
    # By the key's id (an upload session's opener, asked again by the gateway).
    by_id = await acl.post("/internal/authenticate", json={"key_id": found["key_id"]})
    assert by_id.status_code == 200, by_id.text
    assert by_id.json() == found
    unknown = await acl.post("/internal/authenticate", json={"key_id": str(uuid.uuid4())})
    assert unknown.status_code == 401, unknown.text


async def test_invite_list_change_and_remove(acl: httpx.AsyncClient, admin: Person) -> None:
    alice, bob = await person(acl, admin, "alice"), await person(acl, admin, "bob")
    root, child = path = folders(2)

    answer = await invite(admin, [root], [alice.email.upper()], "admin")  # case-insensitive
    assert answer.status_code == 200, answer.text
    assert answer.headers[CONSISTENCY].startswith("acl:")
    assert answer.json() == {
        "items": [
            {
                "user_id": alice.id,
                "email": alice.email.lower(),
                "name": "alice",
                "role": "admin",
                "inherited_from": None,
            }
        ],
        "next_cursor": None,
    }
    assert (await grants(acl, alice.key)) == {root: "admin"}

    # Alice is admin above the child: she manages its collaborators.
    answer = await invite(alice, path, [bob.email], "viewer")
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert [(i["user_id"], i["role"], i["inherited_from"]) for i in items] == [
        (alice.id, "admin", root),
        (bob.id, "user", None),
    ]
    assert await listed(bob, path) == items
    assert await grants(acl, bob.key) == {child: "user"}

    answer = await acl.patch(
        f"/v1/folders/{child}/collaborators/{bob.id}",
        json={"role": "editor"},
        headers=await alice.headers(*path),
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers[CONSISTENCY]
    assert answer.json() == {
        "user_id": bob.id,
        "email": bob.email.lower(),
        "name": "bob",
        "role": "editor",
        "inherited_from": None,
    }
    # Inviting someone who is already here changes their role.
    answer = await invite(alice, path, [bob.email], "user")
    assert [i["role"] for i in answer.json()["items"] if i["user_id"] == bob.id] == ["user"]

    answer = await acl.delete(
        f"/v1/folders/{child}/collaborators/{bob.id}", headers=await alice.headers(*path)
    )
    assert answer.status_code == 204, answer.text
    assert answer.headers[CONSISTENCY]
    assert [i["user_id"] for i in await listed(alice, path)] == [alice.id]
    assert await grants(acl, bob.key) == {}

    for gone in (
        acl.patch(
            f"/v1/folders/{child}/collaborators/{bob.id}",
            json={"role": "editor"},
            headers=await alice.headers(*path),
        ),
        acl.delete(
            f"/v1/folders/{child}/collaborators/{bob.id}", headers=await alice.headers(*path)
        ),
        # Alice's grant is on the root: on the child it is inherited, not direct.
        acl.delete(
            f"/v1/folders/{child}/collaborators/{alice.id}", headers=await admin.headers(*path)
        ),
    ):
        error(await gone, 404, "not_found")


async def test_a_folder_admin_stays_unless_an_org_admin_transfers_the_folder(
    acl: httpx.AsyncClient, admin: Person
) -> None:
    alice, carol = await person(acl, admin, "alice"), await person(acl, admin, "carol")
    path = folders(1)
    [folder] = path
    assert (await invite(admin, path, [alice.email], "admin")).status_code == 200
    assert (await invite(alice, path, [carol.email], "admin")).status_code == 200

    # Alice, a folder admin, can neither demote nor remove another admin, nor herself.
    for target in (carol, alice):
        for attempt in (
            acl.patch(
                f"/v1/folders/{folder}/collaborators/{target.id}",
                json={"role": "editor"},
                headers=await alice.headers(*path),
            ),
            acl.delete(
                f"/v1/folders/{folder}/collaborators/{target.id}",
                headers=await alice.headers(*path),
            ),
            invite(alice, path, [target.email], "user"),
        ):
            found = error(await attempt, 409, "admin_collaborator")
            assert "admin" in found["message"] and "cannot" in found["message"]

    # The organisation admin transfers the folder: demote one admin, remove the other.
    answer = await acl.patch(
        f"/v1/folders/{folder}/collaborators/{alice.id}",
        json={"role": "editor"},
        headers=await admin.headers(*path),
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["role"] == "editor"
    answer = await acl.delete(
        f"/v1/folders/{folder}/collaborators/{carol.id}", headers=await admin.headers(*path)
    )
    assert answer.status_code == 204, answer.text
    assert [(i["user_id"], i["role"]) for i in await listed(admin, path)] == [(alice.id, "editor")]


async def test_unknown_emails_add_no_one(acl: httpx.AsyncClient, admin: Person) -> None:
    alice = await person(acl, admin, "alice")
    path = folders(1)
    unknown = [f"{unique('nobody')}@example.com", f"{unique('NOBODY')}@example.com"]
    answer = await invite(admin, path, [alice.email, *unknown], "user")
    found = error(answer, 422, "unknown_emails")
    assert found["details"]["unknown_emails"] == [e.lower() for e in unknown]
    assert await listed(admin, path) == []
    # Text that is no address at all (the web app keeps it from "Add"; a client may not).
    found = error(await invite(admin, path, ["dog", alice.email], "user"), 422, "unknown_emails")
    assert found["details"]["unknown_emails"] == ["dog"]
    assert "dog" in found["message"]
    assert await listed(admin, path) == []

    error(await invite(admin, path, [alice.email], "owner"), 422, "invalid_role")
    error(await invite(admin, path, [], "user"), 422, "invalid_request")


async def test_an_editor_may_list_but_not_invite(acl: httpx.AsyncClient, admin: Person) -> None:
    bob, dave, eve = [await person(acl, admin, n) for n in ("bob", "dave", "eve")]
    root, child = path = folders(2)
    assert (await invite(admin, [root], [bob.email], "editor")).status_code == 200

    found = error(await invite(bob, path, [dave.email], "user"), 403, "forbidden")
    assert found["details"] == {"role_needed": "admin", "role": "editor"}
    assert "admin" in found["message"]
    assert [i["inherited_from"] for i in await listed(bob, path)] == [root]
    # Someone with no role there does not learn the folder exists.
    error(await invite(eve, path, [dave.email], "user"), 404, "not_found")
    answer = await acl.get(f"/v1/folders/{child}/collaborators", headers=await eve.headers(*path))
    error(answer, 404, "not_found")
    # The path comes from the gateway; without it, or not ending at the folder, 400.
    answer = await acl.get(f"/v1/folders/{child}/collaborators", headers=await bob.headers())
    error(answer, 400, "invalid_folder_path")
    answer = await acl.get(f"/v1/folders/{child}/collaborators", headers=await bob.headers(root))
    error(answer, 400, "invalid_folder_path")


async def test_the_creator_of_a_top_level_folder_is_its_admin_until_it_is_purged(
    stack: Stack, acl: httpx.AsyncClient, admin: Person, api: httpx.AsyncClient
) -> None:
    alice, bob = await person(acl, admin, "alice"), await person(acl, admin, "bob")
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, headers={"Authorization": f"Bearer {alice.key}"}, timeout=30
    ) as as_alice:
        answer = await as_alice.post("/v1/folders", json={"name": unique("mine")})
        # The answer says she is its admin, and the gateway waited for the grant: her
        # very next request may use the folder.
        assert answer.status_code == 201, answer.text
        assert answer.json()["my_role"] == "admin"
        upload = await as_alice.post(
            f"/v1/folders/{answer.json()['id']}/files",
            files=[("file", ("first.txt", b"first\n", "text/plain"))],
        )
        assert upload.status_code == 201, upload.text
    mine: dict[str, str] = {}

    async def granted() -> bool:
        mine.update(await grants(acl, alice.key))
        return bool(mine)

    await eventually(granted, what="the creator's admin grant")
    [(folder, role)] = mine.items()
    assert role == "admin"
    assert answer.json()["id"] == folder
    [creator] = await listed(alice, [folder])
    assert (creator["user_id"], creator["role"], creator["inherited_from"]) == (
        alice.id,
        "admin",
        None,
    )
    assert (await invite(alice, [folder], [bob.email], "editor")).status_code == 200
    assert await grants(acl, bob.key) == {folder: "editor"}

    # A subfolder gives its creator nothing new: the role above holds below.
    answer = await api.post("/v1/folders", json={"name": "below", "parent_id": folder})
    assert answer.status_code == 201, answer.text
    caught_up = await acl.get(
        "/internal/consistency", params={"token": answer.headers[CONSISTENCY], "timeout": 5}
    )
    assert caught_up.json()["caught_up"] is True
    assert await grants(acl, alice.key) == {folder: "admin"}

    async with httpx.AsyncClient(
        base_url=stack.gateway_url, headers={"Authorization": f"Bearer {alice.key}"}, timeout=30
    ) as as_alice:
        answer = await as_alice.delete(f"/v1/folders/{folder}")
        assert answer.status_code == 204, answer.text
        # In the trash, the folder keeps its grants: its collaborators may restore it.
        caught_up = await acl.get(
            "/internal/consistency", params={"token": answer.headers[CONSISTENCY], "timeout": 5}
        )
        assert caught_up.json()["caught_up"] is True
        assert await grants(acl, alice.key) == {folder: "admin"}
        assert await grants(acl, bob.key) == {folder: "editor"}
        # Emptied from her trash (what she could restore: her folder), the grants go.
        emptied = await as_alice.delete("/v1/trash")
        assert emptied.status_code == 200, emptied.text
        assert emptied.json()["purged_folders"] == 2  # hers and the one below

    async def dropped() -> bool:
        return folder not in await grants(acl, alice.key) | await grants(acl, bob.key)

    await eventually(dropped, what="grants dropped with the folder")
    assert await listed(admin, [folder]) == []


async def test_keys_are_issued_listed_and_revoked(acl: httpx.AsyncClient, admin: Person) -> None:
    dave, eve = await person(acl, admin, "dave"), await person(acl, admin, "eve")

    answer = await acl.post(f"/v1/users/{dave.id}/keys", headers=await dave.headers())
    assert answer.status_code == 201, answer.text
    assert answer.headers[CONSISTENCY]
    issued = answer.json()
    assert set(issued) == {"id", "user_id", "api_key", "created_at"}
    assert issued["user_id"] == dave.id
    me = await authenticate(acl, issued["api_key"])
    assert me is not None and me["id"] == dave.id

    # An org admin issues keys for anyone; someone else may not, nor see them.
    answer = await acl.post(f"/v1/users/{dave.id}/keys", headers=await admin.headers())
    assert answer.status_code == 201, answer.text
    found = error(
        await acl.post(f"/v1/users/{dave.id}/keys", headers=await eve.headers()), 403, "forbidden"
    )
    assert found["details"]["role_needed"] == "admin"
    error(await acl.get(f"/v1/users/{dave.id}/keys", headers=await eve.headers()), 403)
    error(await acl.post(f"/v1/users/{uuid.uuid4()}/keys", headers=await admin.headers()), 404)
    error(await acl.get(f"/v1/users/{uuid.uuid4()}/keys", headers=await admin.headers()), 404)

    answer = await acl.get(f"/v1/users/{dave.id}/keys", headers=await dave.headers())
    assert answer.status_code == 200, answer.text
    keys = answer.json()["items"]
    assert len(keys) == 3  # the one from creation and the two issued
    assert all(set(k) == {"id", "created_at", "revoked"} for k in keys)
    assert issued["id"] in {k["id"] for k in keys}
    assert "hash" not in answer.text and issued["api_key"] not in answer.text

    # Someone else's key is 404 to a member; revoking works at once, and twice is 204.
    error(await acl.delete(f"/v1/keys/{issued['id']}", headers=await eve.headers()), 404)
    error(await acl.delete(f"/v1/keys/{uuid.uuid4()}", headers=await dave.headers()), 404)
    answer = await acl.delete(f"/v1/keys/{issued['id']}", headers=await dave.headers())
    assert answer.status_code == 204, answer.text
    assert answer.headers[CONSISTENCY]
    assert await authenticate(acl, issued["api_key"]) is None
    answer = await acl.delete(f"/v1/keys/{issued['id']}", headers=await dave.headers())
    assert answer.status_code == 204, answer.text
    assert await authenticate(acl, dave.key) is not None
    keys = (await acl.get(f"/v1/users/{dave.id}/keys", headers=await admin.headers())).json()
    assert {k["id"]: k["revoked"] for k in keys["items"]}[issued["id"]] is True


async def test_users_are_listed_to_org_admins_and_looked_up_by_email(
    acl: httpx.AsyncClient, admin: Person
) -> None:
    alice = await person(acl, admin, "alice")
    seen: list[str] = []
    cursor = None
    for _ in range(10_000):
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        answer = await acl.get("/v1/users", params=params, headers=await admin.headers())
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert len(page["items"]) <= 2
        seen += [u["email"] for u in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(set(seen))
    assert {admin.email, alice.email.lower()} <= set(seen)
    error(await acl.get("/v1/users", headers=await alice.headers()), 403, "forbidden")
    error(
        await acl.get("/v1/users", params={"cursor": "nope"}, headers=await admin.headers()),
        400,
        "invalid_cursor",
    )

    nobody = f"{unique('nobody')}@example.com"
    answer = await acl.post(
        "/internal/users/lookup", json={"emails": [alice.email.upper(), nobody]}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"found": {alice.email.upper(): alice.id}, "unknown": [nobody]}
