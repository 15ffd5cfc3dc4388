"""One contract, both blob stores: a local directory and S3 over HTTP (moto's server)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import signal
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from services.dicom import handlers as dicom_handlers
from services.ingest import content
from shared.kit.blobs import (
    MIN_PART,
    BlobStore,
    BlobWriter,
    Held,
    InvalidPart,
    LocalBlobStore,
    S3BlobStore,
    StoreRefused,
    StoreUnavailable,
    UnknownUpload,
    content_key,
    open_blob_store,
    s3,
)
from shared.kit.blobs.s3 import parse_url
from shared.kit.embedded import free_port, start_s3_server
from shared.kit.errors import storage_failed
from shared.kit.http import install_errors
from shared.kit.media import StoreAnswered, presigned_reader
from shared.kit.settings import Settings
from shared.kit.stack import Stack
from tests.conftest import eventually
from tests.e2e.support import folder, unique, upload


@pytest.fixture(params=["local", "s3"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, s3_endpoint: str
) -> AsyncIterator[BlobStore]:
    if request.param == "local":
        settings = Settings(data_dir=tmp_path, blob_url=f"file://{tmp_path / 'blobs'}")
    else:
        settings = Settings(
            data_dir=tmp_path,
            blob_url=f"s3://blobs-{uuid.uuid4().hex[:12]}?endpoint={s3_endpoint}&region=us-east-1",
            s3_access_key="test-access-key",
            s3_secret_key="test-secret-key",
        )
    blobs = open_blob_store(settings)
    assert isinstance(blobs, LocalBlobStore if request.param == "local" else S3BlobStore)
    await blobs.start()
    await blobs.start()  # the bucket (or directory) being there already is fine
    yield blobs
    await blobs.close()


def written(
    blobs: BlobStore, data: bytes, chunk: int = 1000, hold: Held | None = None
) -> BlobWriter:
    writer = blobs.writer(hold)
    for at in range(0, len(data), chunk):
        writer.write(data[at : at + chunk])
    return writer


async def read(blobs: BlobStore, key: str, start: int, end: int) -> bytes:
    return b"".join([chunk async for chunk in blobs.stream(key, start, end)])


async def test_written_bytes_are_stored_under_their_hash_once_committed(store: BlobStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # more than one chunk
    writer = written(store, data, chunk=64 * 1024)
    sha = hashlib.sha256(data).hexdigest()
    assert writer.finish() == (content_key(sha), sha)
    assert writer.size == len(data)
    # Before the commit: readable from the spool, not in the store.
    assert writer.read_at(10, 5) == data[10:15]
    assert not await store.exists(writer.key)
    await store.commit([writer])
    assert not writer.path.exists()
    assert await store.exists(writer.key)
    assert await store.size(writer.key) == len(data)
    assert await read(store, writer.key, 0, len(data) - 1) == data
    assert await read(store, writer.key, 5, 5) == data[5:6]
    assert (
        await read(store, writer.key, 1024 * 1024 - 3, 2 * 1024 * 1024 + 9)
        == (data[1024 * 1024 - 3 : 2 * 1024 * 1024 + 10])
    )
    assert await read(store, writer.key, len(data) - 4, len(data) - 1) == data[-4:]
    async with store.local_copy(writer.key) as path:
        assert path.read_bytes() == data


async def test_a_blob_larger_than_a_part(store: BlobStore) -> None:
    """S3 puts it as a multipart upload (16 MiB parts)."""
    data = os.urandom(16 * 1024 * 1024 + 1)
    writer = written(store, data, chunk=1024 * 1024)
    key, _ = writer.finish()
    await store.commit([writer])
    assert await store.size(key) == len(data)
    assert await read(store, key, len(data) - 3, len(data) - 1) == data[-3:]


async def test_identical_bytes_share_one_blob(store: BlobStore) -> None:
    data = b"the same bytes " * 100
    first, second = written(store, data), written(store, data)
    first.finish()
    second.finish()
    await store.commit([first, second])
    assert first.key == second.key
    again = written(store, data)
    again.finish()
    await store.commit([again])  # already there: nothing to put
    assert again.key == first.key
    assert await read(store, first.key, 0, len(data) - 1) == data
    assert not any(w.path.exists() for w in (first, second, again))


async def test_a_request_of_many_small_blobs_is_committed_together(store: BlobStore) -> None:
    """The local store makes a batch durable with two syncfs calls, not an fsync each:
    every blob is there whole, duplicates and one stored before included, no spool left."""
    contents = [os.urandom(4096) for _ in range(40)] + [b"twice"] * 2
    before = written(store, contents[0])
    before.finish()
    await store.commit([before])
    writers = [written(store, data) for data in contents]
    for writer in writers:
        writer.finish()
    await store.commit(writers)
    for writer, data in zip(writers, contents, strict=True):
        assert not writer.path.exists()
        assert await read(store, writer.key, 0, len(data) - 1) == data


@pytest.mark.parametrize("many", [False, True])
async def test_small_blobs_held_in_memory_are_spooled_by_the_commit(
    store: BlobStore, many: bool
) -> None:
    """An upload's small blobs stay in memory within its budget (no spool file until the
    commit); a blob past the size a blob may be held at, or past the budget, is spooled
    as it comes. Every one is stored whole, alone or in a batch, and nothing is left."""
    hold = Held(100_000)
    small = [os.urandom(4096) for _ in range(30 if many else 2)]
    large = os.urandom(70_000)  # over 64 KiB: spooled once it grows past it
    writers = [written(store, data, hold=hold) for data in (*small, large)]
    held, spilled = writers[:-1], writers[-1]
    fitting = 100_000 // 4096 if many else len(small)
    assert not any(w.path.exists() for w in held[:fitting])
    assert all(w.path.exists() for w in (*held[fitting:], spilled))
    over_budget = held[fitting:]
    assert hold.left == 100_000 - 4096 * (len(held) - len(over_budget))
    for writer, data in zip(writers, (*small, large), strict=True):
        writer.finish()
        assert writer.read_at(100, 50) == data[100:150]
    await store.commit(writers)
    for writer, data in zip(writers, (*small, large), strict=True):
        assert not writer.path.exists()
        assert await read(store, writer.key, 0, len(data) - 1) == data
        writer.abort()  # as the receiver's cleanup does: harmless after the commit
    assert hold.left == 100_000


async def test_an_aborted_held_writer_leaves_nothing_and_gives_its_budget_back(
    store: BlobStore,
) -> None:
    hold = Held(10_000)
    writer = written(store, b"held, then dropped", hold=hold)
    assert hold.left < 10_000
    writer.abort()
    assert hold.left == 10_000
    assert not writer.path.exists()


def test_a_held_blob_aborted_while_its_commit_writes_its_spool_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancelled commit's cleanup runs on the event loop while the commit's thread may
    be creating the spool (waiting on the journal): the file made after the abort is
    the thread's to drop, and nothing is renamed into the store."""
    store = LocalBlobStore(tmp_path)
    writer = written(store, b"held until the commit", hold=Held(10_000))
    writer.finish()
    real_open = os.open

    def open_then_abort(path: Path, flags: int, mode: int = 0o777) -> int:
        fd = real_open(path, flags, mode)
        writer.abort()  # what the cleanup does meanwhile
        return fd

    monkeypatch.setattr(os, "open", open_then_abort)
    with pytest.raises(ValueError, match="aborted"):
        writer.spooled()
    monkeypatch.undo()
    assert list((tmp_path / "incoming").iterdir()) == []


