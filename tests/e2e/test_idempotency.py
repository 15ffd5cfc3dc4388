"""Idempotency-Key on the public API: a write sent again with the same key is applied once
and answered as the first time; the same key on another request is refused; keys are
the caller's own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import grpc
import httpx

from services.gateway.files_pb.files.v1 import files_pb2 as pb
from shared.kit.stack import Stack
from tests.e2e.support import CONSISTENCY, error, folder, items, member, multipart, png, unique
from tests.e2e.test_grpc import ADMIN, Client

SIGN_IN = {"X-Files-CSRF": "1"}

KEY = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"


def keyed(key: str | None = None) -> dict[str, str]:
    return {KEY: key or str(uuid.uuid4())}


def same_answer(first: httpx.Response, again: httpx.Response) -> None:
    assert again.status_code == first.status_code, again.text
    assert again.content == first.content
    assert again.headers.get(CONSISTENCY) == first.headers.get(CONSISTENCY)
    assert again.headers.get("content-type") == first.headers.get("content-type")
    assert again.headers.get(REPLAYED) == "true"
    assert first.headers.get(REPLAYED) is None


async def top_level_named(api: httpx.AsyncClient, name: str) -> list[dict[str, Any]]:
    found, cursor = [], None
    while True:
        page = (
            await api.get(
                "/v1/folders", params={"limit": 1000, **({"cursor": cursor} if cursor else {})}
            )
        ).json()
        found += [f for f in page["items"] if f["name"] == name]
        cursor = page["next_cursor"]
        if cursor is None:
            return found


async def test_a_folder_created_twice_with_one_key_is_created_once(
    api: httpx.AsyncClient,
) -> None:
    name, headers = unique("idem-folder"), keyed()
    first = await api.post("/v1/folders", json={"name": name}, headers=headers)
    assert first.status_code == 201, first.text
    again = await api.post("/v1/folders", json={"name": name}, headers=headers)
    same_answer(first, again)
    assert len(await top_level_named(api, name)) == 1
    # The same key with another request is a mistake of the client's.
    other = await api.post("/v1/folders", json={"name": unique("idem-other")}, headers=headers)
    assert (
        "this Idempotency-Key was used for another request"
        in error(other, 422, "idempotency_key_reused")["message"]
    )
    moved = await api.patch(
        f"/v1/folders/{first.json()['id']}", json={"name": "x"}, headers=headers
    )
    error(moved, 422, "idempotency_key_reused")
    # Without a key, the same request is another request (a name clash here).
    error(await api.post("/v1/folders", json={"name": name}), 409, "name_taken")


async def test_an_upload_sent_again_is_stored_once_whatever_its_boundary(
    api: httpx.AsyncClient,
) -> None:
    top = await folder(api, unique("idem-upload"))
    headers = keyed()
    files = [("file", (f"{i}.png", png(8, 8 + i), "image/png")) for i in range(3)]
    path = f"/v1/folders/{top['id']}/files"
    first = await api.post(path, files=files, headers=headers)
    assert first.status_code == 201, first.text
    # httpx writes a new multipart boundary for each request, as most clients do.
    again = await api.post(path, files=files, headers=headers)
    same_answer(first, again)
    assert len(await items(api, top["id"])) == 3
    # The key covers the whole body: another file under the same key is refused.
    changed = [*files[:2], ("file", ("2.png", png(9, 9), "image/png"))]
    error(await api.post(path, files=changed, headers=headers), 422, "idempotency_key_reused")
    assert len(await items(api, top["id"])) == 3


async def test_deletes_patches_and_dataset_writes_apply_once(api: httpx.AsyncClient) -> None:
    top = await folder(api, unique("idem-writes"))
    body, content_type = multipart(("a.png", png()), ("b.png", png(9, 9)))
    headers = {**keyed(), "Content-Type": content_type["Content-Type"]}
    uploaded = await api.post(f"/v1/folders/{top['id']}/files", content=body, headers=headers)
    assert uploaded.status_code == 201, uploaded.text
    a, b = (f["id"] for f in uploaded.json()["files"])

    made = await api.post("/v1/datasets", json={"name": unique("idem")}, headers=keyed())
    assert made.status_code == 201, made.text
    dataset = made.json()["id"]
    add = keyed()
    first = await api.post(f"/v1/datasets/{dataset}/files", json={"file_ids": [a]}, headers=add)
    again = await api.post(f"/v1/datasets/{dataset}/files", json={"file_ids": [a]}, headers=add)
    same_answer(first, again)

    rename = keyed()
    first = await api.patch(f"/v1/files/{b}", json={"name": "renamed.png"}, headers=rename)
    assert first.status_code == 200, first.text
    await api.patch(f"/v1/files/{b}", json={"name": "other.png"})
    again = await api.patch(f"/v1/files/{b}", json={"name": "renamed.png"}, headers=rename)
    same_answer(first, again)
    assert (await api.get(f"/v1/files/{b}")).json()["name"] == "other.png"

    gone = keyed()
    first = await api.delete(f"/v1/files/{a}", headers=gone)
    assert first.status_code == 204, first.text
    same_answer(first, await api.delete(f"/v1/files/{a}", headers=gone))
    listed = await api.get(
        f"/v1/datasets/{dataset}", headers={CONSISTENCY: first.headers[CONSISTENCY]}
    )
    assert listed.json()["file_count"] == 0


async def test_keys_belong_to_their_caller(
    api: httpx.AsyncClient, as_key: Callable[[str], httpx.AsyncClient]
) -> None:
    other = as_key((await member(api, "idem-member"))["api_key"])
    headers = keyed()
    mine = await api.post("/v1/folders", json={"name": unique("idem-mine")}, headers=headers)
    theirs = await other.post("/v1/folders", json={"name": unique("idem-theirs")}, headers=headers)
    assert mine.status_code == theirs.status_code == 201, theirs.text
    assert mine.json()["id"] != theirs.json()["id"]
    assert theirs.headers.get(REPLAYED) is None


async def test_a_new_api_key_is_answered_again_but_not_kept_readable(
    api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    user = await member(api, "idem-keys")
    headers = keyed()
    first = await api.post(f"/v1/users/{user['id']}/keys", headers=headers)
    assert first.status_code == 201, first.text
    same_answer(first, await api.post(f"/v1/users/{user['id']}/keys", headers=headers))
    listed = (await api.get(f"/v1/users/{user['id']}/keys")).json()["items"]
    assert len(listed) == 2  # the key it was made with, and this one, once
    secret = first.json()["api_key"].encode()
    stored = await pool.fetch("SELECT answer, public_answer FROM acl.idempotency")
    assert stored and not any(secret in (r["answer"] or b"") for r in stored)
    assert not any(secret in (r["public_answer"] or b"") for r in stored)
    assert not await pool.fetchval(
        "SELECT count(*) FROM acl.idempotency WHERE key_hash = convert_to($1, 'UTF8')",
        headers[KEY],
    )


async def test_duplicates_sent_at_once_make_one_folder(api: httpx.AsyncClient) -> None:
    name, headers = unique("idem-race"), keyed()
    answers = await asyncio.gather(
        *(api.post("/v1/folders", json={"name": name}, headers=headers) for _ in range(6))
    )
    made = [a for a in answers if a.status_code == 201]
    assert made, [a.text for a in answers]
    assert {a.json()["id"] for a in made} == {made[0].json()["id"]}
    for a in answers:
        assert a.status_code == 201 or error(a, 409, "request_in_progress")
    assert len(await top_level_named(api, name)) == 1


async def test_a_key_that_is_not_printable_ascii_is_refused(api: httpx.AsyncClient) -> None:
    for bad in ("", "has space", "x" * 256):
        answer = await api.post("/v1/folders", json={"name": unique("k")}, headers={KEY: bad})
        error(answer, 400, "invalid_idempotency_key")
    # Reads ignore it.
    assert (await api.get("/v1/folders", headers={KEY: "has space"})).status_code == 200


async def test_a_grpc_write_takes_the_key_as_metadata(api: httpx.AsyncClient, stack: Stack) -> None:
    name, metadata = unique("idem-grpc"), (*ADMIN, ("idempotency-key", str(uuid.uuid4())))
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        client = Client(channel)
        first = client.folders.CreateFolder(pb.CreateFolderRequest(name=name), metadata=metadata)
        made = await first
        again = client.folders.CreateFolder(pb.CreateFolderRequest(name=name), metadata=metadata)
        assert (await again).id == made.id
        assert dict(await again.trailing_metadata())["idempotent-replayed"] == "true"
        assert (
            dict(await again.trailing_metadata())[CONSISTENCY.lower()]
            == dict(await first.trailing_metadata())[CONSISTENCY.lower()]
        )
    assert len(await top_level_named(api, name)) == 1


async def test_a_sign_in_sent_again_gets_the_same_session(
    api: httpx.AsyncClient, pool: asyncpg.Pool, stack: Stack
) -> None:
    user = await member(api, "idem-session")
    headers = {**SIGN_IN, **keyed()}
    async with httpx.AsyncClient(base_url=stack.gateway_url) as browser:
        first = await browser.post(
            "/v1/sessions", json={"api_key": user["api_key"]}, headers=headers
        )
        assert first.status_code == 201, first.text
        again = await browser.post(
            "/v1/sessions", json={"api_key": user["api_key"]}, headers=headers
        )
        same_answer(first, again)
        token = first.cookies["files_session"]
        assert again.cookies["files_session"] == token
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM acl.sessions WHERE user_id = $1", uuid.UUID(user["id"])
            )
            == 1
        )
        stored = await pool.fetch("SELECT answer FROM acl.idempotency WHERE answer IS NOT NULL")
        assert stored and not any(token.encode() in r["answer"] for r in stored)

        # The same key with another of the user's keys is another request.
        other = (await api.post(f"/v1/users/{user['id']}/keys")).json()
        error(
            await browser.post("/v1/sessions", json={"api_key": other["api_key"]}, headers=headers),
            422,
            "idempotency_key_reused",
        )
        # A key revoked since gets no session, not even the one it had.
        first_key = [
            k
            for k in (await api.get(f"/v1/users/{user['id']}/keys")).json()["items"]
            if k["id"] != other["id"]
        ]
        assert (await api.delete(f"/v1/keys/{first_key[0]['id']}")).status_code == 204
        revoked = await browser.post(
            "/v1/sessions", json={"api_key": user["api_key"]}, headers=headers
        )
        error(revoked, 401, "unauthenticated")
        error(
            await browser.post(
                "/v1/sessions",
                json={"api_key": other["api_key"]},
                headers={**SIGN_IN, KEY: "has space"},
            ),
            400,
            "invalid_idempotency_key",
        )
