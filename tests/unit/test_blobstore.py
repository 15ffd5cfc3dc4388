"""The local blob store's rules on a real directory, observed where its effect cannot be
seen from outside (what is fsynced, what runs on the event loop): the contract both
stores keep is tests/integration/test_blobstore.py's."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from shared.kit.blobs.local import SYNCFS_FROM, LocalBlobStore


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
    """A fresh store's first blobs make `sha256/ab/01/` and `sha256/ab/02/`: each new
    directory's entry is synced in its parent (the store's root included), once however
    many blobs went through it; where the directories are there already, only the key's
    own is synced."""
    store = LocalBlobStore(tmp_path / "blobs")
    root = store.root
    assert SYNCFS_FROM > 2  # a blob at a time: fsyncs, not syncfs
    await store.put_many([("sha256/ab/01/first", b"one"), ("sha256/ab/02/second", b"two")])
    assert fsynced == {
        root / "sha256/ab/01": 1,
        root / "sha256/ab/02": 1,
        root / "sha256/ab": 1,
        root / "sha256": 1,
        root: 1,
    }
    fsynced.clear()
    await store.put_many([("sha256/ab/01/again", b"three"), ("sha256/ab/01/more", b"four")])
    assert fsynced == {root / "sha256/ab/01": 1}
    fsynced.clear()
    await store.put("sha256/ab/03/third", b"five")  # one new level under one there
    assert fsynced == {root / "sha256/ab/03": 1, root / "sha256/ab": 1}
    fsynced.clear()
    await store.move("sha256/ab/03/third", "thumbnails/x/moved")
    assert fsynced == {root / "thumbnails/x": 1, root / "thumbnails": 1, root: 1}
    assert (root / "thumbnails/x/moved").read_bytes() == b"five"
