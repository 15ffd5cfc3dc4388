"""The local blob store's rules on a real directory, observed where its effect cannot be
seen from outside (what is fsynced, what runs on the event loop): the contract both
stores keep is tests/integration/test_blobstore.py's."""

from __future__ import annotations

import hashlib
import os
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
    # A leaf none of the random blobs above landed in (one may have been "ee").
    used = {hashlib.sha256(data).hexdigest()[:2] for data in blobs}
    empty_leaf = next(f"{a:02x}" for a in range(255, -1, -1) if f"{a:02x}" not in used)
    data, digest = _blob_with_prefix(empty_leaf)
    (root / "sha256" / empty_leaf).rmdir()
    await again.commit(_held_writers(again, [data]))
    assert (root / "sha256" / empty_leaf / digest).read_bytes() == data
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


def test_a_process_opening_a_new_store_as_another_makes_it_takes_its_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ingest, DICOM, thumbnails and the collector open one new store at once: one that
    found no layout file, then the other's `sha256` made, kept the old layout in a new
    store (its blobs written where no other process looks). The other makes it between
    this one's two looks."""
    root = tmp_path / "blobs"
    root.mkdir()
    real_isdir = os.path.isdir
    looked: list[str] = []

    def meanwhile(path: Any) -> bool:
        if not looked:
            looked.append(str(path))
            monkeypatch.setattr(os.path, "isdir", real_isdir)
            assert local._open_layout(str(root))  # the other process, making it
        return real_isdir(path)

    real_open = open

    def late_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        if str(path).endswith(local.LAYOUT_FILE) and not looked:
            meanwhile(root / "sha256")  # the other process, before this one looks on
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os.path, "isdir", meanwhile)
    monkeypatch.setattr("builtins.open", late_open)
    assert local._open_layout(str(root)), "a new store opened in the old layout"
    assert looked


def test_a_store_of_an_unknown_layout_or_a_key_a_leaf_would_hold_is_refused(
    tmp_path: Path,
) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    digest = "ab" + "0" * 62
    # `sha256/ab/<hash>` is where the content key `sha256/ab/00/<hash>` lives.
    with pytest.raises(KeyError):
        store.path(f"sha256/ab/{digest}")
    for near in (f"sha256/ab/00X{digest}", f"sha256/AB/00/{digest}"):
        assert store.path(near) == store.root / near  # no content key: where it names
    (store.root / local.LAYOUT_FILE).write_text("sha256/<sha256>\n")
    with pytest.raises(RuntimeError, match="unknown layout"):
        LocalBlobStore(store.root)
