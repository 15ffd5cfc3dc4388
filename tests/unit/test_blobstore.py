"""The local blob store's rules on a real directory, observed where its effect cannot be
seen from outside (what is fsynced, what runs on the event loop): the contract both
stores keep is tests/integration/test_blobstore.py's."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from shared.kit.blobs import base, local
from shared.kit.blobs.base import HOLD_PER_BLOB, sweep_spools
from shared.kit.blobs.local import SYNCFS_FROM, LocalBlobStore, _link_or_copy


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> Counter[Path]:
    """How often each directory was fsynced (files are not counted)."""
    counted: Counter[Path] = Counter()
    real = os.fsync

    def fsync(fd: int) -> None:
        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if path.is_dir():
            counted[path] += 1
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return counted


async def test_every_directory_a_put_makes_is_durable_in_its_parent_once(
    tmp_path: Path, fsynced: Counter[Path]
) -> None:
    """A fresh store's first blobs make `pictures/ab/01/` and `pictures/ab/02/`: each new
    directory's entry is synced in its parent (the store's root included), once however
    many blobs went through it; where the directories are there already, only the key's
    own is synced."""
    store = LocalBlobStore(tmp_path / "blobs")
    root = store.root
    fsynced.clear()  # the new store's layout file and leaves: tested below
    assert SYNCFS_FROM > 2  # a blob at a time: fsyncs, not syncfs
    await store.put_many([("pictures/ab/01/first", b"one"), ("pictures/ab/02/second", b"two")])
    assert fsynced == {
        root / "pictures/ab/01": 1,
        root / "pictures/ab/02": 1,
        root / "pictures/ab": 1,
        root / "pictures": 1,
        root: 1,
    }
    fsynced.clear()
    await store.put_many([("pictures/ab/01/again", b"three"), ("pictures/ab/01/more", b"four")])
    assert fsynced == {root / "pictures/ab/01": 1}
    fsynced.clear()
    await store.put("pictures/ab/03/third", b"five")  # one new level under one there
    assert fsynced == {root / "pictures/ab/03": 1, root / "pictures/ab": 1}
    fsynced.clear()
    await store.copy("pictures/ab/03/third", "thumbnails/x/copied")
    assert fsynced == {root / "thumbnails/x": 1, root / "thumbnails": 1, root: 1}
    assert (root / "thumbnails/x/copied").read_bytes() == b"five"
    assert (root / "pictures/ab/03/third").read_bytes() == b"five"
    # A multipart upload's folder and the key it names are durable before its session
    # is recorded.
    fsynced.clear()
    upload_id = await store.create_multipart("uploads/1")
    folder = root / "multipart" / upload_id
    assert fsynced == {folder: 1, root / "multipart": 1, root: 1}
    fsynced.clear()
    second = await store.create_multipart("uploads/2")
    assert fsynced == {root / "multipart" / second: 1, root / "multipart": 1}


async def test_a_grouped_put_writes_no_spool_on_the_event_loop_and_hashes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pictures are stored under keys their caller names (and hashed by it): the store
    hashes none of them again, and writes every spool, a picture past what a blob is
    held at included, in its worker thread, never on the event loop."""
    store = LocalBlobStore(tmp_path / "blobs")
    loop_thread = threading.get_ident()
    on_the_loop: list[str] = []
    hashed: list[int] = []
    real_open, real_os_open, real_sha256 = open, os.open, hashlib.sha256

    def watched(path: str | Path) -> None:
        if Path(path).parent == store.root / "incoming" and threading.get_ident() == loop_thread:
            on_the_loop.append(str(path))

    def spy_open(path: str | Path, *args: Any, **kwargs: Any) -> Any:
        watched(path)
        return real_open(path, *args, **kwargs)

    def spy_os_open(path: str | Path, *args: Any, **kwargs: Any) -> int:
        watched(path)
        return real_os_open(path, *args, **kwargs)

    class CountedHash:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.hash = real_sha256(*args, **kwargs)

        def update(self, data: bytes) -> None:
            hashed.append(len(data))
            self.hash.update(data)

        def hexdigest(self) -> str:
            return self.hash.hexdigest()

    monkeypatch.setattr(base, "open", spy_open, raising=False)
    monkeypatch.setattr(os, "open", spy_os_open)
    monkeypatch.setattr(hashlib, "sha256", CountedHash)
    for many in (2, SYNCFS_FROM):
        pictures = [(f"thumbnails/{many}/{n}.webp", os.urandom(500 + n)) for n in range(many)]
        pictures[0] = (pictures[0][0], os.urandom(HOLD_PER_BLOB + 10_000))
        await store.put_many(pictures)
        for key, data in pictures:
            assert (store.root / key).read_bytes() == data
    assert on_the_loop == []
    assert hashed == []
    assert list((store.root / "incoming").iterdir()) == []


