"""Blobs in a local directory: `<root>/sha256/aa/<sha256>` (a store made before
LAYOUT_FILE: `sha256/aa/bb/<sha256>`), spools in `<root>/incoming`
(the same file system, so a commit is a rename), multipart parts in `<root>/multipart`."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import anyio

from shared.kit.blobs.base import (
    CHUNK,
    MIN_PART,
    BlobWriter,
    Held,
    InvalidPart,
    PartInfo,
    UnknownUpload,
    check_key,
    check_part_number,
    sweep_spools,
)

# Our own bookkeeping: never a blob's key.
RESERVED = ("incoming", "multipart")
# What an upload's name file (`multipart/<upload id>/key`) becomes once an assembly took
# it: the upload has ended (see `_join`).
JOINED = "joined"
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")


def _fsync(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _syncfs_call() -> ctypes._NamedFuncPointer | None:
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name, use_errno=True), "syncfs", None) if name else None
    except OSError:
        return None


# Linux's syncfs(2): one call makes every written byte and every rename on the blob
# volume durable. For a request of many small files that is two calls instead of one
# fsync a file and one a directory (on this VM's disk: 100 files, 27 ms with fsyncs from
# 6 threads, 10 ms with two syncfs). It flushes the whole file system, so it is cheap
# when the blobs have a volume of their own, as they should in production; on a volume
# shared with PostgreSQL it also writes PostgreSQL's dirty pages, which costs time, not
# safety. Since Linux 5.8 it reports a writeback error of the file system.
_SYNCFS = _syncfs_call()
# From this many blobs in one commit, two syncfs calls are cheaper than their fsyncs.
SYNCFS_FROM = 8


def _syncfs(root: Path) -> None:
    assert _SYNCFS is not None
    fd = os.open(root, os.O_RDONLY)
    try:
        if _SYNCFS(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"syncfs of {root}: {os.strerror(code)}")
    finally:
        os.close(fd)


def _make_dirs(directory: str | Path) -> list[str]:
    """Make `directory` and whichever of its ancestors are missing; returns the parent of
    each directory made, deepest first: their entries for it are not durable yet."""
    directory = os.fspath(directory)
    parent = os.path.dirname(directory)
    try:
        os.mkdir(directory)
    except FileNotFoundError:
        # One mkdir a level, not pathlib's failed mkdir, mkdir of the parent and stat: a
        # fresh store of the old layout makes a directory for most blobs it takes, its
        # parent nearly always there.
        above = _make_dirs(parent)
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory)
        return [parent, *above]
    except FileExistsError:
        pass  # made meanwhile by another commit: synced here too, not waited for
    return [parent]


# Paths as strings from here to the renames: pathlib's joins, `parent` and conversions
# at each system call were most of a small blob's commit on the GIL.
def _replace(spool: str | Path, final: str) -> list[str]:
    """Rename the spool to its key; returns the directories whose entries for a directory
    it had to make are not durable yet, deepest first (the caller that fsyncs syncs them
    too, once each: an old-layout store's first blob makes `sha256/aa/bb/`, three new
    entries)."""
    try:
        os.replace(spool, final)
        return []
    except FileNotFoundError:
        # The key's directory is new (its spool is there: spools are ours alone).
        made = _make_dirs(os.path.dirname(final))
        os.replace(spool, final)
        return made


def _move_into_place(spool: str | Path, final: str | Path) -> list[str]:
    """fsync, then rename: after a crash the key holds all of its bytes or nothing.
    Returns the directories to fsync besides the key's own (see `_replace`)."""
    _fsync(spool)
    return _replace(spool, os.fspath(final))


