"""Every public HTTP route has its RPC (proto/files/v1/files.proto): users and keys, moves
and bulk deletes, image groups, DICOM, slices and thumbnails, integrations and imports,
upload sessions, dataset sharing and the audit, each with HTTP's rights and errors."""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2
from minio import Minio

from services.gateway import grpc_api
from services.gateway.files_pb.files.v1 import files_pb2 as pb
from services.gateway.routes import ROUTES
from shared.kit.stack import Stack
from tests.cloud_fixtures import MotoS3
from tests.conftest import eventually
from tests.e2e.conftest import BUCKET
from tests.e2e.support import png, unique
from tests.e2e.test_dicom import fresh_study, slices
from tests.e2e.test_grpc import ADMIN, Client, drained, key, member, refused, send
from tests.e2e.test_imports import put

# Public routes the gateway answers itself, which the services' merged /openapi.json
# leaves out today (the gateway's own route table may list them: then they are there twice).
COMPOSED = {
    ("GET", "/v1/files/{}/content"),
    ("GET", "/v1/files/{}/thumbnail"),
    ("GET", "/v1/audit"),
}
# Public routes with no RPC, and why.
EXCLUDED = {
    ("POST", "/v1/sessions"): "the web app's sign-in: a cookie session, for browsers",
    ("DELETE", "/v1/sessions"): "the web app's sign-out",
    ("POST", "/v1/integrations/{}/events"): "a bucket's webhook (S3 via SNS, MinIO): buckets"
    " speak HTTP, authenticated by the integration's events token",
    **{
        (route.method, route.template): "DICOMweb: the standard HTTP API viewers speak"
        " (multipart/related answers of instances and frames)"
        for route in ROUTES
        if "/dicomweb/" in route.template
    },
}