async def test_a_finished_blob_takes_no_more_bytes(store: BlobStore) -> None:
    for hold in (Held(10_000), None):
        writer = written(store, b"abc", hold=hold)
        writer.finish()
        with pytest.raises(ValueError, match="finished"):
            writer.write(b"X")  # its key names b"abc"
        writer.abort()


async def test_an_empty_blob(store: BlobStore) -> None:
    writer = store.writer()
    key, _ = writer.finish()
    await store.commit([writer])
    assert await store.size(key) == 0


async def test_an_aborted_or_interrupted_writer_leaves_nothing(store: BlobStore) -> None:
    data = os.urandom(10_000)
    aborted = written(store, data)
    aborted.finish()
    aborted.abort()
    assert not aborted.path.exists()
    assert not await store.exists(aborted.key)
    # Cut off half way (the client went away): the receiver drops it unfinished.
    interrupted = written(store, data[:5000])
    interrupted.abort()
    assert not interrupted.path.exists()
    for whole_or_part in (data, data[:5000]):
        assert not await store.exists(content_key(hashlib.sha256(whole_or_part).hexdigest()))


async def test_a_failed_commit_drops_every_spool_and_stores_nothing_broken(
    store: BlobStore,
) -> None:
    done, unfinished = written(store, b"finished"), written(store, b"never finished")
    done.finish()
    with pytest.raises(KeyError):
        await store.commit([done, unfinished])
    assert not done.path.exists() and not unfinished.path.exists()