def test_a_copy_is_a_new_spool_to_the_sweep_however_old_its_bytes(tmp_path: Path) -> None:
    """The local store's copy links the bytes through a spool: dated now, or a store
    starting meanwhile would sweep it as a crash's leftover (the linked object may have
    been assembled hours ago)."""
    source, spools = tmp_path / "assembled", tmp_path / "incoming"
    source.write_bytes(b"hours old")
    os.utime(source, (time.time() - 7200, time.time() - 7200))
    spools.mkdir()
    _link_or_copy(source, spools / "link")
    assert sweep_spools(spools) == 0
    assert (spools / "link").read_bytes() == b"hours old"


def test_spool_names_are_unique_and_a_forked_process_draws_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spools are named by a per-process random prefix and a counter: every name of a
    process differs, and a child forked from it (same counter, same prefix in its memory)
    names its spools apart from its parent's."""
    store = LocalBlobStore(tmp_path)
    names = [os.path.basename(store.writer(base.Held(0)).path) for _ in range(1000)]
    assert len(set(names)) == 1000
    assert all(len(n) == 32 and int(n, 16) >= 0 for n in names)
    monkeypatch.setattr(os, "getpid", lambda: -2)  # as in a forked child
    forked = [os.path.basename(store.writer(base.Held(0)).path) for _ in range(1000)]
    assert not {n[:24] for n in forked} & {n[:24] for n in names}
    assert len(set(forked)) == 1000


def _held_writers(store: LocalBlobStore, blobs: list[bytes]) -> list[base.BlobWriter]:
    held = base.Held(HOLD_PER_BLOB * len(blobs))
    writers = []
    for data in blobs:
        writer = store.writer(held)
        writer.write(data)
        writer.finish()
        writers.append(writer)
    return writers


async def test_a_commit_of_small_blobs_names_no_spool_and_keeps_its_two_syncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held blobs are written to files without a name and linked to their keys: nothing
    is created in `incoming/`; the bytes are durable (the first syncfs) before any key
    names them, and every key is there before the second; a key already there (the
    same bytes, by its hash) is kept."""
    store = LocalBlobStore(tmp_path / "blobs")
    blobs = [os.urandom(100 + n) for n in range(SYNCFS_FROM + 2)]
    await store.commit(_held_writers(store, blobs[:1]))  # one already there
    keys = [base.content_key(hashlib.sha256(b).hexdigest()) for b in blobs]
    seen: list[list[bool]] = []
    real_syncfs, real_os_open = local._syncfs, os.open
    named: list[str] = []

    def syncfs(root: Path) -> None:
        seen.append([store.path(key).is_file() for key in keys])
        real_syncfs(root)

    def spy_os_open(path: str | Path, flags: int, *args: Any, **kwargs: Any) -> int:
        if Path(path).parent == store.root / "incoming":
            named.append(str(path))
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(local, "_syncfs", syncfs)
    monkeypatch.setattr(os, "open", spy_os_open)
    await store.commit(_held_writers(store, blobs))
    assert seen == [[True] + [False] * (len(blobs) - 1), [True] * len(blobs)]
    assert named == []
    for key, data in zip(keys, blobs, strict=True):
        assert store.path(key).read_bytes() == data
    assert list((store.root / "incoming").iterdir()) == []


async def test_past_the_open_files_bound_a_commit_spools_the_rest_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At most UNNAMED_OPEN files without a name are open at once in a process: the
    other blobs of a commit go through named spools, as before, and the bound is whole
    again after it."""
    monkeypatch.setattr(local, "_UNNAMED", threading.BoundedSemaphore(3))
    store = LocalBlobStore(tmp_path / "blobs")
    blobs = [os.urandom(50 + n) for n in range(SYNCFS_FROM + 4)]
    renamed: list[str] = []
    real_replace = local._replace

    def spy_replace(spool: str | Path, final: str) -> list[str]:
        renamed.append(final)
        return real_replace(spool, final)

    monkeypatch.setattr(local, "_replace", spy_replace)
    await store.commit(_held_writers(store, blobs))
    assert len(renamed) == len(blobs) - 3
    for data in blobs:
        key = base.content_key(hashlib.sha256(data).hexdigest())
        assert store.path(key).read_bytes() == data
    assert all(local._UNNAMED.acquire(blocking=False) for _ in range(3))
    assert list((store.root / "incoming").iterdir()) == []