def _move_writer(writer: BlobWriter, final: str) -> list[str]:
    made = _move_into_place(writer.spooled(), final)
    writer.moved()
    return made


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link, or the bytes copied on a file system that has none. Dated now: a
    spool's age is its modification time (`sweep_spools`), and the linked bytes may be
    hours old."""
    try:
        os.link(source, target)
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        shutil.copyfile(source, target)
    os.utime(target)


def _start_upload(folder: Path, key: str) -> None:
    """A multipart upload's folder and the key it names, durable before its session is
    recorded: a crash must not leave an open session whose upload is gone."""
    made = _make_dirs(folder)
    named = folder / "key"
    named.write_text(key)
    for path in [str(named), str(folder), *made]:
        _fsync(path)


def _move_durably(spool: Path, final: Path) -> None:
    """`_move_into_place`, then the rename and every directory made for it durable,
    deepest first."""
    for directory in [str(final.parent), *_move_into_place(spool, final)]:
        _fsync(directory)


# A store's layout of content keys, in this file at its root (never a key: a key's first
# segment has no dot). A store made before it has none and keeps `sha256/aa/bb/<hash>`:
# 65,536 leaf directories, made as blobs come, so a fresh store made one for ~93% of its
# first 10,000 blobs (a mkdir a blob, ext4's inode allocator, ~a third of ingest's CPU
# on small files: bench/README, Dec 7). A store made since holds `sha256/<hash>` as
# `sha256/aa/<hash>`: 256 leaves, made with the store (~4,000 blobs a leaf at a million:
# ext4 indexes a directory's names by their hash).
LAYOUT_FILE = ".layout"
LAYOUT_256 = "sha256/aa/<sha256>\n"
# `content_key`'s shape, exactly: only such a key is kept in a leaf of 256. A key of
# the shape a leaf holds (`sha256/aa/<64 hex>`) would be another key's file there.
_CONTENT_KEY = re.compile(r"sha256/([0-9a-f]{2})/([0-9a-f]{2})/\1\2[0-9a-f]{60}")
_LEAF_256_KEY = re.compile(r"sha256/[0-9a-f]{2}/[0-9a-f]{64}")


def _open_layout(root: str) -> bool:
    """Whether the store at `root` keeps its content keys in 256 leaves: read from its
    layout file; for a store with neither that file nor a `sha256` directory (a new
    one), written first (then a crash leaves a store of that layout missing leaves,
    which a blob's commit makes), then its leaves made, durable in their parents."""
    layout = os.path.join(root, LAYOUT_FILE)
    top = os.path.join(root, "sha256")
    # Looked at before the layout file: a new store's maker writes that file before it
    # makes `sha256`, so a `sha256` seen first with no file after is a store made before
    # layouts. The other order let a process starting beside the maker see the file
    # missing, then `sha256` made, and keep the old layout in a new store.
    made_before = os.path.isdir(top)
    try:
        with open(layout) as f:
            kept = f.read()
    except FileNotFoundError:
        kept = None
    if kept is not None:
        if kept != LAYOUT_256:
            raise RuntimeError(f"blob store {root}: unknown layout in {LAYOUT_FILE}: {kept!r}")
        return True
    if made_before:
        return False  # made before layouts: as it is, for good
    # Two processes starting a new store at once both write the same file.
    temp = f"{layout}.{os.getpid()}.{os.urandom(4).hex()}"
    with open(temp, "w") as f:
        f.write(LAYOUT_256)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, layout)
    _fsync(root)
    with contextlib.suppress(FileExistsError):
        os.mkdir(top)
    for a in range(256):
        with contextlib.suppress(FileExistsError):
            os.mkdir(os.path.join(top, f"{a:02x}"))
    _fsync(top)
    _fsync(root)
    return True