def left_spools(store: BlobStore) -> list[Path]:
    where = store.root / "incoming" if isinstance(store, LocalBlobStore) else store.spool_dir
    return [p for p in where.glob("*") if p.is_file()] if where.exists() else []


@pytest.mark.parametrize("many", [False, True])
async def test_a_grouped_put_stores_each_picture_under_its_key(
    store: BlobStore, many: bool
) -> None:
    """A batch's thumbnails in one put (local: past SYNCFS_FROM, two syncfs for the lot;
    below it, an fsync each): each key holds its bytes, one there already is replaced, a
    key given twice holds its last bytes, nothing is left in the spools."""
    prefix = f"thumbnails/{uuid.uuid4().hex}"
    pictures = [(f"{prefix}/{n}.webp", os.urandom(500 + n)) for n in range(20 if many else 3)]
    pictures[0] = (pictures[0][0], os.urandom(70_000))  # past what a blob is held at
    await store.put(pictures[1][0], b"an older picture")
    again = (pictures[2][0], b"drawn again")
    await store.put_many([*pictures, again])
    for key, data in [*pictures[:2], again, *pictures[3:]]:
        assert await read(store, key, 0, len(data) - 1) == data
        assert await store.size(key) == len(data)
    await store.put_many(pictures[:2])  # there already: replaced by the same bytes
    assert await read(store, pictures[1][0], 0, 1000) == pictures[1][1]
    await store.put_many([])
    assert left_spools(store) == []


async def test_a_grouped_put_with_a_foreign_key_stores_nothing(store: BlobStore) -> None:
    prefix = f"thumbnails/{uuid.uuid4().hex}"
    pictures = [(f"{prefix}/{n}.webp", b"picture %d" % n) for n in range(10)]
    with pytest.raises(KeyError):
        await store.put_many([*pictures, ("../etc/passwd", b"x")])
    for key, _ in pictures:
        assert not await store.exists(key)
    assert left_spools(store) == []


async def test_a_grouped_put_the_object_store_refuses_is_store_refused(
    s3_endpoint: str, tmp_path: Path
) -> None:
    """A bucket that is not there: S3 refuses every PUT for good; the caller sees
    StoreRefused (not transient: a background job counts its attempts), not minio's own
    error."""
    missing = S3BlobStore(
        parse_url(f"s3://missing-{uuid.uuid4().hex[:12]}?endpoint={s3_endpoint}&region=us-east-1"),
        tmp_path / "spool",
        access_key="test-access-key",
        secret_key="test-secret-key",
    )
    try:
        with pytest.raises(StoreRefused):
            await missing.put_many([(f"thumbnails/x/{n}.webp", b"p") for n in range(10)])
    finally:
        await missing.close()


