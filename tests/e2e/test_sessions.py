"""Upload sessions through the gateway: a large file in parts sent straight to the
store (presigned S3 URLs, or our signed URLs with the local store), resumed after an
interruption, completed into a file; abandoned sessions expire and lose their parts."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from services.ingest.collector.projections import blob_refs
from services.ingest.sessions.projections import sessions
from shared.kit import db
from shared.kit.access import Access
from shared.kit.blobs import UnknownUpload, open_blob_store
from shared.kit.eventstore import EventStore
from shared.kit.projections import rebuild
from shared.kit.stack import Stack
from tests.conftest import eventually
from tests.e2e.support import CONSISTENCY, ELF, error, folder, items, member, png, unique
from tests.signing import as_user

MiB = 1024 * 1024
PART = 5 * MiB  # the smallest part S3 takes


def big_png(size: int) -> bytes:
    """A real PNG header (so it sniffs as an image of 40 x 30), padded to `size` bytes."""
    head = png(40, 30)
    return head + os.urandom(size - len(head))


@pytest.fixture
async def anonymous() -> AsyncIterator[httpx.AsyncClient]:
    """A client with no API key: what PUTs parts to their URLs, as any S3 client would."""
    async with httpx.AsyncClient(timeout=60) as client:
        yield client


async def open_session(
    api: httpx.AsyncClient, folder_id: str, name: str, size: int, **fields: Any
) -> dict[str, Any]:
    answer = await api.post(
        f"/v1/folders/{folder_id}/uploads",
        json={"name": name, "size": size, "part_size": PART, **fields},
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


async def put(client: httpx.AsyncClient, part: dict[str, Any], data: bytes) -> None:
    answer = await client.put(part["url"], content=data)
    assert answer.status_code == 200, answer.text


def piece(data: bytes, number: int) -> bytes:
    return data[(number - 1) * PART : number * PART]


async def test_a_large_file_goes_in_parts_straight_to_the_store_and_becomes_a_file(
    api: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    top = await folder(api, unique("sessions"))
    data = big_png(12 * MiB + 123)
    session = await open_session(api, top["id"], "scan.png", len(data))
    assert session["status"] == "open"
    assert [(p["part"], p["size"]) for p in session["parts"]] == [
        (1, PART),
        (2, PART),
        (3, 2 * MiB + 123),
    ]
    assert all(p["url"].startswith("http") for p in session["parts"])
    # In any order, side by side, without our API key.
    await asyncio.gather(
        *(put(anonymous, p, piece(data, p["part"])) for p in reversed(session["parts"]))
    )
    state = (await api.get(f"/v1/uploads/{session['id']}")).json()
    assert [p["part"] for p in state["parts_stored"]] == [1, 2, 3]
    assert state["parts"] == [] and state["bytes_stored"] == len(data)

    done = await api.post(f"/v1/uploads/{session['id']}/complete")
    assert done.status_code == 201, done.text
    file = done.json()["file"]
    assert file["name"] == "scan.png" and file["kind"] == "image"
    assert file["size"] == len(data)
    assert file["sha256"] == hashlib.sha256(data).hexdigest()
    assert file["media"]["width"] == 40 and file["media"]["height"] == 30
    assert [f["id"] for f in await items(api, top["id"])] == [file["id"]]
    content = await api.get(f"/v1/files/{file['id']}/content")
    assert content.status_code == 200 and content.content == data
    job = (await api.get(f"/v1/jobs/{session['job_id']}")).json()
    assert job["status"] == "done"
    assert job["progress"] == {
        "done": 1,
        "total": 1,
        "bytes": {"done": len(data), "total": len(data)},
    }
    # Completed once: a second completion is refused, and names why.
    error(await api.post(f"/v1/uploads/{session['id']}/complete"), 409, "session_ended")


async def test_an_interrupted_upload_resumes_from_the_parts_already_stored(
    api: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    top = await folder(api, unique("resume"))
    data = big_png(3 * PART)
    session = await open_session(api, top["id"], "clip.png", len(data))
    first, _, third = session["parts"]
    await put(anonymous, first, piece(data, 1))
    await put(anonymous, third, b"x" * 1000)  # cut short by the interruption
    refused = error(await api.post(f"/v1/uploads/{session['id']}/complete"), 409, "parts_missing")
    assert refused["details"]["missing_parts"] == [2, 3]
    assert refused["details"]["wrong_sizes"] == {"3": 1000}

    # Later, another process of the client: it asks what is stored and sends the rest.
    state = (await api.get(f"/v1/uploads/{session['id']}")).json()
    assert [p["part"] for p in state["parts_stored"]] == [1, 3]
    assert state["bytes_stored"] == PART
    # The session's job shows it too, in bytes.
    job = (await api.get(f"/v1/jobs/{session['job_id']}")).json()
    assert job["status"] == "running"
    assert job["progress"]["bytes"] == {"done": PART, "total": len(data)}
    assert [p["part"] for p in state["parts"]] == [2, 3]
    for part in state["parts"]:
        await put(anonymous, part, piece(data, part["part"]))
    done = await api.post(f"/v1/uploads/{session['id']}/complete")
    assert done.status_code == 201, done.text
    file_id = done.json()["file"]["id"]
    assert (await api.get(f"/v1/files/{file_id}/content")).content == data


async def test_a_completion_that_died_after_the_store_assembled_the_file_can_be_done_again(
    api: httpx.AsyncClient, anonymous: httpx.AsyncClient, platform: Any
) -> None:
    top = await folder(api, unique("assembled"))
    data = big_png(2 * PART + 99)
    session = await open_session(api, top["id"], "long.png", len(data))
    for part in session["parts"]:
        await put(anonymous, part, piece(data, part["part"]))
    # A completion assembles the parts in the store, then dies while it reads the file
    # (minutes for a large one), before anything is recorded: the session is still open.
    pool = await db.connect_pool(platform.env["FILES_DATABASE_URL"], min_size=1, max_size=1)
    try:
        row = await pool.fetchrow(
            "SELECT store_key, upload_id FROM ingest.sessions WHERE id = $1",
            uuid.UUID(session["id"]),
        )
    finally:
        await pool.close()
    blobs = open_blob_store(platform.settings)
    try:
        parts = await blobs.list_parts(row["store_key"], row["upload_id"])
        await blobs.complete_multipart(
            row["store_key"], row["upload_id"], [(p.part_number, p.etag) for p in parts]
        )

        # The client, back, sees nothing left to send, and completes again.
        state = (await api.get(f"/v1/uploads/{session['id']}")).json()
        assert state["status"] == "open" and state["parts"] == []
        assert state["bytes_stored"] == len(data)
        done = await api.post(f"/v1/uploads/{session['id']}/complete")
        assert done.status_code == 201, done.text
        file = done.json()["file"]
        assert file["sha256"] == hashlib.sha256(data).hexdigest()
        assert (await api.get(f"/v1/files/{file['id']}/content")).content == data
        assert not await blobs.exists(row["store_key"])  # moved under its content key

        # One assembled so, never completed again, goes when its session expires.
        left = await open_session(api, top["id"], "left.png", len(data), expires_in_s=4)
        for part in left["parts"]:
            await put(anonymous, part, piece(data, part["part"]))
        pool = await db.connect_pool(platform.env["FILES_DATABASE_URL"], min_size=1, max_size=1)
        try:
            key, upload_id = await pool.fetchrow(
                "SELECT store_key, upload_id FROM ingest.sessions WHERE id = $1",
                uuid.UUID(left["id"]),
            )
        finally:
            await pool.close()
        parts = await blobs.list_parts(key, upload_id)
        await blobs.complete_multipart(key, upload_id, [(p.part_number, p.etag) for p in parts])

        async def expired() -> bool:
            return (await api.get(f"/v1/uploads/{left['id']}")).json()["status"] == "expired"

        await eventually(expired, within=20, what="the assembled session expired")

        async def deleted() -> bool:  # by the reclaimer, once the expiry has committed
            return not await blobs.exists(key)

        await eventually(deleted, within=10, what="the assembled object deleted")
    finally:
        await blobs.close()


async def test_an_end_whose_store_side_a_crash_left_undone_is_done_by_the_reclaimer(
    api: httpx.AsyncClient, anonymous: httpx.AsyncClient, platform: Any
) -> None:
    """A session's end committed, its process gone before the store's side was done (the
    note left in `ingest.session_uploads_left`, the multipart upload still in the store):
    a reclaimer's round aborts it there and forgets the note; a note done twice (two
    replicas, or a retry after a crash before it was forgotten) is no error."""
    top = await folder(api, unique("reclaimed"))
    data = big_png(PART + 10)
    session = await open_session(api, top["id"], "crashed.png", len(data))
    await put(anonymous, session["parts"][0], piece(data, 1))
    pool = await db.connect_pool(platform.env["FILES_DATABASE_URL"], min_size=1, max_size=1)
    blobs = open_blob_store(platform.settings)
    try:
        row = await pool.fetchrow(
            "SELECT id, store_key, upload_id FROM ingest.sessions WHERE id = $1",
            uuid.UUID(session["id"]),
        )
        assert [p.part_number for p in await blobs.list_parts(row[1], row[2])] == [1]

        async def noted_and_done() -> None:
            await pool.execute(
                "INSERT INTO ingest.session_uploads_left (session_id, store_key, upload_id)"
                " VALUES ($1, $2, $3)",
                *row,
            )

            async def forgotten() -> bool:
                return not await pool.fetchval(
                    "SELECT count(*) FROM ingest.session_uploads_left WHERE session_id = $1",
                    row[0],
                )

            await eventually(forgotten, within=30, what="the note done and forgotten")

        await noted_and_done()
        with pytest.raises(UnknownUpload):
            await blobs.list_parts(row[1], row[2])
        await noted_and_done()
    finally:
        await blobs.close()
        await pool.close()


async def test_two_completions_at_once_store_the_file_once(
    api: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    """Completions hold the session only as they record: both may assemble, read and
    copy, and the second to record finds the session completed."""
    top = await folder(api, unique("twice"))
    data = big_png(PART + 99)
    session = await open_session(api, top["id"], "twice.png", len(data))
    for part in session["parts"]:
        await put(anonymous, part, piece(data, part["part"]))
    url = f"/v1/uploads/{session['id']}/complete"
    answers = await asyncio.gather(api.post(url), api.post(url))
    # The other is refused as ended, or (a store failing the second of two assemblies
    # at once, as moto does, before the first has recorded) told to try again.
    statuses = sorted(a.status_code for a in answers)
    assert statuses in ([201, 409], [201, 503]), [a.text for a in answers]
    [refused] = [a for a in answers if a.status_code != 201]
    if refused.status_code == 409:
        error(refused, 409, "session_ended")
    else:
        error(refused, 503, "storage_unavailable")
        again = await api.post(url)
        error(again, 409, "session_ended")
    [done] = [a for a in answers if a.status_code == 201]
    file = done.json()["file"]
    assert (await api.get(f"/v1/files/{file['id']}/content")).content == data
    assert [i["id"] for i in await items(api, top["id"])] == [file["id"]]


async def test_an_abandoned_session_expires_and_its_parts_are_deleted(
    api: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    top = await folder(api, unique("expiry"))
    data = big_png(2 * PART)
    # Long enough for the first part to arrive on a busy machine, short for a test.
    session = await open_session(api, top["id"], "gone.png", len(data), expires_in_s=4)
    await put(anonymous, session["parts"][0], piece(data, 1))

    async def expired() -> bool:
        answer = await api.get(f"/v1/uploads/{session['id']}")
        assert answer.status_code == 200, answer.text
        return bool(answer.json()["status"] == "expired")

    await eventually(expired, within=20, what="the session expired")
    state = (await api.get(f"/v1/uploads/{session['id']}")).json()
    assert state["parts_stored"] == [] and state["parts"] == []
    job = (await api.get(f"/v1/jobs/{session['job_id']}")).json()
    assert job["status"] == "expired"
    # Its URLs lead nowhere now, and it cannot complete.
    late = await anonymous.put(session["parts"][1]["url"], content=piece(data, 2))
    # S3 answers 404 NoSuchUpload (moto, standing in for it here, a 500); ours 404.
    assert late.status_code >= 400, late.text
    error(await api.post(f"/v1/uploads/{session['id']}/complete"), 409, "session_ended")
    assert await items(api, top["id"]) == []


async def test_a_client_can_abort_its_session(
    api: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    top = await folder(api, unique("abort"))
    data = big_png(PART + 10)
    session = await open_session(api, top["id"], "abort.png", len(data))
    await put(anonymous, session["parts"][0], piece(data, 1))
    assert (await api.delete(f"/v1/uploads/{session['id']}")).status_code == 204
    state = (await api.get(f"/v1/uploads/{session['id']}")).json()
    assert state["status"] == "aborted" and state["parts_stored"] == []
    error(await api.delete(f"/v1/uploads/{session['id']}"), 409, "session_ended")


async def test_content_that_is_no_file_we_take_is_refused_at_completion(
    api: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    top = await folder(api, unique("refused"))
    data = ELF + os.urandom(PART)
    session = await open_session(api, top["id"], "tool", len(data))
    for part in session["parts"]:
        await put(anonymous, part, piece(data, part["part"]))
    error(await api.post(f"/v1/uploads/{session['id']}/complete"), 415, "unsupported_content")
    state = (await api.get(f"/v1/uploads/{session['id']}")).json()
    assert state["status"] == "rejected"
    assert await items(api, top["id"]) == []


async def test_bad_requests_name_the_problem(
    api: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    top = await folder(api, unique("bad-sessions"))
    url = f"/v1/folders/{top['id']}/uploads"
    error(await api.post(url, json={"name": "a.png", "size": 0}), 422, "invalid_size")
    error(await api.post(url, json={"size": 10}), 422, "missing_file_name")
    error(await api.post(url, json={"name": "a.png", "size": 10, "part_size": 1}), 422)
    error(await api.post(url, json={"name": "a.png", "size": 6 * 1024**4}), 413, "file_too_large")
    error(
        await api.post(url, json={"name": "a.png", "size": 10, "expires_in_s": 10**9}),
        422,
        "invalid_expiry",
    )
    nowhere = "/v1/folders/00000000-0000-4000-8000-000000000000/uploads"
    error(await api.post(nowhere, json={"name": "a.png", "size": 10}), 404)
    error(await api.get("/v1/uploads/00000000-0000-4000-8000-000000000000"), 404)
    session = await open_session(api, top["id"], "a.png", PART + 1)
    part = session["parts"][0]["url"]
    if "signature=" in part:  # our own URL: a changed signature is refused
        at = part.index("signature=") + len("signature=")
        tampered = part[:at] + ("1" if part[at] == "0" else "0") + part[at + 1 :]
        assert (await anonymous.put(tampered, content=b"x")).status_code == 403
        # A signed URL does not buy unlimited disk: a part past its size is refused.
        error(await anonymous.put(part, content=b"x" * (PART + 1)), 413, "part_too_large")


async def test_only_those_who_may_upload_into_the_folder_see_its_sessions(
    api: httpx.AsyncClient, as_key: Callable[[str], httpx.AsyncClient]
) -> None:
    top = await folder(api, unique("session-access"))
    session = await open_session(api, top["id"], "mine.png", PART + 1)
    outsider = as_key((await member(api, "outsider"))["api_key"])
    opening = {"name": "x.png", "size": 10}
    error(await outsider.post(f"/v1/folders/{top['id']}/uploads", json=opening), 404)
    error(await outsider.get(f"/v1/uploads/{session['id']}"), 404)
    error(await outsider.post(f"/v1/uploads/{session['id']}/complete"), 404)
    error(await outsider.delete(f"/v1/uploads/{session['id']}"), 404)
    assert (await api.get(f"/v1/uploads/{session['id']}")).json()["status"] == "open"


async def test_ingest_itself_shows_a_session_only_to_editors_of_its_folder(
    api: httpx.AsyncClient, platform: Stack
) -> None:
    """Sent straight to ingest with a signed identity, as the gateway sends it: a
    session's state (its part URLs are the right to send its bytes) needs the editor
    role on its folder, decided there from the path the gateway signs, not only by the
    gateway."""
    top = await folder(api, unique("session-ingest"))
    session = await open_session(api, top["id"], "mine.png", PART + 1)
    stranger, viewer = await member(api, "stranger"), await member(api, "viewer")
    path = top["id"]
    asked = f"/v1/uploads/{session['id']}"
    async with httpx.AsyncClient(base_url=platform.env["FILES_INGEST_URL"], timeout=30) as ingest:
        alone = Access(user_id=stranger["id"])
        refused = await ingest.get(asked, headers=as_user(stranger["id"], alone, folder_path=path))
        error(refused, 404, "not_found")
        unsigned = await ingest.get(asked, headers=as_user(stranger["id"], alone))
        error(unsigned, 400, "invalid_folder_path")
        reading = Access(user_id=viewer["id"], grants={uuid.UUID(top["id"]): "user"})
        only_reads = await ingest.get(
            asked, headers=as_user(viewer["id"], reading, folder_path=path)
        )
        error(only_reads, 403, "forbidden")
        editing = Access(user_id=viewer["id"], grants={uuid.UUID(top["id"]): "editor"})
        allowed = await ingest.get(asked, headers=as_user(viewer["id"], editing, folder_path=path))
        assert allowed.status_code == 200 and allowed.json()["parts"], allowed.text


async def test_a_sessions_part_urls_are_shown_to_its_opener_only(
    api: httpx.AsyncClient, anonymous: httpx.AsyncClient, as_key: Callable[[str], httpx.AsyncClient]
) -> None:
    """A part URL is the right to send the session's bytes, hours long: another editor of
    the folder sees the session and what it still needs, not where to send it."""
    top = await folder(api, unique("session-urls"))
    data = big_png(PART + 99)
    session = await open_session(api, top["id"], "mine.png", len(data))
    other = as_key((await uploader(api, top["id"]))["api_key"])
    seen = await other.get(f"/v1/uploads/{session['id']}")
    assert seen.status_code == 200, seen.text
    assert seen.json()["parts"] == [{"part": 1, "size": PART}, {"part": 2, "size": 99}]
    mine = await api.get(f"/v1/uploads/{session['id']}")
    assert [p["url"] for p in mine.json()["parts"]] != [None, None]
    for part in mine.json()["parts"]:
        await put(anonymous, part, piece(data, part["part"]))
    # It may still complete it, as any editor may.
    done = await other.post(f"/v1/uploads/{session['id']}/complete")
    assert done.status_code == 201, done.text


async def test_a_part_sent_while_a_completion_is_under_way_is_refused(
    api: httpx.AsyncClient, anonymous: httpx.AsyncClient, platform: Stack, blobs: str
) -> None:
    """A completion reads the parts it assembled: our part URLs (the local store) take
    none once one has begun, 409 naming it, and the file is what was sent before."""
    if blobs == "s3":
        pytest.skip("S3 takes the parts itself (presigned URLs) and assembles an upload once")
    top = await folder(api, unique("completing"))
    data = big_png(PART + 99)
    session = await open_session(api, top["id"], "sent.png", len(data))
    for part in session["parts"]:
        await put(anonymous, part, piece(data, part["part"]))
    session_id = uuid.UUID(session["id"])
    pool = await db.connect_pool(platform.env["FILES_DATABASE_URL"], min_size=1, max_size=1)
    try:
        # As a completion stamps it when it begins, and keeps it while it reads.
        await pool.execute(
            "INSERT INTO ingest.sessions_completing (session_id, since) VALUES ($1, now())",
            session_id,
        )
        sent = await anonymous.put(session["parts"][1]["url"], content=b"o" * 99)
        found = error(sent, 409, "session_completing")
        assert session["id"] in found["message"]
        await pool.execute(
            "DELETE FROM ingest.sessions_completing WHERE session_id = $1", session_id
        )
    finally:
        await pool.close()
    done = await api.post(f"/v1/uploads/{session['id']}/complete")
    assert done.status_code == 201, done.text
    file = done.json()["file"]
    assert (await api.get(f"/v1/files/{file['id']}/content")).content == data


async def uploader(api: httpx.AsyncClient, folder_id: str) -> dict[str, Any]:
    """A member with the editor role on the folder, and the id of their one key."""
    made = await member(api, "uploader")
    invited = await api.post(
        f"/v1/folders/{folder_id}/collaborators",
        json={"emails": [made["email"]], "role": "editor"},
    )
    assert invited.status_code == 200, invited.text
    [key] = (await api.get(f"/v1/users/{made['id']}/keys")).json()["items"]
    return {**made, "key_id": key["id"]}


async def parts_stored(api: httpx.AsyncClient, session_id: str) -> list[int]:
    answer = await api.get(f"/v1/uploads/{session_id}")
    assert answer.status_code == 200, answer.text
    return [p["part"] for p in answer.json()["parts_stored"]]


@pytest.mark.parametrize("lost", ["key_revoked", "role_removed", "role_lowered"])
async def test_a_session_stops_when_the_key_that_opened_it_is_revoked_or_its_role_goes(
    api: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    as_key: Callable[[str], httpx.AsyncClient],
    lost: str,
) -> None:
    """An editor opens a session and sends a part; then their key is revoked, or their
    role on the folder removed, or lowered to viewer. The session ends (aborted): its
    part URLs take nothing more, S3's presigned ones included (the upload they name is
    gone), it cannot be completed, not even by an org admin, and no file is made."""
    top = await folder(api, unique("session-revoked"))
    editor = await uploader(api, top["id"])
    data = big_png(2 * PART)
    session = await open_session(as_key(editor["api_key"]), top["id"], "big.png", len(data))
    first, second = session["parts"]
    await put(anonymous, first, piece(data, 1))

    if lost == "key_revoked":
        gone = await api.delete(f"/v1/keys/{editor['key_id']}")
    elif lost == "role_removed":
        gone = await api.delete(f"/v1/folders/{top['id']}/collaborators/{editor['id']}")
    else:
        gone = await api.patch(
            f"/v1/folders/{top['id']}/collaborators/{editor['id']}", json={"role": "viewer"}
        )
    assert gone.status_code in (200, 204), gone.text

    async def aborted() -> bool:
        answer = await api.get(f"/v1/uploads/{session['id']}")
        return answer.status_code == 200 and answer.json()["status"] == "aborted"

    await eventually(aborted, within=30, what="the session aborted")

    async def refused() -> bool:
        sent = await anonymous.put(second["url"], content=piece(data, 2))
        return sent.status_code >= 400

    # Not taken: the gateway refuses it; S3 answers NoSuchUpload (404; moto, standing
    # in for it here, answers that with a 500) once the upload is aborted there, just
    # after the end is recorded.
    await eventually(refused, within=30, what="the part refused")
    refused = error(await api.post(f"/v1/uploads/{session['id']}/complete"), 409)
    assert refused["code"] == "session_ended"
    assert await items(api, top["id"]) == []


@pytest.mark.parametrize("change", ["raised_to_admin", "removed_below_a_grant_above"])
async def test_a_session_goes_on_when_its_openers_role_changes_but_stays_editor(
    api: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    as_key: Callable[[str], httpx.AsyncClient],
    change: str,
) -> None:
    """The opener's role changes, but they may still upload into the session's folder:
    raised to admin there, or their grant on it removed while the one on the folder
    above still makes them an editor. The session stays open and is completed."""
    top = await folder(api, unique("session-kept"))
    below = await folder(api, unique("below"), top["id"])
    editor = await uploader(api, below["id"] if change == "raised_to_admin" else top["id"])
    if change == "removed_below_a_grant_above":
        also = await api.post(
            f"/v1/folders/{below['id']}/collaborators",
            json={"emails": [editor["email"]], "role": "editor"},
        )
        assert also.status_code == 200, also.text
    opener = as_key(editor["api_key"])
    data = big_png(2 * PART)
    session = await open_session(opener, below["id"], "kept.png", len(data))
    first, second = session["parts"]
    await put(anonymous, first, piece(data, 1))

    grant = f"/v1/folders/{below['id']}/collaborators/{editor['id']}"
    if change == "raised_to_admin":
        changed = await api.patch(grant, json={"role": "admin"})
    else:
        changed = await api.delete(grant)
    assert changed.status_code in (200, 204), changed.text
    # Read once ingest has taken the change in (and done whatever it does about it).
    token = {CONSISTENCY: changed.headers[CONSISTENCY]}
    state = await api.get(f"/v1/uploads/{session['id']}", headers=token)
    assert state.status_code == 200 and state.json()["status"] == "open", state.text

    await put(anonymous, second, piece(data, 2))
    done = await opener.post(f"/v1/uploads/{session['id']}/complete")
    assert done.status_code == 201, done.text
    assert [f["id"] for f in await items(api, below["id"])] == [done.json()["file"]["id"]]


async def typed(api: httpx.AsyncClient, **keys: dict[str, Any]) -> dict[str, str]:
    """The metadata schema with these keys set (it is the organisation's: other tests'
    keys stay); the headers that carry the write's consistency token."""
    found = (await api.get("/v1/metadata-schema")).json()["keys"]
    answer = await api.put("/v1/metadata-schema", json={"keys": {**found, **keys}})
    assert answer.status_code == 200, answer.text
    return {CONSISTENCY: answer.headers[CONSISTENCY]}


