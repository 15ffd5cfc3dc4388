"""The blob store: content-addressed bytes, written while hashed, read by range.

Keys come from content hashes, never from a file name or other user text.
Identical uploads share one blob.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio

CHUNK = 1024 * 1024


def content_key(sha256: str) -> str:
    return f"sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobWriter:
    """Receives one upload's bytes in order, hashing them on the way to disk."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self.temp = root / "incoming" / uuid.uuid4().hex
        self.temp.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.temp, "wb")  # noqa: SIM115 - closed in finish/abort
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        self._hash.update(data)
        self._file.write(data)
        self.size += len(data)

    def finish(self) -> tuple[str, str]:
        """Close and move under its content key; returns (key, sha256)."""
        self._file.close()
        sha = self._hash.hexdigest()
        key = content_key(sha)
        final = self._root / key
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.temp, final)
        return key, sha

    def abort(self) -> None:
        self._file.close()
        self.temp.unlink(missing_ok=True)


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def writer(self) -> BlobWriter:
        return BlobWriter(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or not key.startswith("sha256/"):
            raise KeyError(key)
        return path

    async def make_durable(self, keys: list[str]) -> None:
        """fsync blobs and their directories before any event refers to them.

        In threads, so a batch of small files syncs concurrently and the event loop
        keeps serving.
        """
        paths = [self._path(k) for k in set(keys)]
        await asyncio.gather(*(asyncio.to_thread(_fsync, p) for p in paths))
        await asyncio.gather(*(asyncio.to_thread(_fsync, d) for d in {p.parent for p in paths}))

    def path(self, key: str) -> Path:
        """Where a blob is on disk (KeyError for a key that is not a content key)."""
        return self._path(key)

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def read_at(self, key: str, offset: int, length: int) -> bytes:
        with open(self._path(key), "rb") as f:
            f.seek(offset)
            return f.read(length)

    async def stream(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes start..end inclusive, a chunk at a time."""
        async with await anyio.open_file(self._path(key), "rb") as f:
            await f.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = await f.read(min(CHUNK, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk
