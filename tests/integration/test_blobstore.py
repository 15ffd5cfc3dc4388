"""One contract, both blob stores: a local directory and S3 over HTTP (moto's server)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

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