@pytest.mark.parametrize("many", [False, True])
async def test_a_grouped_put_failing_half_way_leaves_no_half_written_key(
    tmp_path: Path, many: bool
) -> None:
    """One picture's key cannot be renamed into (a directory is there): the put fails,
    every other key holds all of its bytes or is not there, and no spool is left."""
    store = LocalBlobStore(tmp_path / "blobs")
    prefix = f"thumbnails/{uuid.uuid4().hex}"
    pictures = [(f"{prefix}/{n}.webp", os.urandom(3000)) for n in range(20 if many else 3)]
    blocked = pictures[len(pictures) // 2][0]
    await store.put(f"{blocked}/inside", b"makes its key a directory")
    with pytest.raises(IsADirectoryError):
        await store.put_many(pictures)
    for key, data in pictures:
        if key != blocked and await store.exists(key):
            assert await read(store, key, 0, len(data) + 10) == data
    assert left_spools(store) == []
    assert await read(store, f"{blocked}/inside", 0, 100) == b"makes its key a directory"


async def test_unknown_and_foreign_keys(store: BlobStore) -> None:
    missing = content_key("0" * 64)
    assert not await store.exists(missing)
    writer = written(store, b"beside a directory")
    writer.finish()
    await store.commit([writer])
    prefix = writer.key.rsplit("/", 2)[0]  # sha256/aa: a directory on disk, no object in S3
    assert not await store.exists(prefix)
    with pytest.raises(FileNotFoundError):
        await store.size(prefix)
    with pytest.raises(FileNotFoundError):
        await store.size(missing)
    with pytest.raises(FileNotFoundError):
        async with store.local_copy(missing):
            pass
    for foreign in ("../etc/passwd", "sha256/../../x", "/abs", "sha256/ab/../../../x", ""):
        with pytest.raises(KeyError):
            await store.size(foreign)


async def test_a_blobs_head_comes_with_its_size_in_one_read(store: BlobStore) -> None:
    """What the DICOM context reads of an instance: its first bytes and how long it is."""
    keys = {}
    for data in (os.urandom(100_000), b"shorter than asked", b""):
        writer = written(store, data)
        keys[data], _ = writer.finish()
        await store.commit([writer])
    for data, key in keys.items():
        head = await asyncio.to_thread(store.read_head, key, 16 * 1024)
        assert head == (data[: 16 * 1024], len(data))
    with pytest.raises(FileNotFoundError):
        store.read_head(content_key("0" * 64), 16 * 1024)
    with pytest.raises(KeyError):
        store.read_head("sha256/../../x", 16 * 1024)


async def test_delete(store: BlobStore) -> None:
    writer = written(store, b"to be collected")
    key, _ = writer.finish()
    await store.commit([writer])
    await store.delete(key)
    assert not await store.exists(key)
    await store.delete(key)  # gone already: no error


async def _chunks(data: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


async def _put(store: BlobStore, key: str, upload_id: str, n: int, data: bytes) -> str:
    """A part as a client sends it: to the presigned URL when there is one."""
    url = store.presign_part(key, upload_id, n, timedelta(minutes=5))
    if url is None:
        return await store.put_part(key, upload_id, n, _chunks(data))
    async with httpx.AsyncClient() as client:
        response = await client.put(url, content=data)
    assert response.status_code == 200, response.text
    return response.headers["etag"].strip('"')


async def test_a_multipart_upload_joins_its_parts(store: BlobStore) -> None:
    key = f"uploads/{uuid.uuid4().hex}"
    first, second = os.urandom(MIN_PART), os.urandom(1000)
    upload_id = await store.create_multipart(key)
    assert await store.list_parts(key, upload_id) == []
    etag1 = await _put(store, key, upload_id, 1, first)
    # Sent again (a retry): the later copy counts.
    etag1 = await store.put_part(key, upload_id, 1, _chunks(first))
    etag2 = await store.put_part(key, upload_id, 2, _chunks(second))
    assert etag1 == hashlib.md5(first).hexdigest()
    parts = await store.list_parts(key, upload_id)
    assert [(p.part_number, p.etag, p.size) for p in parts] == [
        (1, etag1, len(first)),
        (2, etag2, len(second)),
    ]
    with pytest.raises(InvalidPart):
        await store.complete_multipart(key, upload_id, [(1, etag1), (2, "0" * 32)])
    await store.complete_multipart(key, upload_id, [(1, etag1), (2, etag2)])
    assert await store.size(key) == len(first) + len(second)
    assert await read(store, key, MIN_PART - 2, MIN_PART + 1) == first[-2:] + second[:2]
    with pytest.raises(UnknownUpload):
        await store.list_parts(key, upload_id)
    # Read by range where it was assembled, then copied under its content key.
    whole = first + second
    assert store.read_at(key, MIN_PART - 3, 6) == whole[MIN_PART - 3 : MIN_PART + 3]
    assert store.read_at(key, len(whole) - 2, 10) == whole[-2:]
    assert store.read_at(key, len(whole), 10) == b""
    target = content_key(hashlib.sha256(whole).hexdigest())
    await store.copy(key, target)
    assert await read(store, target, 0, len(whole) - 1) == whole
    assert await store.size(key) == len(whole)  # the source stays


async def test_a_copy_onto_identical_bytes_keeps_them(store: BlobStore) -> None:
    data = os.urandom(2000)
    writer = written(store, data)
    key, _ = writer.finish()
    await store.commit([writer])
    again = f"uploads/{uuid.uuid4().hex}"
    upload_id = await store.create_multipart(again)
    etag = await store.put_part(again, upload_id, 1, _chunks(data))
    await store.complete_multipart(again, upload_id, [(1, etag)])
    await store.copy(again, key)
    assert await read(store, key, 0, len(data) - 1) == data
    await store.delete(again)
    assert not await store.exists(again)
    assert await read(store, key, 0, len(data) - 1) == data


async def test_presigned_urls(store: BlobStore) -> None:
    key = f"uploads/{uuid.uuid4().hex}"
    upload_id = await store.create_multipart(key)
    url = store.presign_part(key, upload_id, 1, timedelta(minutes=5))
    if isinstance(store, LocalBlobStore):
        assert url is None  # the service takes the PUT itself
        assert store.presigned_get(key, timedelta(minutes=5)) is None
        return
    assert url is not None
    data = b"a small last part"
    etag = await _put(store, key, upload_id, 1, data)
    await store.complete_multipart(key, upload_id, [(1, etag)])
    got = store.presigned_get(key, timedelta(minutes=5))
    assert got is not None
    async with httpx.AsyncClient() as client:
        assert (await client.get(got)).content == data


async def test_a_presigned_url_read_by_range_as_a_worker_reads_it(store: BlobStore) -> None:
    """A worker holding no key of the store's reads one object by ranges of its URL."""
    if isinstance(store, LocalBlobStore):
        return  # read in place: no URL
    key = f"pictures/{uuid.uuid4().hex}"
    data = bytes(range(256)) * 40
    await store.put(key, data)
    url = store.presigned_get(key, timedelta(minutes=5))
    gone = store.presigned_get(f"pictures/{uuid.uuid4().hex}", timedelta(minutes=5))
    assert url is not None and gone is not None

    def reads() -> None:
        with httpx.Client() as client:
            read_at = presigned_reader(url, client)
            assert read_at(0, 10) == data[:10]
            assert read_at(1000, 300) == data[1000:1300]
            assert read_at(len(data) - 5, 100) == data[-5:]  # cut at the end
            assert read_at(len(data), 10) == b""  # past it: nothing, as a file
            with pytest.raises(FileNotFoundError):
                presigned_reader(gone, client)(0, 10)
        # A store that ignores the range (the whole object) or refuses a stale URL.
        for status in (200, 403):
            answering = httpx.MockTransport(
                lambda _, code=status: httpx.Response(code, content=data)
            )
            with httpx.Client(transport=answering) as odd, pytest.raises(StoreAnswered):
                presigned_reader(url, odd)(0, 10)

    await asyncio.to_thread(reads)


async def test_an_aborted_multipart_upload_leaves_nothing(store: BlobStore) -> None:
    key = f"uploads/{uuid.uuid4().hex}"
    upload_id = await store.create_multipart(key)
    await store.put_part(key, upload_id, 1, _chunks(b"some bytes"))
    await store.abort_multipart(key, upload_id)
    with pytest.raises(UnknownUpload):
        await store.list_parts(key, upload_id)
    assert not await store.exists(key)


async def test_parts_listed_while_the_upload_ends_are_an_unknown_upload(tmp_path: Path) -> None:
    """An expiry or abort deletes a local upload's folder while a status request lists
    its parts: that is the upload gone (UnknownUpload), never a missing-file crash."""
    import shutil

    local = LocalBlobStore(tmp_path / "blobs")
    key = f"uploads/{uuid.uuid4().hex}"
    upload_id = await local.create_multipart(key)
    await local.put_part(key, upload_id, 1, _chunks(b"some bytes"))
    folder = tmp_path / "blobs" / "multipart" / upload_id
    (folder / "key").unlink()  # the ending has begun: its name is gone, its parts not yet
    with pytest.raises(UnknownUpload):
        await local.list_parts(key, upload_id)
    shutil.rmtree(folder)
    with pytest.raises(UnknownUpload):
        local._parts(folder)  # gone between the name's check and the listing


def spools(platform: Stack) -> list[Path]:
    s3 = platform.settings.blob_url.startswith("s3://")
    where = platform.data_dir / ("spool" if s3 else "blobs/incoming")
    return [p for p in where.glob("*") if p.is_file()] if where.exists() else []


@pytest.mark.e2e
@pytest.mark.parametrize("blobs", ["s3", "local"], indirect=True)
async def test_the_platform_keeps_uploads_in_its_store_and_no_spool(
    api: httpx.AsyncClient, platform: Stack
) -> None:
    store = open_blob_store(platform.settings)
    await store.start()
    top = await folder(api, unique("blobs"))
    data = f"kept in the store {uuid.uuid4()}\n".encode()
    (stored,) = (await upload(api, top["id"], ("a.txt", data)))["files"]
    assert stored["sha256"] == hashlib.sha256(data).hexdigest()
    assert await store.exists(content_key(stored["sha256"]))
    # A refused upload stores none of its files and leaves no spool behind.
    kept_out = f"refused with its neighbour {uuid.uuid4()}\n".encode()
    answer = await api.post(
        f"/v1/folders/{top['id']}/files",
        files=[("file", ("b.txt", kept_out)), ("file", ("c.bin", b"\x00\xff" * 50))],
    )
    assert answer.status_code == 415, answer.text
    assert not await store.exists(content_key(hashlib.sha256(kept_out).hexdigest()))
    # The platform may be writing other blobs meanwhile (thumbnails of earlier tests'
    # files go through the same spool): whatever is spooled now must go, soon.
    now = spools(platform)

    async def none_left() -> bool:
        return not any(p.exists() for p in now)

    await eventually(none_left, within=30, what=f"the spools {now} removed")
    await store.close()


async def test_a_start_drops_the_spools_a_crash_left_and_keeps_those_in_flight(
    store: BlobStore,
) -> None:
    left = written(store, b"left behind by a crash")
    left.finish()
    two_hours_ago = time.time() - 7200
    os.utime(left.path, (two_hours_ago, two_hours_ago))
    in_flight = written(store, b"being received")
    await store.start()  # as a restarted process does
    assert not left.path.exists()
    assert in_flight.path.exists()
    key, _ = in_flight.finish()
    await store.commit([in_flight])
    assert await read(store, key, 0, 13) == b"being received"


async def test_an_object_store_that_refuses_a_blob_fails_the_commit_as_the_stores(
    tmp_path: Path, s3_endpoint: str
) -> None:
    """An S3 error at commit (here: a bucket that is not there) is the store's refusal,
    not transient (so not an OSError), which an upload answers as 503
    storage_unavailable, never a 500."""
    blobs = open_blob_store(
        Settings(
            data_dir=tmp_path,
            blob_url=f"s3://gone-{uuid.uuid4().hex[:12]}?endpoint={s3_endpoint}&region=us-east-1",
            s3_access_key="test-access-key",
            s3_secret_key="test-secret-key",
        )
    )
    try:
        writer = written(blobs, b"bytes of a file")
        writer.finish()
        with pytest.raises(StoreRefused) as failed:
            await blobs.commit([writer])
        assert not isinstance(failed.value, OSError)
        assert storage_failed(failed.value).status == 503
    finally:
        await blobs.close()


async def test_an_object_store_that_hangs_fails_a_commit_in_bounded_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 stopped (SIGSTOP: its port open, nothing answered): a commit fails as
    StoreUnavailable (ingest's 503) once the store has been silent SILENCE_S, rather than
    holding its caller (and ingest's database connection) for minutes; once the store
    answers again, the same commit goes through."""
    monkeypatch.setattr(s3, "SILENCE_S", 1.0)
    moto = start_s3_server(tmp_path / "moto.log")
    blobs = S3BlobStore(
        parse_url(f"s3://hangs?endpoint={moto.url}&region=us-east-1"),
        tmp_path / "spool",
        access_key="test-access-key",
        secret_key="test-secret-key",
    )
    try:
        await blobs.start()
        moto.proc.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            writer = written(blobs, b"while the store hangs")
            writer.finish()
            with pytest.raises(StoreUnavailable):
                async with asyncio.timeout(20):
                    await blobs.commit([writer])
            assert time.monotonic() - started < 10
        finally:
            moto.proc.send_signal(signal.SIGCONT)
        writer = written(blobs, b"once it answers again")
        writer.finish()
        await blobs.commit([writer])
        assert await read(blobs, writer.key, 0, 21) == b"once it answers again"
    finally:
        await blobs.close()
        moto.stop()


async def test_an_object_store_that_is_down_fails_a_commit_within_seconds(tmp_path: Path) -> None:
    """Nothing listening where the store should be: a commit is StoreUnavailable (ingest's
    503) after a few tries to connect, not a wait."""
    blobs = S3BlobStore(
        parse_url(f"s3://down?endpoint=http://127.0.0.1:{free_port()}&region=us-east-1"),
        tmp_path / "spool",
        access_key="test-access-key",
        secret_key="test-secret-key",
    )
    try:
        writer = written(blobs, b"while the store is down")
        writer.finish()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            async with asyncio.timeout(20):
                await blobs.commit([writer])
        assert time.monotonic() - started < 10
    finally:
        await blobs.close()


class FakeStore:
    """A stand-in for an S3 store on a local port, taking a PUT's body at `rate` bytes a
    second (0: it reads the head and a little, then takes nothing more), answering 200.
    Its receive buffer is small, so the client's sending is paced by it."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.connections = 0
        self.received = 0
        self.done = threading.Event()
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(4)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.server.accept()
                self.connections += 1
                threading.Thread(target=self._take, args=(conn,), daemon=True).start()

    def _take(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            head, _, body = head.partition(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
            got = len(body)
            if self.rate == 0:
                conn.recv(64 * 1024)
                self.done.wait()  # silent until the test ends
                return
            while got < length:
                piece = conn.recv(16 * 1024)
                if not piece:
                    return
                got += len(piece)
                time.sleep(len(piece) / self.rate)  # the store's pace, not a wait
            self.received = got
            conn.sendall(b'HTTP/1.1 200 OK\r\nETag: "e"\r\nContent-Length: 0\r\n\r\n')

    def close(self) -> None:
        self.done.set()
        self.server.close()


def fake_s3(store: FakeStore, tmp_path: Path) -> S3BlobStore:
    return fake_s3_at(store.url, "fake", tmp_path)


def fake_s3_at(endpoint: str, bucket: str, tmp_path: Path) -> S3BlobStore:
    return S3BlobStore(
        parse_url(f"s3://{bucket}?endpoint={endpoint}&region=us-east-1"),
        tmp_path / "spool",
        access_key="test-access-key",
        secret_key="test-secret-key",
    )


async def test_a_large_blob_goes_to_a_slow_but_steady_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 5 MiB PUT (one request, minio's body as one block) to a store taking it at
    5 MiB/s takes far longer than the connect timeout: it goes through, since what is
    bounded is the store's silence, not the whole send. (The silence allowed covers the
    store draining what the kernels buffered, a few MiB, after the last write.)"""
    monkeypatch.setattr(s3, "CONNECT_S", 0.1)
    monkeypatch.setattr(s3, "SILENCE_S", 2.0)
    store = FakeStore(rate=5 * 1024 * 1024)
    blobs = fake_s3(store, tmp_path)
    data = os.urandom(5 * 1024 * 1024)
    try:
        await blobs.put(content_key(hashlib.sha256(data).hexdigest()), data)
        assert store.received == len(data)
        assert store.connections == 1
    finally:
        await blobs.close()
        store.close()


async def test_a_store_that_stops_taking_a_body_fails_it_within_the_silence_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that takes the head and a little of a PUT, then nothing: the PUT fails
    as StoreUnavailable once it has been silent SILENCE_S, and is not sent again."""
    monkeypatch.setattr(s3, "CONNECT_S", 0.2)
    monkeypatch.setattr(s3, "SILENCE_S", 1.0)
    store = FakeStore(rate=0)
    blobs = fake_s3(store, tmp_path)
    data = os.urandom(5 * 1024 * 1024)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            async with asyncio.timeout(20):
                await blobs.put(content_key(hashlib.sha256(data).hexdigest()), data)
        assert 0.9 < time.monotonic() - started < 3
        assert store.connections == 1
    finally:
        await blobs.close()
        store.close()


class DropsFirst:
    """A TCP proxy to an S3 endpoint that closes its first connection once the request
    has come, unanswered (as a store closes a kept-alive connection as it is reused);
    the others it passes through."""

    def __init__(self, target: str) -> None:
        host, _, port = target.removeprefix("http://").partition(":")
        self.target = (host, int(port))
        self.connections = 0
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.server.accept()
                self.connections += 1
                if self.connections == 1:
                    conn.recv(65536)
                    conn.close()
                    continue
                upstream = socket.create_connection(self.target)
                for a, b in ((conn, upstream), (upstream, conn)):
                    threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.server.close()


async def test_a_ranged_read_the_store_drops_unanswered_is_tried_again(
    tmp_path: Path, s3_endpoint: str
) -> None:
    """The store closes the connection of a ranged read before answering (its side of
    a keep-alive race): the read is sent again on a new connection and served."""
    bucket = f"drops-{uuid.uuid4().hex[:12]}"
    direct = fake_s3_at(s3_endpoint, bucket, tmp_path / "a")
    proxy = DropsFirst(s3_endpoint)
    proxied = fake_s3_at(proxy.url, bucket, tmp_path / "b")
    try:
        await direct.start()
        key = content_key(hashlib.sha256(b"a ranged read").hexdigest())
        await direct.put(key, b"a ranged read")
        assert await asyncio.to_thread(proxied.read_at, key, 2, 6) == b"ranged"
        assert proxy.connections == 2
    finally:
        await direct.close()
        await proxied.close()
        proxy.close()


async def test_a_store_that_is_down_is_unavailable_on_every_call_a_route_makes(
    tmp_path: Path,
) -> None:
    """Nothing listening where the store should be: each call that reaches a user
    (ingest's content route, dicom's reads, a session's completion and copy) raises
    StoreUnavailable, which every service answers 503, never a 500."""
    blobs = fake_s3_at(f"http://127.0.0.1:{free_port()}", "down", tmp_path)
    key = content_key("ab" * 32)
    app = FastAPI()
    app.include_router(content.router(blobs))
    install_errors(app)
    try:
        with pytest.raises(StoreUnavailable):
            await blobs.size(key)
        with pytest.raises(StoreUnavailable):
            await asyncio.to_thread(blobs.read_at, key, 0, 10)
        with pytest.raises(StoreUnavailable):
            await asyncio.to_thread(blobs.read_head, key, 10)
        with pytest.raises(StoreUnavailable):
            await blobs.complete_multipart(key, "upload", [(1, "etag")])
        with pytest.raises(StoreUnavailable):
            await blobs.copy(key, content_key("cd" * 32))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as client:
            answer = await client.get(f"/internal/blobs/{key}", headers={"Range": "bytes=0-9"})
        assert answer.status_code == 503, answer.text
    finally:
        await blobs.close()


async def test_dicom_fails_its_batch_rather_than_rejecting_files_while_the_store_is_down(
    tmp_path: Path,
) -> None:
    """The store unreachable (StoreUnavailable, an OSError like a blob that cannot be
    read): the DICOM consumer's read raises it, failing the batch to be retried, rather
    than rejecting each file as unreadable for good."""
    blobs = fake_s3_at(f"http://127.0.0.1:{free_port()}", "down", tmp_path)
    try:
        with pytest.raises(StoreUnavailable):
            await dicom_handlers.read_all(blobs, [content_key("ab" * 32)])
    finally:
        await blobs.close()
