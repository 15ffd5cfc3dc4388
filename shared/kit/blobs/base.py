"""What both adapters share: keys, the spooling writer, the interface, the errors."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO, NamedTuple, Protocol

CHUNK = 1024 * 1024
# S3's limits for a multipart upload, kept by the local adapter too.
MIN_PART = 5 * 1024 * 1024
MAX_PARTS = 10_000
# A key is ours: a content hash or an id, in a few plain path segments.
_KEY = re.compile(r"[a-z0-9]+(/[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}){1,4}")


def content_key(sha256: str) -> str:
    return f"sha256/{sha256[:2]}/{sha256[2:4]}/{sha256}"


def check_key(key: str) -> str:
    """The key, if it is one of ours (KeyError otherwise: never a path from user text)."""
    if not _KEY.fullmatch(key) or ".." in key:
        raise KeyError(key)
    return key


def check_part_number(part_number: int) -> int:
    if not 1 <= part_number <= MAX_PARTS:
        raise InvalidPart(f"part numbers go from 1 to {MAX_PARTS}")
    return part_number


# A spool untouched this long belongs to no request in flight (a spool is written as the
# bytes arrive, and committed or dropped right after): a crash left it behind.
SPOOL_MAX_AGE_S = 3600


def sweep_spools(directory: Path, max_age_s: float = SPOOL_MAX_AGE_S) -> int:
    """Delete the files a crash left in a spool directory; how many went."""
    if not directory.is_dir():
        return 0
    cutoff = time.time() - max_age_s
    swept = 0
    for path in directory.iterdir():
        with contextlib.suppress(FileNotFoundError):
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                swept += 1
    return swept


class UnknownUpload(LookupError):
    """No multipart upload of that id for that key (never made, completed or aborted)."""


class StoreUnavailable(OSError):
    """The object store failed to take a blob for now (its connection, a 5xx, slow down):
    an I/O error of the store, as a failing disk is the local store's (transient)."""


class StoreRefused(Exception):
    """The object store refused a blob for good (access denied, no such bucket, bad
    credentials): an operator's matter. Not an OSError, so not retried as transient: a
    background job counts its attempts and gives up; a request answers 503."""


class InvalidPart(ValueError):
    """A part list that cannot complete an upload: unknown part or etag, wrong order,
    or a part other than the last under MIN_PART."""


class PartInfo(NamedTuple):
    part_number: int
    etag: str
    size: int


# A blob of at most this many bytes may stay in memory until its commit, within the
# `Held` budget its writer was given.
HOLD_PER_BLOB = 64 * 1024


class Held:
    """How many bytes an upload's writers may still keep in memory (its budget), and
    whether a worker thread reads them now (a commit's, media inspection's)."""

    def __init__(self, limit: int) -> None:
        self.left = limit
        self._lock = threading.Lock()
        self._readers = 0
        self._then: list[Callable[[], None]] = []

    def give_back(self, size: int) -> None:
        with self._lock:  # from a commit's threads, side by side
            self.left += size

    @contextlib.contextmanager
    def in_use(self) -> Iterator[None]:
        """For a worker thread while it reads held bytes: an upload cancelled meanwhile
        (its client gone) drops them from its writers, yet they stay in memory until
        the thread is done with them."""
        with self._lock:
            self._readers += 1
        try:
            yield
        finally:
            with self._lock:
                self._readers -= 1
                done = self._then if self._readers == 0 else []
                if done:
                    self._then = []
            for call in done:
                call()

    def unused(self, then: Callable[[], None]) -> bool:
        """Whether no worker thread reads the held bytes now; if one does, `then()` is
        called once the last is done, in that thread."""
        with self._lock:
            if self._readers:
                self._then.append(then)
                return False
        return True


class _SpoolNames:
    """Spool file names unique across processes: a random prefix drawn once a process
    (again after a fork) and a counter. `os.urandom` a name was a system call a file of
    an upload, which lets go of the GIL: on the event loop, with the commit's and the
    facts' threads waiting for it, each call cost ~28 µs of the loop's time under
    upload_small (cProfile), for ~0.4 µs of CPU."""

    def __init__(self) -> None:
        self._pid = -1
        self._prefix = ""
        self._count = itertools.count()

    def next(self) -> str:
        if os.getpid() != self._pid:
            self._prefix, self._count = os.urandom(12).hex(), itertools.count()
            self._pid = os.getpid()
        return f"{self._prefix}{next(self._count):08x}"