def shape(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


@pytest.fixture
async def client(platform: Stack) -> AsyncIterator[Client]:
    async with grpc.aio.insecure_channel(platform.grpc_target) as channel:
        yield Client(channel)


async def as_http(call: Awaitable[Any], answer: httpx.Response, status: grpc.StatusCode) -> None:
    """The RPC is refused as the same request over HTTP is: same status and code."""
    assert answer.status_code >= 400, answer.text
    trailing = await refused(call, status, answer.json()["error"]["code"])
    assert trailing["files-http-status"] == str(answer.status_code)


def test_every_rpc_has_its_route_and_no_other() -> None:
    """The gateway would refuse to start with an RPC of the proto that has no route."""
    handlers = grpc_api.Api(lambda *_: None).handlers()  # type: ignore[arg-type,return-value]
    services = pb.DESCRIPTOR.services_by_name.values()
    assert len(handlers) == len(services)
    rpcs = {f"{s.name}/{m.name}" for s in services for m in s.methods}
    assert rpcs == set(grpc_api.UNARY) | set(grpc_api.STREAMED)
    assert not set(grpc_api.UNARY) & set(grpc_api.STREAMED)


async def test_every_public_http_route_has_an_rpc(api: httpx.AsyncClient) -> None:
    document = await api.get("/openapi.json")
    assert document.status_code == 200, document.text
    public = {
        (method.upper(), shape(path))
        for path, operations in document.json()["paths"].items()
        if path.startswith("/v1/")
        for method in operations
        if method in ("get", "post", "put", "patch", "delete")
    }
    assert len(public) > 40  # the document lists the API, not a part of it
    public |= COMPOSED
    served = {(r.method, shape(r.path)) for r in grpc_api.UNARY.values()}
    served |= {(method, shape(path)) for method, path in grpc_api.STREAMED.values()}
    excluded = {(method, shape(path)) for method, path in EXCLUDED}
    assert sorted(public - served - excluded) == []
    # And no RPC stands for a route that is not there.
    assert sorted(served - public) == []


async def test_users_and_keys(client: Client, api: httpx.AsyncClient, as_key: Any) -> None:
    email = f"{uuid.uuid4().hex[:12]}@grpc.example"
    made = await client.users.CreateUser(
        pb.CreateUserRequest(email=email, name="Ada", org_role="member"), metadata=ADMIN
    )
    assert (made.email, made.org_role) == (email, "member") and made.api_key
    theirs = key(made.api_key)
    me = await client.users.GetMe(pb.Empty(), metadata=theirs)
    assert (me.id, me.name, me.HasField("api_key")) == (made.id, "Ada", False)
    listed = await client.users.ListUsers(pb.ListUsersRequest(limit=1000), metadata=ADMIN)
    assert made.id in [u.id for u in listed.items]

    # A second key, listed, revoked (twice: no error); then it opens nothing.
    second = await client.users.IssueKey(pb.UserKeysRequest(user_id=made.id), metadata=theirs)
    assert second.user_id == made.id and second.api_key
    keys = await client.users.ListKeys(pb.UserKeysRequest(user_id=made.id), metadata=theirs)
    assert {k.id: k.revoked for k in keys.items}[second.id] is False
    for _ in range(2):
        await client.users.RevokeKey(pb.RevokeKeyRequest(key_id=second.id), metadata=theirs)
    await eventually(
        lambda: _fails(client.users.GetMe(pb.Empty(), metadata=key(second.api_key))),
        what="the revoked key refused",
    )
    assert (await client.users.GetMe(pb.Empty(), metadata=theirs)).id == made.id

    # Rights: a member lists no users and issues no key for another, as over HTTP.
    member_http = as_key(made.api_key)
    await as_http(
        client.users.ListUsers(pb.ListUsersRequest(), metadata=theirs),
        await member_http.get("/v1/users"),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    other = await member(api)
    await as_http(
        client.users.IssueKey(pb.UserKeysRequest(user_id=other["id"]), metadata=theirs),
        await member_http.post(f"/v1/users/{other['id']}/keys"),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    # Bad input.
    await as_http(
        client.users.CreateUser(
            pb.CreateUserRequest(email=f"x{email}", name="B", org_role="boss"), metadata=ADMIN
        ),
        await api.post("/v1/users", json={"email": f"x{email}", "name": "B", "org_role": "boss"}),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    await refused(
        client.users.RevokeKey(pb.RevokeKeyRequest(key_id="../users"), metadata=ADMIN),
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_request",
    )


async def _fails(call: Awaitable[Any]) -> bool:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code() == grpc.StatusCode.UNAUTHENTICATED
    return False


async def test_files_moves_bulk_deletes_and_summaries(
    client: Client, api: httpx.AsyncClient
) -> None:
    source = await client.folders.CreateFolder(
        pb.CreateFolderRequest(name=unique("grpc-from")), metadata=ADMIN
    )
    target = await client.folders.CreateFolder(
        pb.CreateFolderRequest(name=unique("grpc-to")), metadata=ADMIN
    )
    uploaded = await client.files.Upload(
        send(("a.png", png(4, 4)), ("b.txt", b"bee\n"), folder_id=source.id), metadata=ADMIN
    )
    image, notes = uploaded.files
    dataset = await client.datasets.CreateDataset(
        pb.CreateDatasetRequest(name=unique("grpc-moved"), synced_folder_id=source.id),
        metadata=ADMIN,
    )

    summary = await client.folders.GetFolderSummary(
        pb.GetFolderRequest(folder_id=source.id), metadata=ADMIN
    )
    assert (summary.folder_id, summary.files) == (source.id, 2)
    assert summary.by_kind["image"].files == 1 and summary.bytes == image.size + notes.size

    metadata = struct_pb2.Struct()
    metadata.update({"reviewed": True})
    renamed = await client.files.UpdateFile(
        pb.UpdateFileRequest(file_id=notes.id, name="notes.txt", metadata=metadata),
        metadata=ADMIN,
    )
    assert (renamed.name, dict(renamed.metadata)) == ("notes.txt", {"reviewed": True})

    # Move: a dry run changes nothing and names the links the synced dataset would lose.
    dry = await client.files.Move(
        pb.MoveRequest(file_ids=[image.id], target_folder_id=target.id, dry_run=True),
        metadata=ADMIN,
    )
    assert (dry.dry_run, dry.files, dry.moved) == (True, 1, 0)
    assert [(d.id, d.links_removed) for d in dry.datasets] == [(dataset.id, 1)]
    assert (
        await client.files.GetFile(pb.GetFileRequest(file_id=image.id), metadata=ADMIN)
    ).folder_id == source.id
    call = client.files.Move(
        pb.MoveRequest(file_ids=[image.id], target_folder_id=target.id), metadata=ADMIN
    )
    assert ((await call).moved, (await call).dry_run) == (1, False)
    read_after = (
        *ADMIN,
        ("files-consistency", dict(await call.trailing_metadata())["files-consistency"]),
    )
    assert (
        await client.files.GetFile(pb.GetFileRequest(file_id=image.id), metadata=read_after)
    ).folder_id == target.id
    linked = await client.files.ListFileDatasets(
        pb.GetFileRequest(file_id=notes.id), metadata=read_after
    )
    assert [d.id for d in linked.items] == [dataset.id]

    # Bulk delete: dry run, then for real; and one file deleted on its own.
    dry_delete = await client.files.BulkDelete(
        pb.BulkDeleteRequest(folder_ids=[source.id], dry_run=True), metadata=ADMIN
    )
    assert (dry_delete.dry_run, dry_delete.folders, dry_delete.files) == (True, 1, 1)
    deleted = await client.files.BulkDelete(
        pb.BulkDeleteRequest(folder_ids=[source.id]), metadata=ADMIN
    )
    assert deleted.deleted == 1
    await client.files.DeleteFile(pb.GetFileRequest(file_id=image.id), metadata=ADMIN)
    for gone in (notes.id, image.id):
        await refused(
            client.files.GetFile(pb.GetFileRequest(file_id=gone), metadata=ADMIN),
            grpc.StatusCode.NOT_FOUND,
            "not_found",
        )

    # Rights: a member with no role on the folder, as over HTTP.
    outsider = await member(api)
    theirs = key(outsider["api_key"])
    async with httpx.AsyncClient(
        base_url=str(api.base_url), headers={"Authorization": f"Bearer {outsider['api_key']}"}
    ) as their_http:
        await as_http(
            client.files.BulkDelete(pb.BulkDeleteRequest(folder_ids=[target.id]), metadata=theirs),
            await their_http.post("/v1/delete", json={"folder_ids": [target.id]}),
            grpc.StatusCode.NOT_FOUND,
        )
        await as_http(
            client.folders.GetFolderSummary(
                pb.GetFolderRequest(folder_id=target.id), metadata=theirs
            ),
            await their_http.get(f"/v1/folders/{target.id}/summary"),
            grpc.StatusCode.NOT_FOUND,
        )
    # Refused: a folder into itself; bad input: an id that is not one.
    await refused(
        client.files.Move(
            pb.MoveRequest(folder_ids=[target.id], target_folder_id=target.id), metadata=ADMIN
        ),
        grpc.StatusCode.FAILED_PRECONDITION,  # HTTP's 409
    )
    await as_http(
        client.files.Move(
            pb.MoveRequest(file_ids=["nope"], target_folder_id=target.id), metadata=ADMIN
        ),
        await api.post("/v1/move", json={"file_ids": ["nope"], "target_folder_id": target.id}),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def pictures(stream: AsyncIterator[pb.Picture]) -> tuple[pb.PictureHeader, bytes]:
    messages = await drained(stream)
    assert messages[0].WhichOneof("part") == "header"
    assert all(m.WhichOneof("part") == "chunk" for m in messages[1:])
    return messages[0].header, b"".join(m.chunk for m in messages[1:])


async def group_stream(
    folder_id: str, kind: str, name: str, *files: tuple[str, bytes]
) -> AsyncIterator[pb.UploadImageGroupRequest]:
    yield pb.UploadImageGroupRequest(
        group=pb.ImageGroupHeader(folder_id=folder_id, kind=kind, name=name)
    )
    for file_name, data in files:
        yield pb.UploadImageGroupRequest(file_name=file_name)
        for at in range(0, len(data), 50):
            yield pb.UploadImageGroupRequest(chunk=data[at : at + 50])


async def test_image_groups_dicom_slices_and_thumbnails(
    client: Client, api: httpx.AsyncClient
) -> None:
    top = await client.folders.CreateFolder(
        pb.CreateFolderRequest(name=unique("grpc-media")), metadata=ADMIN
    )
    made = await client.files.UploadImageGroup(
        group_stream(top.id, "image_group", "cats", ("a.png", png(6, 4)), ("b.png", png(3, 3))),
        metadata=ADMIN,
    )
    assert (made.file.kind, made.file.name, made.folder.parent_id) == (
        "image_group",
        "cats",
        top.id,
    )
    assert made.file.group.constituent_folder_id == made.folder.id
    assert len(made.file.group.file_ids) == 2

    # DICOM: a series of three slices, made by a job; a slice drawn as a PNG.
    study = fresh_study()
    job = await client.files.UploadDicom(
        send(*slices(study, 1, 3), folder_id=top.id, chunk=4096), metadata=ADMIN
    )
    done: list[pb.Job] = []

    async def finished() -> bool:
        found = await client.jobs.GetJob(pb.GetJobRequest(job_id=job.job_id), metadata=ADMIN)
        done[:] = [found]
        return found.status == "done" and len(found.files) == 1

    await eventually(finished, 30, "the DICOM job done")
    [series] = done[0].files
    assert (series.kind, series.dicom.instances) == ("dicom_series", 3)
    header, drawn = await pictures(
        client.files.GetSlice(pb.GetSliceRequest(file_id=series.id, index=1), metadata=ADMIN)
    )
    assert header.mime_type == "image/png" and drawn.startswith(b"\x89PNG")
    assert header.length == len(drawn)

    # A thumbnail, once the thumbnails context has made it.
    image_id = made.file.group.file_ids[0]
    seen: list[tuple[pb.PictureHeader, bytes]] = []

    async def thumbnail() -> bool:
        try:
            seen[:] = [
                await pictures(
                    client.files.GetThumbnail(
                        pb.GetThumbnailRequest(file_id=image_id), metadata=ADMIN
                    )
                )
            ]
        except grpc.aio.AioRpcError as error:
            trailing = dict(error.trailing_metadata() or ())
            assert trailing.get("files-error-code") == "thumbnail_not_ready", error
            return False
        return True

    await eventually(thumbnail, 30, "the thumbnail")
    thumb_header, picture = seen[0]
    assert thumb_header.mime_type.startswith("image/") and picture and thumb_header.etag

    # Rights: an outsider, as over HTTP.
    outsider = await member(api)
    theirs = key(outsider["api_key"])
    async with httpx.AsyncClient(
        base_url=str(api.base_url), headers={"Authorization": f"Bearer {outsider['api_key']}"}
    ) as their_http:
        await as_http(
            drained(client.files.GetSlice(pb.GetSliceRequest(file_id=series.id), metadata=theirs)),
            await their_http.get(f"/v1/files/{series.id}/slices/0"),
            grpc.StatusCode.NOT_FOUND,
        )
        await as_http(
            drained(
                client.files.GetThumbnail(pb.GetThumbnailRequest(file_id=image_id), metadata=theirs)
            ),
            await their_http.get(f"/v1/files/{image_id}/thumbnail"),
            grpc.StatusCode.NOT_FOUND,
        )
        await refused(
            client.files.UploadDicom(
                send(*slices(study, 2, 1), folder_id=top.id, chunk=4096), metadata=theirs
            ),
            grpc.StatusCode.NOT_FOUND,
            "not_found",
        )
    # Bad input: not a kind of group; a chunk before any image's name; a slice of an image.
    for stream in (
        group_stream(top.id, "collage", "x", ("a.png", png())),
        _chunk_first(top.id),
    ):
        await refused(
            client.files.UploadImageGroup(stream, metadata=ADMIN), grpc.StatusCode.INVALID_ARGUMENT
        )
    await refused(
        drained(client.files.GetSlice(pb.GetSliceRequest(file_id=image_id), metadata=ADMIN)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "not_a_dicom_series",
    )
    # None of the refused group uploads made a file.
    listed = await client.folders.ListItems(pb.ListItemsRequest(folder_id=top.id), metadata=ADMIN)
    assert sorted(i.file.kind for i in listed.items if i.WhichOneof("item") == "file") == [
        "dicom_series",
        "image_group",
    ]


async def _chunk_first(folder_id: str) -> AsyncIterator[pb.UploadImageGroupRequest]:
    yield pb.UploadImageGroupRequest(
        group=pb.ImageGroupHeader(folder_id=folder_id, kind="image_group", name="early")
    )
    yield pb.UploadImageGroupRequest(chunk=b"no name yet")


async def test_integrations_and_imports(
    client: Client, api: httpx.AsyncClient, moto: MotoS3, bucket: Minio
) -> None:
    prefix = f"grpc-{uuid.uuid4().hex[:8]}/"
    put(bucket, f"{prefix}one.png", png(5, 5))
    put(bucket, f"{prefix}two.txt", b"two\n")
    made = await client.integrations.CreateIntegration(
        pb.CreateIntegrationRequest(
            name=unique("grpc-lab"),
            provider="s3",
            endpoint=moto.endpoint,
            region="us-east-1",
            bucket=BUCKET,
            access_key=moto.access_key,
            secret_key=moto.secret_key,
        ),
        metadata=ADMIN,
    )
    assert (made.bucket, made.endpoint, list(made.shared_with)) == (BUCKET, moto.endpoint, [])
    listed = await client.integrations.ListIntegrations(
        pb.ListIntegrationsRequest(limit=1000), metadata=ADMIN
    )
    assert made.id in [i.id for i in listed.items]

    top = await client.folders.CreateFolder(
        pb.CreateFolderRequest(name=unique("grpc-import")), metadata=ADMIN
    )
    job = await client.integrations.ImportObjects(
        pb.ImportObjectsRequest(folder_id=top.id, integration_id=made.id, prefix=prefix),
        metadata=ADMIN,
    )
    found: list[pb.Job] = []

    async def finished() -> bool:
        got = await client.jobs.GetJob(pb.GetJobRequest(job_id=job.job_id), metadata=ADMIN)
        assert got.status != "failed", got
        found[:] = [got]
        return got.status == "done" and len(got.files) == 2

    await eventually(finished, 30, "the import done")
    assert sorted((f.name, f.source.type) for f in found[0].files) == [
        ("one.png", "cloud"),
        ("two.txt", "cloud"),
    ]

    # Shared with a member: they see it, may not change it (as over HTTP); then unshared.
    user = await member(api)
    theirs = key(user["api_key"])
    shared = await client.integrations.ShareIntegration(
        pb.ShareIntegrationRequest(integration_id=made.id, shared_with=[user["id"]]),
        metadata=ADMIN,
    )
    assert list(shared.shared_with) == [user["id"]]
    seen = await client.integrations.GetIntegration(
        pb.GetIntegrationRequest(integration_id=made.id), metadata=theirs
    )
    assert seen.id == made.id and not seen.shared_with
    async with httpx.AsyncClient(
        base_url=str(api.base_url), headers={"Authorization": f"Bearer {user['api_key']}"}
    ) as their_http:
        await as_http(
            client.integrations.DeleteIntegration(
                pb.GetIntegrationRequest(integration_id=made.id), metadata=theirs
            ),
            await their_http.delete(f"/v1/integrations/{made.id}"),
            grpc.StatusCode.PERMISSION_DENIED,
        )
    emptied = await client.integrations.ShareIntegration(
        pb.ShareIntegrationRequest(integration_id=made.id), metadata=ADMIN
    )
    assert list(emptied.shared_with) == []
    await refused(
        client.integrations.GetIntegration(
            pb.GetIntegrationRequest(integration_id=made.id), metadata=theirs
        ),
        grpc.StatusCode.NOT_FOUND,
        "not_found",
    )
    # Bad input: an endpoint we may not call; a user that does not exist.
    await refused(
        client.integrations.CreateIntegration(
            pb.CreateIntegrationRequest(
                name=unique("grpc-bad"),
                provider="s3",
                endpoint="https://169.254.169.254",
                bucket=BUCKET,
                access_key="a",
                secret_key="b",
            ),
            metadata=ADMIN,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "endpoint_not_allowed",
    )
    # A role instead of keys reaches ingest (this platform has no web identity to assume it).
    await refused(
        client.integrations.CreateIntegration(
            pb.CreateIntegrationRequest(
                name=unique("grpc-role"),
                provider="s3",
                endpoint=moto.endpoint,
                region="us-east-1",
                bucket=BUCKET,
                role_arn="arn:aws:iam::123456789012:role/importer",
            ),
            metadata=ADMIN,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "web_identity_unavailable",
    )
    await refused(
        client.integrations.ShareIntegration(
            pb.ShareIntegrationRequest(integration_id=made.id, shared_with=[str(uuid.uuid4())]),
            metadata=ADMIN,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unknown_users",
    )
    # The files imported through it keep it (as over HTTP: 409).
    await refused(
        client.integrations.DeleteIntegration(
            pb.GetIntegrationRequest(integration_id=made.id), metadata=ADMIN
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "integration_in_use",
    )


async def test_cloud_synced_folders(client: Client, moto: MotoS3, bucket: Minio) -> None:
    prefix = f"grpc-sync-{uuid.uuid4().hex[:8]}/"
    put(bucket, f"{prefix}deep/one.png", png(5, 5))
    made = await client.integrations.CreateIntegration(
        pb.CreateIntegrationRequest(
            name=unique("grpc-sync"),
            provider="s3",
            endpoint=moto.endpoint,
            region="us-east-1",
            bucket=BUCKET,
            access_key=moto.access_key,
            secret_key=moto.secret_key,
        ),
        metadata=ADMIN,
    )
    assert made.events_token
    folder = await client.folders.CreateFolder(
        pb.CreateFolderRequest(
            name=unique("grpc-synced"),
            # GetFolderSync's name sent back (as a client copying a folder's would): ignored.
            cloud_sync=pb.CloudSync(integration_id=made.id, prefix=prefix, integration_name="x"),
        ),
        metadata=ADMIN,
    )
    assert folder.cloud_sync.prefix == prefix and folder.sync_job_id
    put(bucket, f"{prefix}two.png", png(3, 3))
    job = await client.integrations.SyncFolder(
        pb.SyncFolderRequest(folder_id=folder.id), metadata=ADMIN
    )

    async def listed() -> bool:
        got = await client.jobs.GetJob(pb.GetJobRequest(job_id=job.job_id), metadata=ADMIN)
        assert got.status != "failed", got
        items = await client.folders.ListItems(
            pb.ListItemsRequest(folder_id=folder.id), metadata=ADMIN
        )
        names = {i.folder.name or i.file.name for i in items.items}
        return got.status == "done" and {"deep", "two.png"} <= names

    await eventually(listed, 30, "the synced folder's subfolder and new file")
    rotated = await client.integrations.RotateIntegration(
        pb.RotateIntegrationRequest(integration_id=made.id, rotate_events_token=True),
        metadata=ADMIN,
    )
    assert rotated.events_token and rotated.events_token != made.events_token
    await refused(
        client.integrations.DeleteIntegration(
            pb.GetIntegrationRequest(integration_id=made.id), metadata=ADMIN
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "integration_in_use",
    )


MiB = 1024 * 1024


async def part_stream(url: str, data: bytes) -> AsyncIterator[pb.PutPartRequest]:
    yield pb.PutPartRequest(header=pb.PutPartHeader(url=url))
    for at in range(0, len(data), 256 * 1024):
        yield pb.PutPartRequest(chunk=data[at : at + 256 * 1024])


@pytest.mark.parametrize("blobs", ["local"], indirect=True)
async def test_upload_sessions_in_parts(client: Client, api: httpx.AsyncClient) -> None:
    """With the local store the parts' URLs are the gateway's: PutPart streams to them."""
    top = await client.folders.CreateFolder(
        pb.CreateFolderRequest(name=unique("grpc-parts")), metadata=ADMIN
    )
    head = png(40, 30)
    data = head + os.urandom(5 * MiB + 1000 - len(head))
    described = struct_pb2.Struct()
    described.update({"site": "paris", "score": 3})
    session = await client.sessions.OpenUploadSession(
        pb.OpenUploadSessionRequest(
            folder_id=top.id,
            name="scan.png",
            size=len(data),
            part_size=5 * MiB,
            metadata=described,
        ),
        metadata=ADMIN,
    )
    assert session.status == "open"
    assert dict(session.metadata) == {"site": "paris", "score": 3.0}
    assert [(p.part, p.size) for p in session.parts] == [(1, 5 * MiB), (2, 1000)]
    for part in reversed(session.parts):
        stored = await client.sessions.PutPart(
            part_stream(part.url, data[(part.part - 1) * 5 * MiB : part.part * 5 * MiB]),
            metadata=ADMIN,
        )
        assert stored.part == part.part and stored.etag
    state = await client.sessions.GetUploadSession(
        pb.UploadSessionRequest(session_id=session.id), metadata=ADMIN
    )
    assert ([p.part for p in state.parts_stored], state.bytes_stored, list(state.parts)) == (
        [1, 2],
        len(data),
        [],
    )
    completed = await client.sessions.CompleteUploadSession(
        pb.UploadSessionRequest(session_id=session.id), metadata=ADMIN
    )
    assert completed.file.sha256 == hashlib.sha256(data).hexdigest()
    assert (completed.file.kind, completed.file.size) == ("image", len(data))
    # Stored with the metadata it was opened with.
    assert dict(completed.file.metadata) == {"site": "paris", "score": 3.0}
    job = await client.jobs.GetJob(pb.GetJobRequest(job_id=completed.job_id), metadata=ADMIN)
    assert (job.progress.bytes.done, job.progress.bytes.total) == (len(data), len(data))

    # Another, aborted: then it is over.
    other = await client.sessions.OpenUploadSession(
        pb.OpenUploadSessionRequest(folder_id=top.id, name="gone.png", size=6 * MiB),
        metadata=ADMIN,
    )
    await client.sessions.AbortUploadSession(
        pb.UploadSessionRequest(session_id=other.id), metadata=ADMIN
    )
    await refused(
        client.sessions.CompleteUploadSession(
            pb.UploadSessionRequest(session_id=other.id), metadata=ADMIN
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )

    # Rights: a member with no role on the folder opens nothing there, as over HTTP.
    outsider = await member(api)
    theirs = key(outsider["api_key"])
    async with httpx.AsyncClient(
        base_url=str(api.base_url), headers={"Authorization": f"Bearer {outsider['api_key']}"}
    ) as their_http:
        await as_http(
            client.sessions.OpenUploadSession(
                pb.OpenUploadSessionRequest(folder_id=top.id, name="x.png", size=10),
                metadata=theirs,
            ),
            await their_http.post(
                f"/v1/folders/{top.id}/uploads", json={"name": "x.png", "size": 10}
            ),
            grpc.StatusCode.NOT_FOUND,
        )
    # Bad input: no size; a URL that is not one of our parts'; a part's URL badly signed.
    await refused(
        client.sessions.OpenUploadSession(
            pb.OpenUploadSessionRequest(folder_id=top.id, name="x.png"), metadata=ADMIN
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    await refused(
        client.sessions.PutPart(
            part_stream("https://bucket.example/v1/other", b"x"), metadata=ADMIN
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_request",
    )
    forged = other.parts[0].url.replace("signature=", "signature=0")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.sessions.PutPart(part_stream(forged, b"x"), metadata=ADMIN)
    assert caught.value.code() in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
    )


async def test_dataset_sharing_and_the_audit(client: Client, api: httpx.AsyncClient) -> None:
    dataset = await client.datasets.CreateDataset(
        pb.CreateDatasetRequest(name=unique("grpc-shared")), metadata=ADMIN
    )
    user = await member(api)
    theirs = key(user["api_key"])
    shared = await client.datasets.ShareDataset(
        pb.ShareDatasetRequest(dataset_id=dataset.id, emails=[user["email"]], role="user"),
        metadata=ADMIN,
    )
    assert (user["id"], "user") in [(c.user_id, c.role) for c in shared.items]
    seen = await client.datasets.GetDataset(
        pb.GetDatasetRequest(dataset_id=dataset.id), metadata=theirs
    )
    assert seen.my_role == "user"
    listed = await client.datasets.ListDatasetCollaborators(
        pb.GetDatasetRequest(dataset_id=dataset.id), metadata=theirs
    )
    assert listed.items[0].role == "admin" and len(listed.items) == 2
    async with httpx.AsyncClient(
        base_url=str(api.base_url), headers={"Authorization": f"Bearer {user['api_key']}"}
    ) as their_http:
        # A user of the dataset does not share it on; as over HTTP.
        await as_http(
            client.datasets.ShareDataset(
                pb.ShareDatasetRequest(dataset_id=dataset.id, emails=[user["email"]], role="admin"),
                metadata=theirs,
            ),
            await their_http.post(
                f"/v1/datasets/{dataset.id}/collaborators",
                json={"emails": [user["email"]], "role": "admin"},
            ),
            grpc.StatusCode.PERMISSION_DENIED,
        )
        # The audit across subjects is the org admins'.
        await as_http(
            client.audit.ListEvents(pb.ListEventsRequest(), metadata=theirs),
            await their_http.get("/v1/audit"),
            grpc.StatusCode.PERMISSION_DENIED,
        )
    await refused(
        client.datasets.ShareDataset(
            pb.ShareDatasetRequest(dataset_id=dataset.id, emails=[user["email"]], role="owner"),
            metadata=ADMIN,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    await client.datasets.UnshareDataset(
        pb.UnshareDatasetRequest(dataset_id=dataset.id, user_id=user["id"]), metadata=ADMIN
    )
    await refused(
        client.datasets.GetDataset(pb.GetDatasetRequest(dataset_id=dataset.id), metadata=theirs),
        grpc.StatusCode.NOT_FOUND,
        "not_found",
    )

    # The audit: the dataset's history, in order, its data a Struct.
    events: list[pb.Event] = []

    async def recorded() -> bool:
        page = await client.audit.ListEvents(
            pb.ListEventsRequest(subject_id=[dataset.id], limit=1000), metadata=ADMIN
        )
        events[:] = list(page.items)
        return len(events) >= 3

    await eventually(recorded, 10, "the dataset's events in the audit")
    assert all(e.subject_id == dataset.id and e.source and e.event_id for e in events)
    times = [e.occurred_at.ToDatetime() for e in events]
    assert times == sorted(times)
    assert events[0].data["name"] == dataset.name
    by_type = await client.audit.ListEvents(
        pb.ListEventsRequest(subject_id=[dataset.id], type=events[0].type), metadata=ADMIN
    )
    assert [e.event_id for e in by_type.items] == [events[0].event_id]
    # Their own actions a member may read.
    mine = await client.audit.ListEvents(pb.ListEventsRequest(actor_id=user["id"]), metadata=theirs)
    assert all(e.actor_id == user["id"] for e in mine.items)
    await refused(
        client.audit.ListEvents(pb.ListEventsRequest(limit=5000), metadata=ADMIN),
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_limit",
    )


async def test_bulk_lookup_bulk_edit_and_the_metadata_schema(
    client: Client, api: httpx.AsyncClient
) -> None:
    top = await client.folders.CreateFolder(
        pb.CreateFolderRequest(name=unique("grpc-bulk")), metadata=ADMIN
    )
    uploaded = await client.files.Upload(
        send(("a.png", png(4, 4)), ("b.txt", b"bee\n"), folder_id=top.id), metadata=ADMIN
    )
    image, notes = uploaded.files
    unknown = str(uuid.uuid4())
    found = await client.files.LookupFiles(
        pb.LookupFilesRequest(ids=[image.id, unknown, notes.id]), metadata=ADMIN
    )
    assert sorted(f.id for f in found.items) == sorted([image.id, notes.id])
    assert list(found.not_found) == [unknown]

    # The schema is the organisation's: keep the keys other tests set, add one of ours.
    score = f"score_{uuid.uuid4().hex[:8]}"
    before = await client.files.GetMetadataSchema(pb.Empty(), metadata=ADMIN)
    keys = {name: key for name, key in before.keys.items()}
    keys[score] = pb.SchemaKey(type="number")
    keys[f"{score}_grade"] = pb.SchemaKey(type="enum", values=["a", "b"])
    schema = await client.files.SetMetadataSchema(
        pb.SetMetadataSchemaRequest(keys=keys), metadata=ADMIN
    )
    assert schema.keys[score].type == "number" and schema.version == before.version + 1
    assert list(schema.keys[f"{score}_grade"].values) == ["a", "b"]

    metadata = struct_pb2.Struct()
    metadata.update({score: 7})
    edited = await client.files.UpdateFiles(
        pb.UpdateFilesRequest(
            updates=[
                pb.FileUpdate(id=image.id, description="the first", metadata=metadata),
                pb.FileUpdate(id=notes.id, name="notes.txt"),
            ]
        ),
        metadata=ADMIN,
    )
    assert edited.updated == 2
    by_id = {f.id: f for f in edited.items}
    assert by_id[image.id].description == "the first"
    assert dict(by_id[image.id].metadata) == {score: 7}
    assert by_id[notes.id].name == "notes.txt"

    # All or nothing, refused as over HTTP: a value of the wrong type changes nothing.
    wrong = struct_pb2.Struct()
    wrong.update({score: "seven"})
    body = {
        "updates": [
            {"id": notes.id, "name": "n2.txt"},
            {"id": image.id, "metadata": {score: "seven"}},
        ]
    }
    await as_http(
        client.files.UpdateFiles(
            pb.UpdateFilesRequest(
                updates=[
                    pb.FileUpdate(id=notes.id, name="n2.txt"),
                    pb.FileUpdate(id=image.id, metadata=wrong),
                ]
            ),
            metadata=ADMIN,
        ),
        await api.patch("/v1/files", json=body),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    still = await client.files.GetFile(pb.GetFileRequest(file_id=notes.id), metadata=ADMIN)
    assert still.name == "notes.txt"

    # Listings and search take HTTP's filters and order.
    def names(page: Any) -> list[str]:
        return [i.file.name for i in page.items if i.WhichOneof("item") == "file"]

    listed = await client.folders.ListItems(
        pb.ListItemsRequest(folder_id=top.id, order="name", desc=True), metadata=ADMIN
    )
    assert names(listed) == ["notes.txt", "a.png"]
    scored = await client.folders.ListItems(
        pb.ListItemsRequest(folder_id=top.id, metadata={f"{score}.gte": "5"}), metadata=ADMIN
    )
    assert names(scored) == ["a.png"]
    unlinked = await client.folders.ListItems(
        pb.ListItemsRequest(folder_id=top.id, in_dataset=False, kind="image"), metadata=ADMIN
    )
    assert names(unlinked) == ["a.png"]
    linked = await client.folders.ListItems(
        pb.ListItemsRequest(folder_id=top.id, in_dataset=True), metadata=ADMIN
    )
    assert names(linked) == []
    found_by_score = await client.files.Search(
        pb.SearchRequest(metadata={score: "7"}), metadata=ADMIN
    )
    assert names(found_by_score) == ["a.png"]