async def test_a_disk_failing_mid_write_leaves_no_blob_and_no_spool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills while a commit writes its small blobs: the commit fails, no key
    names any of its bytes (not even those written whole), nothing is left in
    `incoming/`, and every file it opened is closed."""
    store = LocalBlobStore(tmp_path / "blobs")
    blobs = [os.urandom(3000 + n) for n in range(SYNCFS_FROM + 2)]
    writers = _held_writers(store, blobs)
    real_write, writes = os.write, [0]

    def filling(fd: int, data: Any) -> int:
        writes[0] += 1
        if writes[0] == 5:
            real_write(fd, bytes(data)[:100])  # a part of the fifth, then the disk is full
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    open_before = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(os, "write", filling)
    with pytest.raises(OSError, match="No space"):
        await store.commit(writers)
    monkeypatch.undo()
    assert not any(p.is_file() for p in (store.root / "sha256").rglob("*"))
    assert list((store.root / "incoming").iterdir()) == []
    assert len(os.listdir("/proc/self/fd")) == open_before
    assert all(local._UNNAMED.acquire(blocking=False) for _ in range(local.UNNAMED_OPEN))
    for _ in range(local.UNNAMED_OPEN):
        local._UNNAMED.release()


_CRASH = """
import asyncio, os, sys
from pathlib import Path
from shared.kit.blobs import base, local

store = local.LocalBlobStore(Path(sys.argv[1]))
held = base.Held(1 << 20)
writers = []
for n in range(local.SYNCFS_FROM + 2):
    writer = store.writer(held)
    writer.write(os.urandom(2000 + n))
    writer.finish()
    writers.append(writer)