_SPOOL_NAMES = _SpoolNames()


class BlobWriter:
    """One upload's bytes, hashed as they come and spooled to a local file.

    Nothing is in the store until `commit`; until then `read_at` reads the spool (or the
    bytes held in memory), so media inspection never needs a network round trip. Given a
    `Held` budget, a small blob stays in memory and its spool is written by the commit,
    in its worker thread: creating a file is a system call that waits on the file
    system's journal (another request's `syncfs`), and the writer is fed on the event
    loop.
    """

    def __init__(self, spool_dir: Path, hold: Held | None = None) -> None:
        # The spool's path as a string: pathlib's joins and conversions were most of a
        # small blob's commit on the GIL (a Path is made only for callers that ask).
        self._spool = f"{os.fspath(spool_dir)}/{_SPOOL_NAMES.next()}"
        self._hold = hold
        self._held: bytes | bytearray | None = bytearray() if hold is not None else None
        self._file: BinaryIO | None = None
        self._on_disk = False
        self._aborted = False
        if hold is None:
            self._open()
        self._hash = hashlib.sha256()
        self.size = 0
        self.key = ""
        self.sha256 = ""

    @classmethod
    def of(cls, spool_dir: Path, key: str, data: bytes) -> BlobWriter:
        """A finished writer of bytes made here (thumbnails), for a key the caller names:
        held as they are whatever their size, neither copied nor hashed, their spool
        written by the commit's worker thread, not on the event loop."""
        writer = cls(spool_dir, Held(0))  # held: no spool file opened here
        writer._hold = None  # no upload's budget: nothing to give back
        writer._held = data
        writer.size = len(data)
        writer.key = key  # no more bytes
        return writer

    @property
    def path(self) -> Path:
        return Path(self._spool)

    def _open(self) -> None:
        path = self._spool
        try:
            self._file = open(path, "wb")  # noqa: SIM115 - closed in finish/abort
        except FileNotFoundError:
            # Made on first use (or again, if swept): not a mkdir per file of a batch.
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self._file = open(path, "wb")  # noqa: SIM115 - closed in finish/abort
        self._on_disk = True

    def write(self, data: bytes | memoryview) -> None:
        if self.key:
            # Its key names the bytes it had: more would be stored under the wrong one.
            raise ValueError("write to a finished blob")
        self._hash.update(data)
        self.size += len(data)
        held = self._held
        if held is not None:
            assert self._hold is not None and isinstance(held, bytearray)
            if self.size <= HOLD_PER_BLOB and len(data) <= self._hold.left:
                self._hold.left -= len(data)
                held += data
                return
            self._spill()
        assert self._file is not None
        self._file.write(data)

    def _spill(self) -> None:
        """Too large (or the budget spent) to stay in memory: to the spool file."""
        held = self._drop_held()
        self._open()
        assert self._file is not None
        self._file.write(held)

    def _drop_held(self) -> bytes | bytearray:
        held, self._held = self._held or b"", None
        if self._hold is not None:
            self._hold.give_back(len(held))
        return held

    @contextlib.contextmanager
    def lent(self) -> Iterator[bytes | bytearray]:
        """The bytes held in memory, for a worker thread to read for the time of the block
        (see `Held.in_use`); ValueError if they are not held (aborted, or spooled)."""
        with self._hold.in_use() if self._hold is not None else contextlib.nullcontext():
            held = self._held
            if held is None:
                raise ValueError("the blob is no longer held in memory (aborted or spooled)")
            yield held

    @property
    def held(self) -> bytes | bytearray | None:
        """The bytes, if they are in memory only (finished, not committed)."""
        return self._held

    def finish(self) -> tuple[str, str]:
        """Close the spool; returns (key, sha256). The blob is stored by `commit`."""
        if self._file is not None:
            self._file.close()
        self.sha256 = self._hash.hexdigest()
        self.key = content_key(self.sha256)
        return self.key, self.sha256

    def spooled(self) -> str:
        """The spool file's path, written now if the bytes were held in memory: blocking,
        for a commit's worker thread."""
        if self._held is None:
            return self._spool
        with self.lent() as held:
            path = self._spool
            self._on_disk = True
            # os.open and write, not open(): no fstat, isatty ioctl and lseek a file.
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            try:
                fd = os.open(path, flags, 0o666)
            except FileNotFoundError:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                fd = os.open(path, flags, 0o666)
            try:
                view = memoryview(held)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            if self._aborted:
                # Aborted meanwhile (a cancelled commit: the abort ran on the event loop
                # while this thread waited in os.open): the file is this thread's to drop.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                raise ValueError("the blob was aborted while its spool was written")
            self._drop_held()
        return path

    def moved(self) -> None:
        """The spool was renamed into the store: nothing of it is left to drop."""
        self._on_disk = False

    def read_at(self, offset: int, length: int) -> bytes:
        if self._held is not None:
            return bytes(self._held[offset : offset + length])
        with open(self._spool, "rb") as f:
            f.seek(offset)
            return f.read(length)

    def abort(self) -> None:
        """Drop the spool (harmless after commit, which has moved or removed it)."""
        self._aborted = True
        if self._file is not None:
            self._file.close()
        self._drop_held()
        if self._on_disk:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._spool)
            self._on_disk = False