async def history(api: httpx.AsyncClient, file_id: str) -> list[str]:
    """The types of the file's events, as the audit has them, in order."""
    answer = await api.get("/v1/audit", params={"subject_id": file_id, "limit": 100})
    assert answer.status_code == 200, answer.text
    return [e["type"] for e in answer.json()["items"]]


async def test_a_session_opened_with_metadata_stores_its_file_with_it_in_one_write(
    api: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    score = f"score{uuid.uuid4().hex[:8]}"
    token = await typed(api, **{score: {"type": "number"}})
    top = await folder(api, unique("session-meta"))
    data = big_png(PART + 11)
    given = {score: 7, "site": "paris", "tags": ["a", "b"]}
    session = await open_session(api, top["id"], "m.png", len(data), metadata=given)
    assert session["metadata"] == given
    assert (await api.get(f"/v1/uploads/{session['id']}")).json()["metadata"] == given
    for part in session["parts"]:
        await put(anonymous, part, piece(data, part["part"]))
    done = await api.post(f"/v1/uploads/{session['id']}/complete", headers=token)
    assert done.status_code == 201, done.text
    file = done.json()["file"]
    # From its first listing on, the file has it: stored by the event that registers it.
    assert file["metadata"] == given
    assert [(f["id"], f["metadata"]) for f in await items(api, top["id"])] == [(file["id"], given)]
    assert (await api.get(f"/v1/files/{file['id']}")).json()["metadata"] == given
    after = {CONSISTENCY: done.headers[CONSISTENCY]}
    found = await api.get("/v1/search", params={f"metadata.{score}.gte": "5"}, headers=after)
    assert [f["id"] for f in found.json()["items"]] == [file["id"]]
    # One write: no metadata change follows the upload in the file's history.
    types = await history(api, file["id"])
    assert "catalog.FileUploaded" in types and "catalog.FileMetadataChanged" not in types, types


async def test_metadata_a_session_is_refused_with_at_opening_opens_nothing(
    api: httpx.AsyncClient, platform: Any
) -> None:
    score = f"score{uuid.uuid4().hex[:8]}"
    token = await typed(api, **{score: {"type": "number"}})
    top = await folder(api, unique("session-meta-refused"))
    url = f"/v1/folders/{top['id']}/uploads"
    body = {"name": "m.png", "size": PART + 1}
    refused = error(
        await api.post(url, json={**body, "metadata": {score: "high"}}, headers=token),
        422,
        "metadata_type_mismatch",
    )
    assert (refused["details"]["name"], refused["details"]["key"]) == ("m.png", score)
    assert refused["details"]["type"] == "number"
    assert "'m.png'" in refused["message"] and score in refused["message"]
    # Bad shapes, refused as an upload's metadata is, in the same words.
    shapes = error(await api.post(url, json={**body, "metadata": ["x"]}), 422, "invalid_metadata")
    assert shapes["message"] == "file 'm.png': metadata must be a JSON object"
    error(await api.post(url, json={**body, "metadata": "x"}), 422, "invalid_metadata")
    big = error(
        await api.post(url, json={**body, "metadata": {"blob": "x" * 70_000}}),
        413,
        "metadata_too_large",
    )
    assert big["details"]["limit"] == 64 * 1024
    pool = await db.connect_pool(platform.env["FILES_DATABASE_URL"], min_size=1, max_size=1)
    try:
        opened = await pool.fetchval(
            "SELECT count(*) FROM ingest.sessions WHERE folder_id = $1", uuid.UUID(top["id"])
        )
    finally:
        await pool.close()
    assert opened == 0


async def test_a_schema_changed_since_opening_refuses_completion_and_the_session_stays_open(
    api: httpx.AsyncClient, anonymous: httpx.AsyncClient
) -> None:
    score = f"score{uuid.uuid4().hex[:8]}"
    top = await folder(api, unique("session-meta-changed"))
    data = big_png(PART + 5)
    # The key is free when the session opens...
    session = await open_session(api, top["id"], "c.png", len(data), metadata={score: "high"})
    for part in session["parts"]:
        await put(anonymous, part, piece(data, part["part"]))
    # ...and typed as a number before it completes.
    token = await typed(api, **{score: {"type": "number"}})
    refused = error(
        await api.post(f"/v1/uploads/{session['id']}/complete", headers=token),
        422,
        "metadata_type_mismatch",
    )
    assert refused["details"]["key"] == score and refused["details"]["name"] == "c.png"
    state = (await api.get(f"/v1/uploads/{session['id']}")).json()
    assert state["status"] == "open" and state["file_id"] is None
    assert await items(api, top["id"]) == []
    # Still open: once the schema takes it again (the key retired), it completes.
    token = await typed(api, **{score: {"type": "number", "retired": True}})
    done = await api.post(f"/v1/uploads/{session['id']}/complete", headers=token)
    assert done.status_code == 201, done.text
    assert done.json()["file"]["metadata"] == {score: "high"}


async def test_sessions_and_blob_references_rebuild_from_events_with_the_same_rows(
    api: httpx.AsyncClient, anonymous: httpx.AsyncClient, platform: Any
) -> None:
    top = await folder(api, unique("rebuild-sessions"))
    data = big_png(PART + 7)
    session = await open_session(api, top["id"], "r.png", len(data))
    for part in session["parts"]:
        await put(anonymous, part, piece(data, part["part"]))
    assert (await api.post(f"/v1/uploads/{session['id']}/complete")).status_code == 201
    await open_session(api, top["id"], "open.png", len(data), metadata={"site": "lyon"})
    queries = [
        (sessions, "SELECT * FROM ingest.sessions ORDER BY id"),
        (
            blob_refs,
            "SELECT f.file_id, f.blob_key, b.pins FROM ingest.blob_files f"
            " JOIN ingest.blobs b ON b.key = f.blob_key ORDER BY f.file_id",
        ),
    ]
    pool = await db.connect_pool(platform.env["FILES_DATABASE_URL"], min_size=1, max_size=2)
    try:
        for projection, query in queries:
            before = [tuple(r) for r in await pool.fetch(query)]
            await rebuild(pool, EventStore("ingest"), projection)
            assert [tuple(r) for r in await pool.fetch(query)] == before, projection.name
    finally:
        await pool.close()
