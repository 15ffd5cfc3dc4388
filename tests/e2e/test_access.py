"""Access through the gateway: keys, revocation, moves that change who sees what,
datasets that follow folder access, and the audit trail."""

from __future__ import annotations

import contextlib
import time
import uuid
from typing import Any

import httpx
import pytest

from shared.kit.access import Access
from tests.conftest import eventually
from tests.e2e.support import error, folder, items, member, png, text, unique, upload
from tests.signing import as_user


async def invite(api: httpx.AsyncClient, folder_id: str, email: str, role: str) -> None:
    answer = await api.post(
        f"/v1/folders/{folder_id}/collaborators", json={"emails": [email], "role": role}
    )
    assert answer.status_code == 200, answer.text


async def test_keys_are_shown_once_rotated_and_revoked_at_once(
    api: httpx.AsyncClient, as_key: Any
) -> None:
    dana = await member(api, "dana")
    first = as_key(dana["api_key"])
    assert (await first.get("/v1/users/me")).json()["id"] == dana["id"]

    issued = await first.post(f"/v1/users/{dana['id']}/keys")
    assert issued.status_code == 201, issued.text
    second = as_key(issued.json()["api_key"])
    assert (await second.get("/v1/users/me")).status_code == 200
    listed = (await first.get(f"/v1/users/{dana['id']}/keys")).json()["items"]
    assert len(listed) == 2
    assert all(set(k) == {"id", "created_at", "revoked"} for k in listed), listed

    # Rotation: the old key is revoked with the new one; it fails on the next request.
    old = next(k for k in listed if k["id"] != issued.json()["id"])
    assert (await second.delete(f"/v1/keys/{old['id']}")).status_code == 204
    error(await first.get("/v1/users/me"), 401, "unauthenticated")
    assert (await second.get("/v1/users/me")).status_code == 200

    # Someone else's keys are not a member's to see or revoke.
    other = await member(api, "other")
    error(await as_key(other["api_key"]).delete(f"/v1/keys/{issued.json()['id']}"), 404)
    error(await as_key(other["api_key"]).post(f"/v1/users/{dana['id']}/keys"), 403)
    error(await second.post("/v1/users", json={"email": "x@example.com", "name": "x"}), 403)


async def test_removing_a_collaborator_takes_effect_within_a_second(
    api: httpx.AsyncClient, as_key: Any
) -> None:
    top = await folder(api, unique("revoke"))
    [file] = (await upload(api, top["id"], ("secret.txt", text("secret"))))["files"]
    erin = await member(api, "erin")
    await invite(api, top["id"], erin["email"], "user")
    client = as_key(erin["api_key"])
    assert (await client.get(f"/v1/files/{file['id']}/content")).status_code == 200

    removed = await api.delete(f"/v1/folders/{top['id']}/collaborators/{erin['id']}")
    assert removed.status_code == 204, removed.text
    started = time.monotonic()

    async def gone() -> bool:
        answer = await client.get(f"/v1/files/{file['id']}/content")
        return answer.status_code == 404

    await eventually(gone, within=1.0, what="access revoked")
    assert time.monotonic() - started < 1.0
    error(await client.get(f"/v1/folders/{top['id']}"), 404)
    found = (await client.get("/v1/search", params={"q": "secret"})).json()["items"]
    assert file["id"] not in {i["id"] for i in found}


@pytest.mark.parametrize("lost", ["key_revoked", "role_lowered"])
async def test_an_upload_under_way_when_its_right_goes_records_nothing(
    api: httpx.AsyncClient, as_key: Any, lost: str
) -> None:
    """An upload is allowed when it starts; a body held open across the revocation of
    its key (or its editor role lowered to user) is refused at its end, not recorded."""
    import asyncio

    top = await folder(api, unique("revoke-upload"))
    bob = await member(api, "bob")
    await invite(api, top["id"], bob["email"], "editor")
    client = as_key(bob["api_key"])
    [key] = (await api.get(f"/v1/users/{bob['id']}/keys")).json()["items"]
    started, gone = asyncio.Event(), asyncio.Event()

    async def body() -> Any:
        yield (
            b'--B\r\nContent-Disposition: form-data; name="file"; filename="late.txt"\r\n'
            b"Content-Type: text/plain\r\n\r\n" + b"a" * 600_000
        )
        started.set()
        await gone.wait()
        yield b"b" * 1000 + b"\r\n--B--\r\n"

    async def take_the_right_away() -> None:
        await started.wait()
        if lost == "key_revoked":
            assert (await api.delete(f"/v1/keys/{key['id']}")).status_code == 204
        else:
            changed = await api.patch(
                f"/v1/folders/{top['id']}/collaborators/{bob['id']}", json={"role": "user"}
            )
            assert changed.status_code == 200, changed.text

        async def refused() -> bool:
            probe = await client.post(f"/v1/folders/{top['id']}/uploads", json={"size": 1})
            return probe.status_code in (401, 403)

        await eventually(refused, within=2.0, what="the right gone at the gateway")
        gone.set()

    sent, _ = await asyncio.gather(
        client.post(
            f"/v1/folders/{top['id']}/files",
            content=body(),
            headers={"content-type": "multipart/form-data; boundary=B"},
        ),
        take_the_right_away(),
    )
    error(sent, 401 if lost == "key_revoked" else 403)
    assert await items(api, top["id"]) == []


# Far more than the sockets between the client and the gateway hold (a few MB on
# loopback): what the client has not read yet is still the gateway's to send.
LARGE = 48 * 1024 * 1024