class BlobStore(Protocol):
    """Content-addressed bytes. A key that is not ours raises KeyError; a missing blob
    FileNotFoundError."""

    async def start(self) -> None:
        """Ready the store (S3: create the bucket if missing)."""

    async def close(self) -> None: ...

    def writer(self, hold: Held | None = None) -> BlobWriter:
        """A writer for one blob; with `hold`, a small blob may stay in memory until
        its commit, within that budget."""

    async def commit(self, writers: Sequence[BlobWriter]) -> None:
        """Store finished writers under their content keys, durably; drop the spools
        (also on failure). Events may refer to the blobs once this returns."""

    async def put_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Store small bytes made here (thumbnails) each under a key of ours, durably,
        replacing what was there: once this returns, every key holds all of its bytes;
        after a failure or a crash, each key holds all of its new bytes or none of them.
        Made durable together (local: two syncfs for the lot, not two fsyncs a blob)."""

    async def put(self, key: str, data: bytes) -> None:
        """`put_many` of one."""

    async def size(self, key: str) -> int: ...

    def stream(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes start..end inclusive, a chunk at a time."""

    async def exists(self, key: str) -> bool: ...

    async def delete(self, key: str) -> None:
        """Remove a blob (no error if it is gone)."""

    def local_copy(self, key: str) -> AbstractAsyncContextManager[Path]:
        """A local file with the blob's bytes, for the time of the block."""

    def read_at(self, key: str, offset: int, length: int) -> bytes:
        """Up to `length` bytes at `offset`, blocking: for media inspection, which runs
        in a thread and reads a few ranges of a large file."""

    def read_head(self, key: str, length: int) -> tuple[bytes, int]:
        """The blob's first `length` bytes (all of it, if it is shorter) and its whole
        size, blocking, in one read (S3: one ranged GET, the size from its Content-Range):
        for a reader in a thread that needs a file's header and its length, not its body."""

    async def copy(self, source: str, target: str) -> None:
        """Put the blob `source`'s bytes under the key `target` too, durably (kept if
        already there, since keys are content hashes); `source` stays."""

    # Multipart uploads (resumable large uploads): parts 1..MAX_PARTS, each but the last
    # at least MIN_PART, completed into `key`.
    async def create_multipart(self, key: str) -> str:
        """A new upload's id."""

    def presign_part(
        self, key: str, upload_id: str, part_number: int, expires: timedelta
    ) -> str | None:
        """A URL a client can PUT the part to, or None: the caller takes the PUT itself."""

    async def put_part(
        self, key: str, upload_id: str, part_number: int, chunks: AsyncIterable[bytes]
    ) -> str:
        """Store one part (replacing an earlier one of that number); its etag."""

    async def list_parts(
        self, key: str, upload_id: str, *, paged: Callable[[], None] | None = None
    ) -> list[PartInfo]:
        """The parts stored so far; `paged` called as each page of them comes (S3 lists
        1,000 a call), so a caller may bound the wait for a page, not for all."""

    async def complete_multipart(
        self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]
    ) -> None:
        """Join (part number, etag) in ascending order into the blob `key`."""

    async def abort_multipart(self, key: str, upload_id: str) -> None: ...

    def presigned_get(self, key: str, expires: timedelta) -> str | None:
        """A URL to download the blob directly, or None (local: through our route)."""