class Assembling(OSError):
    """An upload an assembly has taken (`_join`) and not ended: the store is busy with
    it, a 503 to be tried again."""


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._root = str(self.root)
        self._incoming = self.root / "incoming"
        self._leaves_256 = _open_layout(self._root)

    def _relative(self, key: str) -> str:
        """Where under the root a key is: a content key in this store's layout."""
        check_key(key)
        if key.split("/", 1)[0] in RESERVED:
            raise KeyError(key)
        if self._leaves_256:
            if _CONTENT_KEY.fullmatch(key):
                return key[:10] + key[13:]  # sha256/aa/<sha256>
            if _LEAF_256_KEY.fullmatch(key):
                raise KeyError(key)
        return key

    async def start(self) -> None:
        await asyncio.to_thread(sweep_spools, self._incoming)

    async def close(self) -> None:
        pass

    def _path(self, key: str) -> Path:
        return self.root / self._relative(key)

    def path(self, key: str) -> Path:
        """Where a blob is on disk."""
        return self._path(key)

    def _final(self, key: str) -> str:
        """`_path` as a string, for a commit's many blobs."""
        return os.path.join(self._root, self._relative(key))

    def writer(self, hold: Held | None = None) -> BlobWriter:
        return BlobWriter(self._incoming, hold)

    async def commit(self, writers: Sequence[BlobWriter]) -> None:
        try:
            await self._place({self._final(w.key): w for w in writers})
        finally:
            for w in writers:
                w.abort()

    async def put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        # Every key checked before a byte is written; a key given twice: the last bytes.
        # The caller's bytes as they are: each spool written by the placing thread.
        writers = {
            self._final(key): BlobWriter.of(self._incoming, key, data) for key, data in items
        }
        try:
            await self._place(writers)
        finally:
            for w in writers.values():
                w.abort()

    async def put(self, key: str, data: bytes) -> None:
        await self.put_many([(key, data)])

    async def _place(self, finals: dict[str, BlobWriter]) -> None:
        """Each finished writer's bytes renamed into place at its path, durably; the
        caller drops the spools (also on failure)."""
        if _SYNCFS is not None and len(finals) >= SYNCFS_FROM:
            await asyncio.to_thread(self._place_together, finals)
            return
        made = await asyncio.gather(
            *(asyncio.to_thread(_move_writer, w, f) for f, w in finals.items())
        )
        # The renames are durable once their directories are synced, and the directories
        # made for them once their parents are: each directory once, however many blobs
        # went into it.
        directories = {os.path.dirname(f) for f in finals}.union(*made)
        await asyncio.gather(*(asyncio.to_thread(_fsync, d) for d in directories))

    def _place_together(self, finals: dict[str, BlobWriter]) -> None:
        """Every spool written and durable, then renamed into place, then every rename
        durable: after a crash each key holds all of its bytes or nothing, as with
        `_move_into_place`."""
        spools = [w.spooled() for w in finals.values()]
        _syncfs(self.root)
        for (final, writer), spool in zip(finals.items(), spools, strict=True):
            _replace(spool, final)
            writer.moved()
        _syncfs(self.root)

    async def size(self, key: str) -> int:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(key)
        return path.stat().st_size

    async def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    async def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_file():
            path.unlink(missing_ok=True)

    async def stream(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        async with await anyio.open_file(self._path(key), "rb") as f:
            await f.seek(start)
            left = end - start + 1
            while left > 0:
                chunk = await f.read(min(CHUNK, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk

    @asynccontextmanager
    async def local_copy(self, key: str) -> AsyncIterator[Path]:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(key)
        yield path  # the blob itself: no copy needed

    def read_at(self, key: str, offset: int, length: int) -> bytes:
        with open(self._path(key), "rb") as f:
            f.seek(offset)
            return f.read(length)

    def read_head(self, key: str, length: int) -> tuple[bytes, int]:
        with open(self._path(key), "rb") as f:
            return f.read(length), os.fstat(f.fileno()).st_size

    async def copy(self, source: str, target: str) -> None:
        await asyncio.to_thread(self._link, self._path(source), self._path(target))

    def _link(self, source: Path, final: Path) -> None:
        """A second name for the same bytes (a hard link: no byte copied), given through a
        spool so that the key appears whole or not at all."""
        if final.is_file():
            return
        spool = self._incoming / os.urandom(16).hex()
        try:
            _link_or_copy(source, spool)
        except FileNotFoundError:
            if not source.is_file():
                raise
            spool.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(source, spool)
        try:
            _move_durably(spool, final)
        finally:
            spool.unlink(missing_ok=True)

    # Multipart: `multipart/<upload id>/key` names the target, `<n>.<md5>` are the parts.

    def _upload(self, key: str, upload_id: str) -> Path:
        self._path(key)
        folder = self.root / "multipart" / upload_id
        if not _UPLOAD_ID.fullmatch(upload_id):
            raise UnknownUpload(upload_id)
        try:
            named = (folder / "key").read_text()
        except FileNotFoundError:
            try:
                taken = (folder / JOINED).read_text() == key
            except FileNotFoundError:
                # Never made, or ended (aborted, expired) while we looked: gone either way.
                raise UnknownUpload(upload_id) from None
            if taken:
                # An assembly took it and has not placed the object yet: not gone (its
                # session must not end as expired while that completion records the
                # file), nor there. Asked again, the object is placed or the upload back.
                raise Assembling(errno.EBUSY, f"upload {upload_id} is being assembled") from None
            raise UnknownUpload(upload_id) from None
        if named != key:
            raise UnknownUpload(upload_id)
        return folder

    async def create_multipart(self, key: str) -> str:
        self._path(key)
        upload_id = uuid.uuid4().hex
        folder = self.root / "multipart" / upload_id
        await asyncio.to_thread(_start_upload, folder, key)
        return upload_id

    def presign_part(
        self, key: str, upload_id: str, part_number: int, expires: timedelta
    ) -> str | None:
        return None

    def presigned_get(self, key: str, expires: timedelta) -> str | None:
        return None

    async def put_part(
        self, key: str, upload_id: str, part_number: int, chunks: AsyncIterable[bytes]
    ) -> str:
        folder = self._upload(key, upload_id)
        check_part_number(part_number)
        temp = folder / f"incoming-{uuid.uuid4().hex}"
        md5 = hashlib.md5(usedforsecurity=False)
        try:
            async with await anyio.open_file(temp, "wb") as f:
                async for chunk in chunks:
                    md5.update(chunk)
                    await f.write(chunk)
            etag = md5.hexdigest()
            await asyncio.to_thread(self._keep_part, folder, part_number, temp, etag)
        finally:
            temp.unlink(missing_ok=True)
        return etag

    @staticmethod
    def _keep_part(folder: Path, part_number: int, temp: Path, etag: str) -> None:
        _fsync(temp)
        for old in folder.glob(f"{part_number}.*"):
            old.unlink(missing_ok=True)
        os.replace(temp, folder / f"{part_number}.{etag}")

    def _parts(self, folder: Path) -> list[PartInfo]:
        parts = []
        try:
            for path in folder.iterdir():
                number, _, etag = path.name.partition(".")
                if number.isdigit():
                    parts.append(PartInfo(int(number), etag, path.stat().st_size))
        except FileNotFoundError:
            # The upload ended while it was listed (an abort or expiry deletes its folder).
            raise UnknownUpload(folder.name) from None
        return sorted(parts)

    async def list_parts(
        self, key: str, upload_id: str, *, paged: Callable[[], None] | None = None
    ) -> list[PartInfo]:
        return self._parts(self._upload(key, upload_id))  # one page

    async def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]
    ) -> None:
        folder = self._upload(key, upload_id)
        have = {(p.part_number, p.etag): p.size for p in self._parts(folder)}
        wanted = [(n, etag.strip('"')) for n, etag in parts]
        if not wanted or [n for n, _ in wanted] != sorted({n for n, _ in wanted}):
            raise InvalidPart("parts must be listed once each, in ascending order")
        for i, part in enumerate(wanted):
            if part not in have:
                raise InvalidPart(f"part {part[0]} with etag {part[1]} was not uploaded")
            if have[part] < MIN_PART and i < len(wanted) - 1:
                raise InvalidPart(f"part {part[0]} is under {MIN_PART} bytes and not the last")
        await asyncio.to_thread(self._join, folder, wanted, self._path(key))

    def _join(self, folder: Path, parts: list[tuple[int, str]], final: Path) -> None:
        spool = self.root / "incoming" / uuid.uuid4().hex
        spool.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(spool, "wb") as out:
                for n, etag in parts:
                    with open(folder / f"{n}.{etag}", "rb") as part:
                        shutil.copyfileobj(part, out, CHUNK)
            _fsync(spool)
            # An upload is assembled once, as on S3: the first assembly to take its
            # name file places the object; one begun alongside (from parts it opened
            # before, perhaps other bytes sent since) finds it gone and places nothing.
            # Else that one could replace the object while a completion hashed it, and
            # the completion would then link those other bytes under the first's hash.
            os.rename(folder / "key", folder / JOINED)
            try:
                made = _replace(spool, os.fspath(final))
            except BaseException:
                os.rename(folder / JOINED, folder / "key")
                raise
            for directory in [str(final.parent), *made]:
                _fsync(directory)
        finally:
            spool.unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            folder = self._upload(key, upload_id)
        except Assembling:
            # Or taken by an assembly that died before it placed the object: its parts
            # go with the upload all the same.
            folder = self.root / "multipart" / upload_id
        await asyncio.to_thread(shutil.rmtree, folder, True)