async def download_with_the_right_taken(
    client: httpx.AsyncClient,
    file_id: str,
    take: Any,
    gone: Any,
    within: float = 2.0,
    params: dict[str, str] | None = None,
) -> tuple[int, bool]:
    """A download's first chunk read, then `take` (the right taken away) and `gone` waited
    for (the gateway refusing it; given when the download began), then the rest read
    until the stream ends or breaks: the bytes delivered, and whether it broke."""
    import asyncio

    delivered, broke = 0, False
    content = f"/v1/files/{file_id}/content"
    async with client.stream("GET", content, params=params, timeout=60) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-length"] == str(LARGE)
        began = time.monotonic()
        chunks = answer.aiter_raw()
        delivered += len(await anext(chunks))
        await take()
        await eventually(lambda: gone(began), within=within, what="the right gone at the gateway")
        try:
            async with asyncio.timeout(60):
                async for chunk in chunks:
                    delivered += len(chunk)
        except (httpx.RemoteProtocolError, httpx.ReadError):
            broke = True
    return delivered, broke


def gateway_logged(platform: Any, what: str, path: str) -> bool:
    lines = (platform.data_dir / "logs" / "gateway.log").read_text().splitlines()
    return any(what in line and path in line for line in lines)


@pytest.mark.parametrize("lost", ["key_revoked", "role_removed"])
async def test_a_download_under_way_when_its_right_goes_is_cut_short(
    api: httpx.AsyncClient, as_key: Any, platform: Any, lost: str
) -> None:
    """A download is allowed when it starts; one still being sent when its key is
    revoked (or its role on the folder taken away) ends there, short of the file."""
    top = await folder(api, unique("revoke-download"))
    [file] = (await upload(api, top["id"], ("large.bin", b"x" * LARGE)))["files"]
    dora = await member(api, "dora")
    await invite(api, top["id"], dora["email"], "user")
    client = as_key(dora["api_key"])
    [key] = (await api.get(f"/v1/users/{dora['id']}/keys")).json()["items"]

    async def take() -> None:
        if lost == "key_revoked":
            assert (await api.delete(f"/v1/keys/{key['id']}")).status_code == 204
        else:
            removed = await api.delete(f"/v1/folders/{top['id']}/collaborators/{dora['id']}")
            assert removed.status_code == 204, removed.text

    async def gone(_: float) -> bool:
        probe = await client.get(f"/v1/files/{file['id']}")
        return probe.status_code == (401 if lost == "key_revoked" else 404)

    delivered, broke = await download_with_the_right_taken(client, file["id"], take, gone)
    assert broke and delivered < LARGE, delivered
    path = f"/v1/files/{file['id']}/content"
    assert gateway_logged(platform, "download.right_gone", path)
    assert not gateway_logged(platform, "unexpected_error", path)


async def test_a_grpc_download_under_way_when_its_key_is_revoked_ends_unauthenticated(
    api: httpx.AsyncClient, as_key: Any, platform: Any
) -> None:
    """Over gRPC the stream of a download cut short ends with the reason, never OK."""
    import grpc

    from services.gateway.files_pb.files.v1 import files_pb2 as pb
    from services.gateway.files_pb.files.v1 import files_pb2_grpc as rpc

    top = await folder(api, unique("revoke-grpc"))
    [file] = (await upload(api, top["id"], ("large.bin", b"z" * LARGE)))["files"]
    gus = await member(api, "gus")
    await invite(api, top["id"], gus["email"], "user")
    [key] = (await api.get(f"/v1/users/{gus['id']}/keys")).json()["items"]
    client = as_key(gus["api_key"])
    delivered = 0
    async with grpc.aio.insecure_channel(platform.grpc_target) as channel:
        stream = rpc.FilesStub(channel).Download(
            pb.DownloadRequest(file_id=file["id"]),
            metadata=(("authorization", f"Bearer {gus['api_key']}"),),
        )
        messages = aiter(stream)
        assert (await anext(messages)).header.size == LARGE
        delivered += len((await anext(messages)).chunk)
        assert (await api.delete(f"/v1/keys/{key['id']}")).status_code == 204

        async def gone() -> bool:
            return (await client.get(f"/v1/files/{file['id']}")).status_code == 401

        await eventually(gone, within=2.0, what="the key refused at the gateway")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for message in messages:
                delivered += len(message.chunk)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, caught.value.details()
    trailing = dict(caught.value.trailing_metadata() or ())
    assert trailing["files-error-code"] == "unauthenticated"
    assert delivered < LARGE


async def test_a_download_that_meets_the_access_service_away_goes_on(
    api: httpx.AsyncClient, platform: Any
) -> None:
    """A download under way is asked again every so often; with the access service away
    at that moment, no answer is not a refusal: the whole file is sent."""
    top = await folder(api, unique("acl-away-download"))
    [file] = (await upload(api, top["id"], ("large.bin", b"y" * LARGE)))["files"]

    async def gone(began: float) -> bool:
        # The gateway's remembered answer for this key has run out (it was made before
        # the download began), and the download is due to ask again.
        probe = await api.get(f"/v1/files/{file['id']}")
        return probe.status_code == 503 and time.monotonic() - began > 2.2

    with contextlib.ExitStack() as held:

        async def take() -> None:
            held.enter_context(platform.down("acl"))

        delivered, broke = await download_with_the_right_taken(
            api, file["id"], take, gone, within=30
        )
    assert not broke and delivered == LARGE
    path = f"/v1/files/{file['id']}/content"
    assert gateway_logged(platform, "download.recheck_unanswered", path)

    async def back() -> bool:
        return (await api.get(f"/v1/folders/{top['id']}")).status_code == 200

    await eventually(back, within=120, what="the access service back")


