"""The gRPC API (proto/files/v1/files.proto) through the generated client: the same
resources, rights and errors as HTTP, uploads and downloads streamed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any

import grpc
import httpx
import psutil
import pytest
from google.protobuf import struct_pb2

from services.gateway.files_pb.files.v1 import files_pb2 as pb
from services.gateway.files_pb.files.v1 import files_pb2_grpc as rpc
from shared.kit.stack import Stack
from tests.conftest import ADMIN_KEY, eventually
from tests.e2e.support import ELF, png, unique

ADMIN = (("authorization", f"Bearer {ADMIN_KEY}"),)


def key(api_key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {api_key}"),)


class Client:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.folders = rpc.FoldersStub(channel)
        self.files = rpc.FilesStub(channel)
        self.datasets = rpc.DatasetsStub(channel)
        self.collaborators = rpc.CollaboratorsStub(channel)
        self.jobs = rpc.JobsStub(channel)
        self.users = rpc.UsersStub(channel)
        self.integrations = rpc.IntegrationsStub(channel)
        self.sessions = rpc.UploadSessionsStub(channel)
        self.audit = rpc.AuditStub(channel)


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[Client]:
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        yield Client(channel)


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


async def send(
    *files: tuple[str, bytes], folder_id: str, chunk: int = 7
) -> AsyncIterator[pb.UploadRequest]:
    """An upload's messages: per file a header, then its bytes in small chunks."""
    for name, data in files:
        yield pb.UploadRequest(header=pb.UploadHeader(folder_id=folder_id, name=name))
        for part in chunked(data, chunk):
            yield pb.UploadRequest(chunk=part)


async def download(
    client: Client, file_id: str, metadata: Any = ADMIN, **span: int
) -> tuple[pb.DownloadHeader, bytes]:
    messages = [
        m
        async for m in client.files.Download(
            pb.DownloadRequest(file_id=file_id, **span), metadata=metadata
        )
    ]
    assert messages[0].WhichOneof("part") == "header"
    assert all(m.WhichOneof("part") == "chunk" for m in messages[1:])
    return messages[0].header, b"".join(m.chunk for m in messages[1:])