local._syncfs = lambda root: os._exit(17)  # the power goes as the bytes are made durable
asyncio.run(store.commit(writers))
"""


def test_a_crash_before_the_links_leaves_no_blob_and_no_spool(tmp_path: Path) -> None:
    """A process killed between writing a commit's small blobs and naming them: no key
    names a byte of them, and no spool is left for the sweep (the files had no name)."""
    root = tmp_path / "blobs"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", _CRASH, str(root)], env=env, timeout=60)
    assert done.returncode == 17
    assert not any(p.is_file() for p in (root / "sha256").rglob("*"))
    assert list((root / "incoming").iterdir()) == []


def _blob_with_prefix(prefix: str) -> tuple[bytes, str]:
    """Bytes whose hash starts with `prefix` (a few hex digits), and their hash."""
    for n in range(1_000_000):
        data = f"blob {n}".encode()
        digest = hashlib.sha256(data).hexdigest()
        if digest.startswith(prefix):
            return data, digest
    raise AssertionError(prefix)


async def test_a_new_store_keeps_content_keys_in_256_leaves_made_with_it(
    tmp_path: Path, fsynced: Counter[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new store records its layout, makes its 256 leaves and syncs them in their
    parents before any blob; a content key is then `sha256/aa/<hash>` on disk, and a
    commit makes no directory. Opened again it keeps that layout; a leaf gone (a crash
    between the layout file and the leaves) is made by the commit that needs it; a key
    under `sha256/` that is no content key stays where it names."""
    store = LocalBlobStore(tmp_path / "blobs")
    root = store.root
    assert (root / local.LAYOUT_FILE).read_text() == local.LAYOUT_256
    assert sorted(p.name for p in (root / "sha256").iterdir()) == [f"{a:02x}" for a in range(256)]
    assert fsynced == {root: 2, root / "sha256": 1}
    made: list[str] = []
    real_mkdir = os.mkdir

    def spy_mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        if Path(path).is_relative_to(root / "sha256"):
            made.append(str(path))
        real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", spy_mkdir)
    blobs = [os.urandom(200 + n) for n in range(SYNCFS_FROM + 2)]
    await store.commit(_held_writers(store, blobs[:1]))  # a blob alone: fsyncs
    await store.commit(_held_writers(store, blobs))  # together: syncfs
    assert made == []
    again = LocalBlobStore(root)
    for data in blobs:
        digest = hashlib.sha256(data).hexdigest()
        key = base.content_key(digest)
        assert again.path(key) == root / "sha256" / digest[:2] / digest
        assert (root / "sha256" / digest[:2] / digest).read_bytes() == data
        assert await again.exists(key) and await again.size(key) == len(data)
        assert again.read_head(key, 10) == (data[:10], len(data))
    data, digest = _blob_with_prefix("ee")
    (root / "sha256" / "ee").rmdir()
    await again.commit(_held_writers(again, [data]))
    assert (root / "sha256/ee" / digest).read_bytes() == data
    await again.put("sha256/ab/01/picture", b"not a content key")
    assert (root / "sha256/ab/01/picture").read_bytes() == b"not a content key"
    await again.copy(base.content_key(digest), "thumbnails/x/copied")
    assert (root / "thumbnails/x/copied").read_bytes() == data


async def test_a_store_made_before_layouts_is_read_and_written_as_it_was(
    tmp_path: Path,
) -> None:
    """A store of `sha256/aa/bb/<hash>` (no layout file: made before there was one) is
    read where its blobs are, its new blobs go there too, alone or together, and it is
    given no layout file, however often it is opened."""
    root = tmp_path / "blobs"
    old, old_digest = _blob_with_prefix("abcd")
    (root / "sha256/ab/cd").mkdir(parents=True)
    (root / "sha256/ab/cd" / old_digest).write_bytes(old)
    store = LocalBlobStore(root)
    old_key = base.content_key(old_digest)
    assert await store.exists(old_key)
    assert store.read_head(old_key, 100) == (old, len(old))
    async with store.local_copy(old_key) as path:
        assert path.read_bytes() == old
    blobs = [os.urandom(300 + n) for n in range(SYNCFS_FROM + 1)]
    await store.commit(_held_writers(store, blobs[:1]))
    await store.commit(_held_writers(store, blobs[1:]))
    again = LocalBlobStore(root)
    for data in blobs:
        digest = hashlib.sha256(data).hexdigest()
        assert (root / "sha256" / digest[:2] / digest[2:4] / digest).read_bytes() == data
        assert await again.size(base.content_key(digest)) == len(data)
    await again.copy(old_key, "thumbnails/y/copied")
    assert (root / "thumbnails/y/copied").read_bytes() == old
    assert not (root / local.LAYOUT_FILE).exists()


async def test_a_content_key_that_is_a_directory_is_refused_not_kept(tmp_path: Path) -> None:
    """A linked blob whose key is taken by a directory fails its commit, as a rename
    over a directory would: never taken for the blob already there."""
    store = LocalBlobStore(tmp_path / "blobs")
    blobs = [os.urandom(100 + n) for n in range(SYNCFS_FROM)]
    blocked = base.content_key(hashlib.sha256(blobs[3]).hexdigest())
    store.path(blocked).mkdir()
    with pytest.raises(IsADirectoryError):
        await store.commit(_held_writers(store, blobs))
    assert list((store.root / "incoming").iterdir()) == []