async def test_a_download_that_meets_the_access_service_hung_goes_on(
    api: httpx.AsyncClient, platform: Any
) -> None:
    """An access service that takes the connection and never answers (paused, a lock, a
    partition dropping packets) must not stall every download while it is asked again:
    the ask gives up within a second, as unanswered, and the file goes on."""
    import signal

    top = await folder(api, unique("acl-hung-download"))
    [file] = (await upload(api, top["id"], ("large.bin", b"z" * LARGE)))["files"]
    acl = platform.child("acl")

    async def due(began: float) -> bool:
        # The gateway's remembered answer has run out: the next chunk asks the ACL.
        return time.monotonic() - began > 2.2

    async def pause() -> None:
        acl.proc.send_signal(signal.SIGSTOP)

    try:
        delivered, broke = await download_with_the_right_taken(
            api, file["id"], pause, due, within=30
        )
    finally:
        acl.proc.send_signal(signal.SIGCONT)
    assert not broke and delivered == LARGE
    path = f"/v1/files/{file['id']}/content"
    assert gateway_logged(platform, "download.recheck_unanswered", path)


async def test_a_folder_admin_stays_unless_an_org_admin_transfers_the_folder(
    api: httpx.AsyncClient, as_key: Any
) -> None:
    frank, gina = await member(api, "frank"), await member(api, "gina")
    as_frank = as_key(frank["api_key"])
    mine = await as_frank.post("/v1/folders", json={"name": unique("franks")})
    assert mine.status_code == 201, mine.text
    assert mine.json()["my_role"] == "admin"
    folder_id = mine.json()["id"]
    await invite(as_frank, folder_id, gina["email"], "admin")
    # Another folder admin cannot demote the creator, nor the creator them.
    as_gina = as_key(gina["api_key"])
    error(
        await as_gina.patch(
            f"/v1/folders/{folder_id}/collaborators/{frank['id']}", json={"role": "user"}
        ),
        409,
        "admin_collaborator",
    )
    error(await as_frank.delete(f"/v1/folders/{folder_id}/collaborators/{gina['id']}"), 409)
    # An org admin transfers it: the old admin becomes a user.
    changed = await api.patch(
        f"/v1/folders/{folder_id}/collaborators/{frank['id']}", json={"role": "viewer"}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["role"] == "user"

    async def demoted() -> bool:
        answer = await as_frank.patch(f"/v1/folders/{folder_id}", json={"description": "x"})
        return answer.status_code == 403

    await eventually(demoted, within=1.0, what="the creator demoted")
    error(
        await api.post(
            f"/v1/folders/{folder_id}/collaborators",
            json={"emails": ["nobody-at-all@example.com"], "role": "user"},
        ),
        422,
        "unknown_emails",
    )


async def test_moving_a_folder_under_another_changes_who_sees_it(
    api: httpx.AsyncClient, as_key: Any
) -> None:
    top = await folder(api, unique("moves"))
    shared = await folder(api, "shared", top["id"])
    private = await folder(api, "private", top["id"])
    [file] = (await upload(api, private["id"], ("plans.txt", text("plans"))))["files"]
    hana = await member(api, "hana")
    await invite(api, shared["id"], hana["email"], "user")
    client = as_key(hana["api_key"])
    error(await client.get(f"/v1/files/{file['id']}"), 404)

    moved = await api.post(
        "/v1/move", json={"folder_ids": [private["id"]], "target_folder_id": shared["id"]}
    )
    assert moved.status_code == 200, moved.text
    seen = await client.get(f"/v1/files/{file['id']}")
    assert seen.status_code == 200, seen.text
    assert seen.json()["my_role"] == "user"
    seen_private = (await client.get(f"/v1/folders/{private['id']}")).json()
    assert [p["id"] for p in seen_private["path"]] == [shared["id"], private["id"]]
    assert seen_private["parent_id"] == shared["id"]
    # The folder shared with them is where their part starts: no parent above it.
    assert (await client.get(f"/v1/folders/{shared['id']}")).json()["parent_id"] is None
    assert (await api.get(f"/v1/folders/{shared['id']}")).json()["parent_id"] == top["id"]

    back = await api.post(
        "/v1/move", json={"folder_ids": [private["id"]], "target_folder_id": top["id"]}
    )
    assert back.status_code == 200, back.text
    error(await client.get(f"/v1/files/{file['id']}"), 404)


async def test_an_editor_cannot_move_what_they_edit_where_they_would_have_more_rights(
    api: httpx.AsyncClient, as_key: Any
) -> None:
    # Alice's (the admin's) tree: Mallory edits it, and may reorganize it.
    top = await folder(api, unique("owned"))
    reports, archive = (
        await folder(api, "reports", top["id"]),
        await folder(api, "archive", top["id"]),
    )
    [file] = (await upload(api, reports["id"], ("q3.txt", text("q3"))))["files"]
    mallory = await member(api, "mallory")
    await invite(api, top["id"], mallory["email"], "editor")
    client = as_key(mallory["api_key"])
    within = await client.post(
        "/v1/move", json={"folder_ids": [reports["id"]], "target_folder_id": archive["id"]}
    )
    assert within.status_code == 200, within.text

    # Her own folder (she is its admin), and one of Bob's where she edits too.
    mine = await client.post("/v1/folders", json={"name": unique("mine")})
    assert mine.status_code == 201, mine.text
    elsewhere = await folder(api, unique("bobs"))
    await invite(api, elsewhere["id"], mallory["email"], "editor")
    for target, needed in ((mine.json()["id"], "admin"), (elsewhere["id"], "admin")):
        for body in ({"folder_ids": [reports["id"]]}, {"file_ids": [file["id"]]}):
            refused = error(
                await client.post("/v1/move", json={**body, "target_folder_id": target}),
                403,
                "forbidden",
            )
            assert refused["details"]["role_needed"] == needed
            assert refused["details"]["role"] == "editor"
    # Nothing moved: the tree's collaborators still have it where it was.
    path = (await api.get(f"/v1/folders/{reports['id']}")).json()["path"]
    assert [p["id"] for p in path] == [top["id"], archive["id"], reports["id"]]
    assert (await api.get(f"/v1/files/{file['id']}")).json()["folder_id"] == reports["id"]
    assert (await client.get(f"/v1/files/{file['id']}")).json()["my_role"] == "editor"


async def test_ingest_itself_checks_the_editor_role_on_the_folder_it_adds_to(
    api: httpx.AsyncClient, platform: Any
) -> None:
    """Sent straight to ingest with a signed identity, as the gateway sends them: an
    upload or a session into a folder needs the editor role there, decided by ingest
    from the folder's path the gateway found in the catalog and signed in the caller's
    token; a call with no signed path (a gateway route that forgot to ask) is refused.
    Nothing is stored either way."""
    top = await folder(api, unique("ingest-checks"))
    inner = await folder(api, "inner", top["id"])
    reader = await member(api, "reader")
    path = f"{top['id']},{inner['id']}"
    grants = Access(user_id=reader["id"], grants={uuid.UUID(top["id"]): "user"})
    editor = Access(user_id=reader["id"], grants={uuid.UUID(top["id"]): "editor"})
    one = [("file", ("sneaked.txt", b"sneaked\n", "text/plain"))]
    async with httpx.AsyncClient(base_url=platform.env["FILES_INGEST_URL"], timeout=30) as ingest:
        upload_to = f"/v1/folders/{inner['id']}/files"
        refused = await ingest.post(
            upload_to, files=one, headers=as_user(reader["id"], grants, folder_path=path)
        )
        assert error(refused, 403, "forbidden")["details"]["role_needed"] == "editor"
        error(await ingest.post(upload_to, files=one, headers=as_user(reader["id"], editor)), 400)
        wrong = as_user(reader["id"], editor, folder_path=top["id"])  # another folder's
        error(await ingest.post(upload_to, files=one, headers=wrong), 400, "invalid_folder_path")
        # A path is believed only signed: one sent beside a token (by anyone holding a
        # token of the caller's) names nothing.
        forged = as_user(reader["id"], grants, **{"X-Files-Folder-Path": inner["id"]})
        error(await ingest.post(upload_to, files=one, headers=forged), 400, "invalid_folder_path")
        session = await ingest.post(
            f"/v1/folders/{inner['id']}/uploads",
            json={"name": "big.bin", "size": 10 * 1024 * 1024},
            headers=as_user(reader["id"], grants, folder_path=path),
        )
        error(session, 403, "forbidden")
        # A session someone else opened there cannot be completed nor aborted either.
        opened = await api.post(
            f"/v1/folders/{inner['id']}/uploads", json={"name": "big.bin", "size": 10}
        )
        assert opened.status_code == 201, opened.text
        theirs = f"/v1/uploads/{opened.json()['id']}"
        reading = as_user(reader["id"], grants, folder_path=path)
        error(await ingest.post(f"{theirs}/complete", headers=reading), 403, "forbidden")
        error(await ingest.delete(theirs, headers=reading), 403, "forbidden")
        error(await ingest.delete(theirs, headers=as_user(reader["id"], editor)), 400)
        assert (await api.get(theirs)).json()["status"] == "open"
        allowed = await ingest.post(
            upload_to, files=one, headers=as_user(reader["id"], editor, folder_path=path)
        )
        assert allowed.status_code == 201, allowed.text
    file_id = allowed.json()["files"][0]["id"]

    async def only_the_allowed_one() -> bool:
        return [i["id"] for i in await items(api, inner["id"])] == [file_id]

    await eventually(only_the_allowed_one, within=20, what="the one allowed upload listed")


async def test_ingest_itself_shows_a_job_to_its_maker_and_those_who_see_its_folder(
    api: httpx.AsyncClient, platform: Any
) -> None:
    """Sent straight to ingest with a signed identity, as the gateway sends them: a job
    is read by its maker, or with the `user` role on its folder and cancelled with the
    `editor` role there, decided by ingest from the folder's path the gateway signs;
    anyone else gets 404, as for no such job. A read (the job, its pages of files and
    errors) without a path by anyone but its maker is told the folder whose path it
    needs."""
    me = (await api.get("/v1/users/me")).json()
    top = await folder(api, unique("jobs"))
    inner = await folder(api, "inner", top["id"])
    job_id = (await upload(api, inner["id"], ("j.txt", text("j"))))["job_id"]
    stranger, reader = await member(api, "stranger"), await member(api, "reader")
    path = f"{top['id']},{inner['id']}"
    nothing = Access(user_id=stranger["id"])
    reading = Access(user_id=reader["id"], grants={uuid.UUID(top["id"]): "user"})
    editing = Access(user_id=reader["id"], grants={uuid.UUID(top["id"]): "editor"})
    job, cancel = f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/cancel"
    pages = [f"{job}/files", f"{job}/errors"]
    async with httpx.AsyncClient(base_url=platform.env["FILES_INGEST_URL"], timeout=30) as ingest:
        for method, route in (("GET", job), *(("GET", p) for p in pages), ("POST", cancel)):
            refused = await ingest.request(
                method, route, headers=as_user(stranger["id"], nothing, folder_path=path)
            )
            assert error(refused, 404, "not_found")["message"] == f"job {job_id} does not exist"
            unsigned = await ingest.request(method, route, headers=as_user(reader["id"], reading))
            if method == "GET":
                # The gateway asks as for the maker first; anyone else's right needs the
                # path, so ingest names the folder to find (and tells nothing of the job).
                needed = error(unsigned, 409, "folder_path_needed")
                assert needed["details"] == {"folder_id": inner["id"]}
            else:
                error(unsigned, 400, "invalid_folder_path")
        for route in (job, *pages):
            seen = await ingest.get(route, headers=as_user(reader["id"], reading, folder_path=path))
            assert seen.status_code == 200, seen.text
        weak = await ingest.post(cancel, headers=as_user(reader["id"], reading, folder_path=path))
        assert error(weak, 403, "forbidden")["details"]["role_needed"] == "editor"
        # Past the check: an upload is stored whole before it answers, nothing to cancel.
        ended = await ingest.post(cancel, headers=as_user(reader["id"], editing, folder_path=path))
        error(ended, 409, "job_finished")
        # Its maker needs no path: the job is theirs wherever its folder went.
        own = await ingest.get(job, headers=as_user(me["id"], Access(user_id=me["id"])))
        assert own.status_code == 200, own.text


async def test_the_dicom_context_skips_a_jobs_instances_only_for_the_job_the_gateway_signed(
    api: httpx.AsyncClient, platform: Any
) -> None:
    """The DICOM context knows neither a job's maker nor its folder: the gateway signs
    the job whose cancelling it allowed, and a user's token signed for anything else
    (or for nothing) skips nothing."""
    from tests.e2e.test_dicom import finished, fresh_study, send
    from tests.e2e.test_dicomweb import series_of
    from tests.signing import as_service

    top = await folder(api, unique("dicom-cancel"))
    job_id = (
        await finished(api, await send(api, top["id"], *series_of(fresh_study(), 1, 1, "CT")))
    )["id"]
    other = str(uuid.uuid4())
    stranger = await member(api, "stranger")
    nothing = Access(user_id=stranger["id"])
    cancel = f"/internal/jobs/{job_id}/cancel"
    async with httpx.AsyncClient(base_url=platform.env["FILES_DICOM_URL"], timeout=30) as dicom:
        for signed in ({}, {"object_ref": f"job:{other}"}, {"object_ref": f"file:{job_id}"}):
            refused = await dicom.post(cancel, headers=as_user(stranger["id"], nothing, **signed))
            error(refused, 400, "invalid_object_ref")
        account = await dicom.get(f"/internal/jobs/{job_id}", headers=as_service())
        assert account.json()["cancelled"] is False, account.text
        allowed = await dicom.post(
            cancel, headers=as_user(stranger["id"], nothing, object_ref=f"job:{job_id}")
        )
        assert allowed.status_code == 200, allowed.text
        account = await dicom.get(f"/internal/jobs/{job_id}", headers=as_service())
        assert account.json()["cancelled"] is True, account.text


async def test_the_thumbnails_context_re_encodes_only_the_files_the_gateway_signed(
    platform: Any,
) -> None:
    """The thumbnails context knows no folders: the gateway signs the files whose editor
    role it checked, and a user's token signed for other files (or none) makes nothing.
    A re-encode job is read by its maker only."""
    from shared.kit.http import files_ref

    asked, other = str(uuid.uuid4()), str(uuid.uuid4())
    stranger = str(uuid.uuid4())
    nothing = Access(user_id=stranger)
    body = {"files": [{"id": asked, "kind": "video"}]}
    async with httpx.AsyncClient(base_url=platform.env["FILES_THUMBNAILS_URL"], timeout=30) as tn:
        for signed in (
            {},
            {"object_ref": files_ref([other])},
            {"object_ref": files_ref([asked, other])},
        ):
            refused = await tn.post(
                "/internal/re-encode", json=body, headers=as_user(stranger, nothing, **signed)
            )
            error(refused, 400, "invalid_object_ref")
        allowed = await tn.post(
            "/internal/re-encode",
            json=body,
            headers=as_user(stranger, nothing, object_ref=files_ref([asked.upper()])),
        )
        assert allowed.status_code == 202, allowed.text
        # Its job is its maker's alone, decided there too.
        job = f"/internal/reencode-jobs/{allowed.json()['job_id']}"
        own = await tn.get(job, headers=as_user(stranger, nothing))
        assert own.status_code == 200, own.text
        someone = str(uuid.uuid4())
        error(await tn.get(job, headers=as_user(someone, Access(user_id=someone))), 404)


async def test_the_contexts_that_serve_a_files_pictures_check_the_role_themselves(
    api: httpx.AsyncClient, platform: Any
) -> None:
    """Sent straight to the thumbnails and DICOM contexts with a signed identity, as the
    gateway sends them: a file's thumbnail, web rendition and slices need the `user`
    role on its folder, decided there from the file and its folder's path that the
    gateway signs from the catalog's one answer; a path signed for one file is no right
    on another, and a call with no file signed is refused."""
    from tests.e2e.test_dicom import finished, fresh_study, send
    from tests.e2e.test_dicomweb import series_of

    top = await folder(api, unique("pictures"))
    inner = await folder(api, "inner", top["id"])
    elsewhere = await folder(api, unique("elsewhere"))
    [image] = (await upload(api, inner["id"], ("seen.png", png())))["files"]
    [other] = (await upload(api, elsewhere["id"], ("unseen.png", png())))["files"]
    job = await finished(api, await send(api, inner["id"], *series_of(fresh_study(), 1, 2, "CT")))
    [series] = job["files"]

    async def thumbnailed() -> bool:
        answer = await api.get(f"/v1/files/{image['id']}/thumbnail")
        return bool(answer.status_code == 200)

    await eventually(thumbnailed, within=30, what="the image's thumbnail")
    stranger, reader = await member(api, "stranger"), await member(api, "reader")
    path = f"{top['id']},{inner['id']}"
    nothing = Access(user_id=stranger["id"])
    reading = Access(user_id=reader["id"], grants={uuid.UUID(top["id"]): "user"})
    asked = (
        ("thumbnails", f"/internal/thumbnails/{image['id']}", image["id"], 200),
        # Allowed, and none made: the rendition's own 404.
        ("thumbnails", f"/internal/renditions/{image['id']}", image["id"], 404),
        ("dicom", f"/v1/files/{series['id']}/slices/0", series["id"], 200),
    )
    for service, route, file_id, allowed in asked:
        url = platform.env[f"FILES_{service.upper()}_URL"]
        async with httpx.AsyncClient(base_url=url, timeout=30) as context:
            signed = {"folder_path": path, "object_ref": f"file:{file_id}"}
            refused = await context.get(route, headers=as_user(stranger["id"], nothing, **signed))
            assert error(refused, 404, "not_found")["message"] == f"file {file_id} does not exist"
            # The reader's path, signed for another file (one they do not see).
            elsewhere_signed = {"folder_path": path, "object_ref": f"file:{other['id']}"}
            mismatched = as_user(reader["id"], reading, **elsewhere_signed)
            error(await context.get(route, headers=mismatched), 400, "invalid_object_ref")
            unsigned = as_user(reader["id"], reading, folder_path=path)
            error(await context.get(route, headers=unsigned), 400, "invalid_object_ref")
            answer = await context.get(route, headers=as_user(reader["id"], reading, **signed))
            assert answer.status_code == allowed, (route, answer.text)
            if allowed == 404:
                error(answer, 404, "rendition_not_found")


async def test_datasets_show_a_member_only_the_files_they_may_see(
    api: httpx.AsyncClient, as_key: Any
) -> None:
    top = await folder(api, unique("dsacl"))
    a, b = await folder(api, "a", top["id"]), await folder(api, "b", top["id"])
    [in_a] = (await upload(api, a["id"], ("a.txt", text("a"))))["files"]
    [in_b] = (await upload(api, b["id"], ("b.txt", text("b"))))["files"]
    ivan = await member(api, "ivan")
    await invite(api, a["id"], ivan["email"], "user")
    dataset = await api.post("/v1/datasets", json={"name": unique("mixed")})
    assert dataset.status_code == 201, dataset.text
    ds = dataset.json()["id"]
    added = await api.post(f"/v1/datasets/{ds}/files", json={"file_ids": [in_a["id"], in_b["id"]]})
    assert added.status_code == 200, added.text

    client = as_key(ivan["api_key"])
    error(await client.get(f"/v1/datasets/{ds}"), 404)
    shared = await api.post(
        f"/v1/datasets/{ds}/collaborators", json={"emails": [ivan["email"]], "role": "user"}
    )
    assert shared.status_code == 200, shared.text
    files = await client.get(f"/v1/datasets/{ds}/files")
    assert files.status_code == 200, files.text
    assert [f["id"] for f in files.json()["items"]] == [in_a["id"]]
    linked = (await client.get(f"/v1/files/{in_a['id']}")).json()["datasets"]
    assert [d["id"] for d in linked] == [ds]
    error(await client.get(f"/v1/files/{in_b['id']}/datasets"), 404)
    listed = (await client.get("/v1/datasets", params={"limit": 1000})).json()["items"]
    assert ds in {d["id"] for d in listed}


async def test_the_audit_shows_who_did_what_and_why_to_those_who_may_see_it(
    api: httpx.AsyncClient, as_key: Any
) -> None:
    me = (await api.get("/v1/users/me")).json()
    top = await folder(api, unique("audited"))
    sub = await folder(api, "sub", top["id"])
    [file] = (await upload(api, sub["id"], ("f.txt", text("f"))))["files"]
    june = await member(api, "june")
    await invite(api, top["id"], june["email"], "editor")
    deleted = await api.delete(f"/v1/folders/{sub['id']}")
    assert deleted.status_code == 204

    async def history(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        cursor = None
        for _ in range(100):
            query = {**params, "limit": 2, **({"cursor": cursor} if cursor else {})}
            answer = await client.get("/v1/audit", params=query)
            assert answer.status_code == 200, answer.text
            found += answer.json()["items"]
            cursor = answer.json()["next_cursor"]
            if cursor is None:
                return found
        raise AssertionError("the audit never ended")

    # The folder's history across contexts: created (catalog), its creator made its
    # admin in reaction (acl, caused by the creation), then shared (acl).
    events = await history(api, subject_id=top["id"])
    assert [e["type"] for e in events] == [
        "catalog.FolderCreated",
        "acl.CollaboratorAdded",
        "acl.CollaboratorAdded",
    ], events
    assert events[1]["data"]["user_id"] == me["id"]
    assert events[1]["causation_id"] == events[0]["event_id"]
    assert events[2]["data"]["user_id"] == june["id"]
    assert all(e["actor_id"] == me["id"] for e in events)
    assert {
        "event_id",
        "type",
        "occurred_at",
        "actor_id",
        "subject_id",
        "data",
        "causation_id",
    } <= set(events[0])

    # The file's deletion was caused by its folder's.
    [folder_gone] = await history(api, subject_id=sub["id"], type="catalog.FolderDeleted")
    [file_gone] = await history(api, subject_id=file["id"], type="catalog.FileDeleted")
    assert file_gone["causation_id"] == folder_gone["event_id"]

    # Keys are never in it.
    for event in await history(api, subject_id=june["id"]):
        assert "key_hash" not in event["data"]

    client = as_key(june["api_key"])
    error(await client.get("/v1/audit"), 403, "forbidden")
    assert len(await history(client, subject_id=top["id"])) == 3
    error(await client.get("/v1/audit", params={"subject_id": file["id"]}), 404)
    outsider = await folder(api, unique("not-junes"))
    error(await client.get("/v1/audit", params={"subject_id": outsider["id"]}), 404)
    # Her own actions she may always read.
    described = await client.patch(
        f"/v1/folders/{top['id']}", json={"description": "june was here"}
    )
    assert described.status_code == 200, described.text
    own = await history(client, actor_id=june["id"])
    assert [(e["type"], e["subject_id"]) for e in own] == [("catalog.FolderDescribed", top["id"])]


async def test_a_datasets_history_lists_to_a_member_only_the_files_they_see(
    api: httpx.AsyncClient, as_key: Any
) -> None:
    # As its file list and count do: the member's dataset holds a file of a folder they
    # have no role on, which its history must not name either (nor count).
    theirs, others = await folder(api, unique("seen")), await folder(api, unique("unseen"))
    [seen] = (await upload(api, theirs["id"], ("seen.txt", text("s"))))["files"]
    [unseen] = (await upload(api, others["id"], ("unseen.txt", text("u"))))["files"]
    kim = await member(api, "kim")
    await invite(api, theirs["id"], kim["email"], "user")
    made = await api.post("/v1/datasets", json={"name": unique("mixed")})
    assert made.status_code == 201, made.text
    dataset = made.json()["id"]
    both = [seen["id"], unseen["id"]]
    added = await api.post(f"/v1/datasets/{dataset}/files", json={"file_ids": both})
    assert added.status_code == 200, added.text
    removed = await api.delete(f"/v1/datasets/{dataset}/files/{unseen['id']}")
    assert removed.status_code == 204, removed.text
    shared = await api.post(
        f"/v1/datasets/{dataset}/collaborators", json={"emails": [kim["email"]], "role": "user"}
    )
    assert shared.status_code == 200, shared.text

    async def links(client: httpx.AsyncClient) -> list[tuple[str, list[str]]]:
        answer = await client.get(
            "/v1/audit",
            params={
                "subject_id": dataset,
                "type": ["datasets.FilesLinked", "datasets.FilesUnlinked"],
            },
        )
        assert answer.status_code == 200, answer.text
        return [(e["type"], sorted(e["data"]["file_ids"])) for e in answer.json()["items"]]

    assert await links(as_key(kim["api_key"])) == [
        ("datasets.FilesLinked", [seen["id"]]),
        ("datasets.FilesUnlinked", []),
    ]
    # An org admin reads them whole.
    assert await links(api) == [
        ("datasets.FilesLinked", sorted(both)),
        ("datasets.FilesUnlinked", [unseen["id"]]),
    ]


async def test_a_members_own_audit_hides_the_datasets_they_may_not_see_and_pages_to_its_end(
    api: httpx.AsyncClient, as_key: Any
) -> None:
    # Bob edits a folder the admin's private dataset is synced to: his uploads link his
    # files into it, in his name, and his own audit must not tell him it exists.
    top = await folder(api, unique("synced-by-two"))
    bob = await member(api, "bob")
    await invite(api, top["id"], bob["email"], "editor")
    bobs = as_key(bob["api_key"])
    private = await api.post(
        "/v1/datasets", json={"name": unique("private"), "synced_folder_id": top["id"]}
    )
    assert private.status_code == 201, private.text
    his = await bobs.post(
        "/v1/datasets", json={"name": unique("his"), "synced_folder_id": top["id"]}
    )
    assert his.status_code == 201, his.text
    files = [
        (await upload(bobs, top["id"], (f"{n}.txt", text(str(n)))))["files"][0]["id"]
        for n in range(4)
    ]

    async def all_linked() -> bool:
        for dataset in (private.json()["id"], his.json()["id"]):
            answer = await api.get(
                "/v1/audit", params={"subject_id": dataset, "type": "datasets.FilesLinked"}
            )
            assert answer.status_code == 200, answer.text
            if not set(files) <= {f for e in answer.json()["items"] for f in e["data"]["file_ids"]}:
                return False
        return True

    await eventually(all_linked, what="the uploads linked in both datasets")

    async def walk(limit: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        cursor = None
        for _ in range(200):
            query = {
                "actor_id": bob["id"],
                "limit": limit,
                **({"cursor": cursor} if cursor else {}),
            }
            answer = await bobs.get("/v1/audit", params=query)
            assert answer.status_code == 200, answer.text
            found += answer.json()["items"]
            cursor = answer.json()["next_cursor"]
            if cursor is None:
                return found
        raise AssertionError("the audit never ended")

    whole = await walk(1000)
    subjects = {e["subject_id"] for e in whole}
    assert private.json()["id"] not in subjects, [e["type"] for e in whole]
    # His own dataset's links are his to read.
    assert his.json()["id"] in subjects
    assert {
        f
        for e in whole
        if e["subject_id"] == his.json()["id"]
        for f in e["data"].get("file_ids", [])
    } == set(files)
    # A page at a time, the hidden rows between them do not end the walk early (some
    # pages come back empty), nor change what it finds.
    assert [e["event_id"] for e in await walk(1)] == [e["event_id"] for e in whole]
    # An org admin sees them all.
    assert private.json()["id"] in {
        e["subject_id"]
        for e in (await api.get("/v1/audit", params={"actor_id": bob["id"], "limit": 1000})).json()[
            "items"
        ]
    }


async def test_only_a_top_level_folders_creator_or_an_org_admin_renames_or_restores_it(
    api: httpx.AsyncClient, as_key: Any
) -> None:
    # Top-level names are unique per creator: a rename of Alice's shared folder by Bob
    # answered 409 or 200 told him whether she has a private folder of that name.
    alice, bob = await member(api, "alice"), await member(api, "bob")
    alices, bobs = as_key(alice["api_key"]), as_key(bob["api_key"])
    shared = await folder(alices, unique("research"))
    private = unique("falcon")
    await folder(alices, private)
    await invite(alices, shared["id"], bob["email"], "admin")
    at = f"/v1/folders/{shared['id']}"
    for name in (private, unique("free")):  # whatever the name: it is never compared
        refused = error(await bobs.patch(at, json={"name": name}), 403, "forbidden")
        assert "creator or an organisation admin" in refused["message"], refused
    # All else of it stays his to edit, and the names of what is in it.
    described = await bobs.patch(at, json={"description": "bob's notes"})
    assert described.status_code == 200, described.text
    unchanged = await bobs.patch(at, json={"name": shared["name"], "description": "again"})
    assert unchanged.status_code == 200, unchanged.text
    sub = await folder(bobs, "sub", shared["id"])
    # Each folder's answer says so, for an app to offer Rename where it may be done.
    assert (await bobs.get(at)).json()["may_rename"] is False
    assert (await bobs.get(f"/v1/folders/{sub['id']}")).json()["may_rename"] is True
    assert (await alices.get(at)).json()["may_rename"] is True
    renamed = await bobs.patch(f"/v1/folders/{sub['id']}", json={"name": "sub 2"})
    assert renamed.status_code == 200, renamed.text
    # Its creator hears of her own clash, and renames it; so may an org admin.
    error(await alices.patch(at, json={"name": private}), 409, "name_taken")
    for client in (alices, api):
        answer = await client.patch(at, json={"name": unique("renamed")})
        assert answer.status_code == 200, answer.text

    # Carol edits only the folder inside it: the top-level one is not hers to see.
    carol = await member(api, "carol")
    await invite(alices, sub["id"], carol["email"], "editor")
    # A restore beside what its creator made meanwhile would tell the same.
    assert (await alices.delete(at)).status_code == 204
    # The trash says so ahead, for an app to offer Restore where it may be done.
    for client, may in ((bobs, False), (alices, True), (api, True)):
        trash = (await client.get("/v1/trash", params={"limit": 1000})).json()["items"]
        assert {i["id"]: i["may_restore"] for i in trash}[shared["id"]] is may
    error(
        await bobs.post("/v1/trash/restore", json={"folder_ids": [shared["id"]]}), 403, "forbidden"
    )
    # Nor through a folder of it brought back with the path above it.
    error(await bobs.post("/v1/trash/restore", json={"folder_ids": [sub["id"]]}), 403, "forbidden")
    # Refused to Carol too, without the name or id of the folder above hers.
    answer = await as_key(carol["api_key"]).post(
        "/v1/trash/restore", json={"folder_ids": [sub["id"]]}
    )
    refused = error(answer, 403, "forbidden")
    assert shared["id"] not in answer.text and shared["name"] not in answer.text, refused
    restored = await alices.post("/v1/trash/restore", json={"folder_ids": [shared["id"]]})
    assert restored.status_code == 200, restored.text


async def test_the_trash_tells_a_restore_that_would_bring_back_a_top_level_folder(
    api: httpx.AsyncClient, as_key: Any
) -> None:
    # What Bob deleted himself in Alice's shared folder, before she trashed the folder:
    # its restore brings the folder back too, at the top level, which only she (or an
    # org admin) may do; the trash said Bob might, and the restore was then refused.
    alice, bob = await member(api, "alice"), await member(api, "bob")
    alices, bobs = as_key(alice["api_key"]), as_key(bob["api_key"])
    shared = await folder(alices, unique("shared"))
    await invite(alices, shared["id"], bob["email"], "admin")
    sub = await folder(bobs, "sub", shared["id"])
    [file] = (await upload(bobs, shared["id"], ("b.txt", text("b"))))["files"]
    assert (await bobs.delete(f"/v1/folders/{sub['id']}")).status_code == 204
    assert (await bobs.delete(f"/v1/files/{file['id']}")).status_code == 204
    mine = {i["id"]: i["may_restore"] for i in (await bobs.get("/v1/trash")).json()["items"]}
    assert mine[sub["id"]] is True and mine[file["id"]] is True  # its folder is there
    assert (await alices.delete(f"/v1/folders/{shared['id']}")).status_code == 204
    for client, may in ((bobs, False), (alices, True), (api, True)):
        trash = (await client.get("/v1/trash", params={"limit": 1000})).json()["items"]
        told = {i["id"]: i["may_restore"] for i in trash}
        assert (told[sub["id"]], told[file["id"]]) == (may, may), client
    for body in ({"folder_ids": [sub["id"]]}, {"file_ids": [file["id"]]}):
        error(await bobs.post("/v1/trash/restore", json=body), 403, "forbidden")
    restored = await alices.post("/v1/trash/restore", json={"file_ids": [file["id"]]})
    assert restored.status_code == 200, restored.text


@pytest.fixture(scope="module")
def second_gateway(stack: Any) -> str:
    return str(stack.add_gateway())


async def test_revocations_hold_within_a_second_on_every_gateway_replica(
    api: httpx.AsyncClient, second_gateway: str
) -> None:
    top = await folder(api, unique("replicas"))
    [file] = (await upload(api, top["id"], ("r.txt", text("r"))))["files"]
    kim = await member(api, "kim")
    await invite(api, top["id"], kim["email"], "editor")
    async with httpx.AsyncClient(
        base_url=second_gateway, headers={"Authorization": f"Bearer {kim['api_key']}"}
    ) as elsewhere:
        # The other replica knows her and her grant (and caches them).
        assert (await elsewhere.get(f"/v1/files/{file['id']}")).status_code == 200

        removed = await api.delete(f"/v1/folders/{top['id']}/collaborators/{kim['id']}")
        assert removed.status_code == 204, removed.text

        async def unseen() -> bool:
            return (await elsewhere.get(f"/v1/files/{file['id']}")).status_code == 404

        await eventually(unseen, within=1.0, what="the grant gone on the other replica")

        [key] = (await api.get(f"/v1/users/{kim['id']}/keys")).json()["items"]
        assert (await elsewhere.get("/v1/users/me")).status_code == 200
        assert (await api.delete(f"/v1/keys/{key['id']}")).status_code == 204

        async def refused() -> bool:
            return (await elsewhere.get("/v1/users/me")).status_code == 401

        await eventually(refused, within=1.0, what="the key refused on the other replica")