async def refused(
    call: Awaitable[Any], status: grpc.StatusCode, code: str | None = None
) -> dict[str, str]:
    """The call fails with this status; returns its trailing metadata."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = caught.value
    assert error.code() == status, (error.code(), error.details())
    assert error.details()
    trailing = {k: v for k, v in error.trailing_metadata() or () if isinstance(v, str)}
    assert trailing["files-error-code"], trailing
    assert trailing["files-error-details"].startswith("{"), trailing
    if code is not None:
        assert trailing["files-error-code"] == code, trailing
    return trailing


async def drained(stream: AsyncIterator[Any]) -> list[Any]:
    return [m async for m in stream]


async def member(api: httpx.AsyncClient) -> dict[str, Any]:
    email = f"{uuid.uuid4().hex[:12]}@grpc.example"
    made = await api.post("/v1/users", json={"email": email, "name": "G", "org_role": "member"})
    assert made.status_code == 201, made.text
    return dict(made.json())


async def test_folders_files_datasets_collaborators_and_jobs(
    client: Client, api: httpx.AsyncClient
) -> None:
    metadata = struct_pb2.Struct()
    metadata.update({"camera": "left", "n": 3})
    call = client.folders.CreateFolder(
        pb.CreateFolderRequest(name=unique("grpc"), description="by gRPC", metadata=metadata),
        metadata=ADMIN,
    )
    top = await call
    assert dict(await call.trailing_metadata())["files-consistency"]
    assert (top.description, top.my_role, top.HasField("parent_id")) == ("by gRPC", "admin", False)
    assert dict(top.metadata) == {"camera": "left", "n": 3}
    assert [p.id for p in top.path] == [top.id]
    # The same folder through HTTP.
    assert (await api.get(f"/v1/folders/{top.id}")).json()["name"] == top.name

    sub = await client.folders.CreateFolder(
        pb.CreateFolderRequest(name="inner", parent_id=top.id), metadata=ADMIN
    )
    assert sub.parent_id == top.id
    renamed = await client.folders.UpdateFolder(
        pb.UpdateFolderRequest(folder_id=sub.id, name="renamed"), metadata=ADMIN
    )
    assert (renamed.name, renamed.description) == ("renamed", "")
    children = await client.folders.ListFolders(
        pb.ListFoldersRequest(parent_id=top.id), metadata=ADMIN
    )
    assert [f.name for f in children.items] == ["renamed"]
    assert not children.HasField("next_cursor")

    # Uploaded by client stream, in chunks, two files in one upload.
    body = "".join(f"{n:02}-abcdef\n" for n in range(10)).encode()
    image = png(16, 8)
    call = client.files.Upload(
        send(("notes für dich.txt", body), ('pic "1".png', image), folder_id=top.id),
        metadata=ADMIN,
    )
    uploaded = await call
    assert dict(await call.trailing_metadata())["files-consistency"]
    notes, pic = uploaded.files
    assert [(f.name, f.kind, f.size) for f in uploaded.files] == [
        ("notes für dich.txt", "text", 100),
        ('pic "1".png', "image", len(image)),
    ]
    assert notes.sha256 == hashlib.sha256(body).hexdigest()
    assert (pic.media.width, pic.media.height, pic.HasField("dicom")) == (16, 8, False)
    assert notes.source.type == "upload" and notes.folder_id == top.id

    # Downloaded by server stream: whole, then ranges.
    header, data = await download(client, notes.id)
    assert data == body
    assert (header.name, header.mime_type, header.size) == ("notes für dich.txt", "text/plain", 100)
    assert (header.offset, header.length) == (0, 100)
    header, data = await download(client, notes.id, offset=10, length=20)
    assert data == body[10:30]
    assert (header.size, header.offset, header.length) == (100, 10, 20)
    header, data = await download(client, notes.id, offset=90)
    assert (data, header.offset, header.length) == (body[90:], 90, 10)
    assert (await download(client, pic.id))[1] == image

    # Listed and found: the folder's items (subfolders first), and search with paths.
    listed = await client.folders.ListItems(pb.ListItemsRequest(folder_id=top.id), metadata=ADMIN)
    assert [i.WhichOneof("item") for i in listed.items] == ["folder", "file", "file"]
    assert [i.file.name for i in listed.items[1:]] == ["notes für dich.txt", 'pic "1".png']
    paged = await client.folders.ListItems(
        pb.ListItemsRequest(folder_id=top.id, limit=2), metadata=ADMIN
    )
    rest = await client.folders.ListItems(
        pb.ListItemsRequest(folder_id=top.id, limit=2, cursor=paged.next_cursor), metadata=ADMIN
    )
    assert [i.file.id for i in rest.items] == [pic.id] and not rest.HasField("next_cursor")
    found = await client.files.Search(
        pb.SearchRequest(q="für dich", folder_id=top.id), metadata=ADMIN
    )
    assert [i.file.id for i in found.items] == [notes.id]
    assert [p.name for p in found.items[0].file.path] == [top.name]
    # Kinds, any of them, as HTTP's repeated `kind`.
    chosen = await client.folders.ListItems(
        pb.ListItemsRequest(folder_id=top.id, kind="folder", kinds=["text"]), metadata=ADMIN
    )
    assert [i.WhichOneof("item") for i in chosen.items] == ["folder", "file"]
    assert chosen.items[1].file.id == notes.id
    both = await client.files.Search(
        pb.SearchRequest(folder_id=top.id, kinds=["text", "image"]), metadata=ADMIN
    )
    assert sorted(i.file.id for i in both.items) == sorted([notes.id, pic.id])
    one = await client.files.Search(
        pb.SearchRequest(folder_id=top.id, kind="image"), metadata=ADMIN
    )
    assert [i.file.id for i in one.items] == [pic.id]

    # Datasets: made, the file added, its files listed, "linked to" on the file.
    dataset = await client.datasets.CreateDataset(
        pb.CreateDatasetRequest(name=unique("grpc-set")), metadata=ADMIN
    )
    assert (dataset.synced, dataset.file_count) == (False, 0)
    added = await client.datasets.AddFiles(
        pb.AddFilesRequest(dataset_id=dataset.id, file_ids=[notes.id, pic.id]), metadata=ADMIN
    )
    assert added.added == 2
    in_set = await client.datasets.ListDatasetFiles(
        pb.ListDatasetFilesRequest(dataset_id=dataset.id), metadata=ADMIN
    )
    assert sorted(f.id for f in in_set.items) == sorted([notes.id, pic.id])
    await client.datasets.RemoveFile(
        pb.RemoveFileRequest(dataset_id=dataset.id, file_id=pic.id), metadata=ADMIN
    )
    got = await client.datasets.GetDataset(
        pb.GetDatasetRequest(dataset_id=dataset.id), metadata=ADMIN
    )
    assert got.file_count == 1
    file = await client.files.GetFile(pb.GetFileRequest(file_id=notes.id), metadata=ADMIN)
    assert [(d.id, d.name) for d in file.datasets] == [(dataset.id, dataset.name)]
    assert file.created_at.ToDatetime().year >= 2024
    assert file.my_role == "admin"
    listed_sets = await client.datasets.ListDatasets(
        pb.ListDatasetsRequest(limit=1000), metadata=ADMIN
    )
    assert dataset.id in [d.id for d in listed_sets.items]

    # Collaborators: a member invited as user sees the folder, may not upload.
    user = await member(api)
    invited = await client.collaborators.InviteCollaborators(
        pb.InviteCollaboratorsRequest(folder_id=top.id, emails=[user["email"]], role="user"),
        metadata=ADMIN,
    )
    assert {(c.email, c.role) for c in invited.items} >= {(user["email"], "user")}
    theirs = key(user["api_key"])
    seen = await client.folders.GetFolder(pb.GetFolderRequest(folder_id=top.id), metadata=theirs)
    assert seen.my_role == "user"
    trailing = await refused(
        client.files.Upload(send(("x.txt", b"x"), folder_id=top.id), metadata=theirs),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert '"role_needed":"editor"' in trailing["files-error-details"]
    changed = await client.collaborators.ChangeRole(
        pb.ChangeRoleRequest(folder_id=top.id, user_id=user["id"], role="editor"),
        metadata=ADMIN,
    )
    assert (changed.user_id, changed.role, changed.HasField("inherited_from")) == (
        user["id"],
        "editor",
        False,
    )
    inherited = await client.collaborators.ListCollaborators(
        pb.ListCollaboratorsRequest(folder_id=sub.id), metadata=ADMIN
    )
    assert {c.inherited_from for c in inherited.items if c.user_id == user["id"]} == {top.id}
    await client.collaborators.RemoveCollaborator(
        pb.RemoveCollaboratorRequest(folder_id=top.id, user_id=user["id"]), metadata=ADMIN
    )
    await refused(
        client.folders.GetFolder(pb.GetFolderRequest(folder_id=top.id), metadata=theirs),
        grpc.StatusCode.NOT_FOUND,
        "not_found",
    )

    # The upload's job.
    job = await client.jobs.GetJob(pb.GetJobRequest(job_id=uploaded.job_id), metadata=ADMIN)
    assert (job.id, job.kind, job.status, job.folder_id) == (
        uploaded.job_id,
        "upload",
        "done",
        top.id,
    )
    assert (job.progress.done, job.progress.total) == (2, 2)
    assert sorted(f.id for f in job.files) == sorted([notes.id, pic.id])
    assert (job.file_count, job.error_count) == (2, 0)
    assert not job.HasField("next_files_cursor")
    listed = await client.jobs.ListJobFiles(
        pb.ListJobItemsRequest(job_id=uploaded.job_id, limit=1), metadata=ADMIN
    )
    assert [f.id for f in listed.items] == [job.files[0].id] and listed.next_cursor
    rest = await client.jobs.ListJobFiles(
        pb.ListJobItemsRequest(job_id=uploaded.job_id, cursor=listed.next_cursor), metadata=ADMIN
    )
    assert [f.id for f in rest.items] == [job.files[1].id] and not rest.HasField("next_cursor")
    errors = await client.jobs.ListJobErrors(
        pb.ListJobItemsRequest(job_id=uploaded.job_id), metadata=ADMIN
    )
    assert list(errors.items) == []

    # Deleted: gone for gRPC and HTTP alike.
    await client.folders.DeleteFolder(pb.DeleteFolderRequest(folder_id=sub.id), metadata=ADMIN)
    await refused(
        client.folders.GetFolder(pb.GetFolderRequest(folder_id=sub.id), metadata=ADMIN),
        grpc.StatusCode.NOT_FOUND,
        "not_found",
    )
    assert (await api.get(f"/v1/folders/{sub.id}")).status_code == 404


async def test_errors_map_to_status_codes(client: Client, api: httpx.AsyncClient) -> None:
    name = unique("grpc-errors")
    top = await client.folders.CreateFolder(pb.CreateFolderRequest(name=name), metadata=ADMIN)
    file = (
        await client.files.Upload(send(("a.txt", b"hello"), folder_id=top.id), metadata=ADMIN)
    ).files[0]

    # No key, a wrong key.
    await refused(
        client.folders.GetFolder(pb.GetFolderRequest(folder_id=top.id)),
        grpc.StatusCode.UNAUTHENTICATED,
        "unauthenticated",
    )
    await refused(
        drained(client.files.Download(pb.DownloadRequest(file_id=file.id), metadata=key("no"))),
        grpc.StatusCode.UNAUTHENTICATED,
        "unauthenticated",
    )
    # A name taken among siblings.
    trailing = await refused(
        client.folders.CreateFolder(pb.CreateFolderRequest(name=name.upper()), metadata=ADMIN),
        grpc.StatusCode.ALREADY_EXISTS,
        "name_taken",
    )
    assert trailing["files-http-status"] == "409"
    # Unknown ids.
    unknown = str(uuid.uuid4())
    for call in (
        client.folders.GetFolder(pb.GetFolderRequest(folder_id=unknown), metadata=ADMIN),
        client.files.GetFile(pb.GetFileRequest(file_id=unknown), metadata=ADMIN),
        client.jobs.GetJob(pb.GetJobRequest(job_id=unknown), metadata=ADMIN),
        client.datasets.GetDataset(pb.GetDatasetRequest(dataset_id=unknown), metadata=ADMIN),
        drained(client.files.Download(pb.DownloadRequest(file_id=unknown), metadata=ADMIN)),
        client.files.Upload(send(("a.txt", b"a"), folder_id=unknown), metadata=ADMIN),
    ):
        await refused(call, grpc.StatusCode.NOT_FOUND, "not_found")
    # A member without any role on the folder: not found, as over HTTP.
    outsider = key((await member(api))["api_key"])
    for call in (
        client.folders.GetFolder(pb.GetFolderRequest(folder_id=top.id), metadata=outsider),
        client.files.GetFile(pb.GetFileRequest(file_id=file.id), metadata=outsider),
        drained(client.files.Download(pb.DownloadRequest(file_id=file.id), metadata=outsider)),
        client.files.Upload(send(("b.txt", b"b"), folder_id=top.id), metadata=outsider),
        client.folders.ListItems(pb.ListItemsRequest(folder_id=top.id), metadata=outsider),
    ):
        await refused(call, grpc.StatusCode.NOT_FOUND, "not_found")
    # Bad input.
    for call in (
        client.folders.GetFolder(pb.GetFolderRequest(folder_id="not-a-uuid"), metadata=ADMIN),
        client.folders.GetFolder(
            pb.GetFolderRequest(folder_id=f"{top.id}/collaborators"), metadata=ADMIN
        ),
        client.folders.CreateFolder(pb.CreateFolderRequest(name="a/b"), metadata=ADMIN),
        client.files.Search(pb.SearchRequest(q=""), metadata=ADMIN),
        client.datasets.AddFiles(
            pb.AddFilesRequest(dataset_id=unknown, file_ids=["nope"]), metadata=ADMIN
        ),
        drained(
            client.files.Download(pb.DownloadRequest(file_id=file.id, length=0), metadata=ADMIN)
        ),
    ):
        await refused(call, grpc.StatusCode.INVALID_ARGUMENT)
    await refused(
        client.files.Upload(send(("prog", ELF), folder_id=top.id), metadata=ADMIN),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unsupported_content",
    )
    # Many refused, with long names: their list is cut to fit gRPC's metadata (8 KiB).
    many = [(f"{n:03}" + "x" * 250, ELF) for n in range(200)]
    trailing = await refused(
        client.files.Upload(send(*many, folder_id=top.id, chunk=4096), metadata=ADMIN),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unsupported_content",
    )
    cut = json.loads(trailing["files-error-details"])
    assert cut["truncated"] is True and cut["name"] == many[0][0], cut
    assert [r["part"] for r in cut["refused"]] == list(range(1, len(cut["refused"]) + 1)), cut

    async def chunk_first() -> AsyncIterator[pb.UploadRequest]:
        yield pb.UploadRequest(chunk=b"no header")

    async def other_folder() -> AsyncIterator[pb.UploadRequest]:
        yield pb.UploadRequest(header=pb.UploadHeader(folder_id=top.id, name="one.txt"))
        yield pb.UploadRequest(chunk=b"one")
        yield pb.UploadRequest(header=pb.UploadHeader(folder_id=unknown, name="two.txt"))
        yield pb.UploadRequest(chunk=b"two")

    for stream in (chunk_first(), other_folder(), send(("bad\nname", b"x"), folder_id=top.id)):
        await refused(client.files.Upload(stream, metadata=ADMIN), grpc.StatusCode.INVALID_ARGUMENT)
    await refused(
        drained(
            client.files.Download(pb.DownloadRequest(file_id=file.id, offset=5), metadata=ADMIN)
        ),
        grpc.StatusCode.OUT_OF_RANGE,
    )
    # None of the refused uploads recorded anything.
    listed = await client.folders.ListItems(pb.ListItemsRequest(folder_id=top.id), metadata=ADMIN)
    assert [i.file.name for i in listed.items] == ["a.txt"]


async def test_metadata_sent_twice_is_refused_not_the_last_one_taken(
    client: Client, api: httpx.AsyncClient
) -> None:
    bob = await member(api)
    secret = await client.folders.CreateFolder(
        pb.CreateFolderRequest(name=unique("grpc-twice")), metadata=ADMIN
    )
    # A member's key, then the admin's: not the admin (nor the member) acting.
    for pair in (key(bob["api_key"]) + ADMIN, ADMIN + key(bob["api_key"])):
        trailing = await refused(
            client.folders.GetFolder(pb.GetFolderRequest(folder_id=secret.id), metadata=pair),
            grpc.StatusCode.INVALID_ARGUMENT,
            "duplicate_header",
        )
        assert trailing["files-http-status"] == "400"
        assert '"header":"Authorization"' in trailing["files-error-details"]
    name = unique("grpc-twice-keyed")
    twice = (*ADMIN, ("idempotency-key", str(uuid.uuid4())), ("idempotency-key", "other"))
    await refused(
        client.folders.CreateFolder(pb.CreateFolderRequest(name=name), metadata=twice),
        grpc.StatusCode.INVALID_ARGUMENT,
        "duplicate_header",
    )
    # Nothing was made; once each is fine.
    made = await client.folders.CreateFolder(
        pb.CreateFolderRequest(name=name), metadata=ADMIN + twice[1:2]
    )
    assert made.name == name


async def test_fields_past_what_http_takes_in_a_head_are_refused_as_over_http(
    client: Client,
) -> None:
    """Over HTTP a query past 64 KiB never reaches a route (431); an RPC's fields made
    into one were sent on to the service, which the gateway's HTTP client cannot (500)."""
    top = await client.folders.CreateFolder(
        pb.CreateFolderRequest(name=unique("grpc-long")), metadata=ADMIN
    )
    for call in (
        client.folders.ListItems(
            pb.ListItemsRequest(folder_id=top.id, kinds=["image"] * 20_000), metadata=ADMIN
        ),
        client.folders.ListItems(
            pb.ListItemsRequest(folder_id=top.id, cursor="c" * 100_000), metadata=ADMIN
        ),
        client.files.Search(pb.SearchRequest(q="q" * 100_000), metadata=ADMIN),
    ):
        trailing = await refused(call, grpc.StatusCode.INVALID_ARGUMENT, "headers_too_large")
        assert trailing["files-http-status"] == "431"
    # Below the bound, the same fields are the route's to judge.
    await refused(
        client.folders.ListItems(
            pb.ListItemsRequest(folder_id=top.id, cursor="c" * 1_000), metadata=ADMIN
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


async def test_large_upload_streams_in_and_out_and_a_cancelled_one_records_nothing(
    client: Client,
) -> None:
    top = await client.folders.CreateFolder(
        pb.CreateFolderRequest(name=unique("grpc-large")), metadata=ADMIN
    )
    # 3 MiB of text in 64 KiB chunks; downloaded back in chunks of at most 1 MiB.
    body = b"".join(f"line {n:07}\n".encode() for n in range(3 * 1024 * 1024 // 13 + 1))
    call = client.files.Upload(
        send(("big.txt", body), folder_id=top.id, chunk=64 * 1024), metadata=ADMIN
    )
    [big] = (await call).files
    assert (big.kind, big.size, big.sha256) == ("text", len(body), hashlib.sha256(body).hexdigest())
    token = dict(await call.trailing_metadata())["files-consistency"]
    messages = [
        m
        async for m in client.files.Download(
            pb.DownloadRequest(file_id=big.id), metadata=(*ADMIN, ("files-consistency", token))
        )
    ]
    assert len(messages) > 3
    assert all(len(m.chunk) <= 1024 * 1024 for m in messages[1:])
    assert b"".join(m.chunk for m in messages[1:]) == body

    # A client that goes away mid-upload: the upload is dropped, the gateway goes on.
    sent = asyncio.Event()

    async def stalled() -> AsyncIterator[pb.UploadRequest]:
        yield pb.UploadRequest(header=pb.UploadHeader(folder_id=top.id, name="gone.txt"))
        yield pb.UploadRequest(chunk=b"partial " * 1000)
        sent.set()
        await asyncio.Event().wait()  # never finishes on its own

    dropped = client.files.Upload(stalled(), metadata=ADMIN)
    await sent.wait()
    dropped.cancel()
    with pytest.raises(asyncio.CancelledError):
        await dropped
    after = await client.files.Upload(
        send(("after.txt", b"after"), folder_id=top.id), metadata=ADMIN
    )
    listed = await client.folders.ListItems(pb.ListItemsRequest(folder_id=top.id), metadata=ADMIN)
    assert [i.file.name for i in listed.items] == ["after.txt", "big.txt"]
    assert after.files[0].name == "after.txt"


def held_to(platform: Stack, service: str) -> int:
    """The gateway's open connections to a service (idle ones the service closes after
    its 5 s keep-alive)."""
    port = int(platform.env[f"FILES_{service.upper()}_URL"].rsplit(":", 1)[1])
    return sum(
        1
        for c in psutil.Process(platform.child("gateway").proc.pid).net_connections("tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


async def test_a_download_its_client_cancels_releases_its_connection_to_ingest(
    client: Client, stack: Stack
) -> None:
    """Cancelled after its first chunks, a download's answer from ingest is closed at
    once (its connection too), not left for a garbage collection to find."""
    top = await client.folders.CreateFolder(
        pb.CreateFolderRequest(name=unique("grpc-cancelled")), metadata=ADMIN
    )
    body = b"".join(f"line {n:07}\n".encode() for n in range(16 * 1024 * 1024 // 13))
    call = client.files.Upload(
        send(("big.txt", body), folder_id=top.id, chunk=1024 * 1024), metadata=ADMIN
    )
    [big] = (await call).files
    token = dict(await call.trailing_metadata())["files-consistency"]
    # The platform is shared: what other tests' calls hold to ingest, they hold still.
    before = held_to(stack, "ingest")
    for _ in range(10):
        stream = client.files.Download(
            pb.DownloadRequest(file_id=big.id), metadata=(*ADMIN, ("files-consistency", token))
        )
        read = 0
        async for _message in stream:
            read += 1
            if read == 2:
                break
        stream.cancel()

    async def released() -> bool:
        return held_to(stack, "ingest") <= before

    await eventually(released, within=30, what="the gateway's connections to ingest released")
    # The gateway goes on serving downloads.
    _, data = await download(client, big.id)
    assert data == body
