"""Opening untrusted media: the content as a file read by ranges within a byte budget and a
deadline, and PyAV opened the one way both ingest (facts) and thumbnails (pictures) use.

Content is read by range (a local spool or blob, or ranged GETs from S3) through a small
block cache: only what the decoder asks for, never the whole file in memory. A decoder
that asks for more than the budget, or keeps reading past the deadline, is stopped by the
read that goes over: hostile headers cost a bounded amount of I/O and time.
"""

from __future__ import annotations

import io
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx
    from av.container import InputContainer

BLOCK = 256 * 1024
BLOCKS_KEPT = 64  # 16 MiB of cache at most, unless told fewer

ReadAt = Callable[[int, int], bytes]


# FFmpeg's demuxer for each audio and video type the sniffer accepts
# (services/ingest/media/kinds.py): what ingest opens a file with, and the only demuxers
# FFmpeg may choose among where the type is not at hand (thumbnails, re-encoding), rather
# than any of the hundreds it could probe for (playlists and session descriptions among
# them, which name other sources to open).
DEMUXERS = {
    "video/mp4": "mov",
    "video/quicktime": "mov",
    "video/x-m4v": "mov",
    "audio/mp4": "mov",
    "video/webm": "matroska",
    "video/x-matroska": "matroska",
    "video/x-msvideo": "avi",
    "audio/wav": "wav",
    "audio/flac": "flac",
    "audio/ogg": "ogg",
    "audio/mpeg": "mp3",
}
VIDEO_DEMUXERS = frozenset(
    demuxer for mime_type, demuxer in DEMUXERS.items() if mime_type.startswith("video/")
)


class OverBudget(Exception):
    """Reading the content would take more bytes than it is allowed."""

    def __init__(self, budget: int) -> None:
        super().__init__(f"reading it would take more than {budget // 2**20} MiB")
        self.budget = budget


class TooSlow(TimeoutError):
    """Reading the content took longer than it is allowed."""


class Seekable(io.RawIOBase):
    """A read-only file over `size` bytes read elsewhere: its place and how it moves."""

    position = 0
    size = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position


class RangeFile(Seekable):
    """`read_at(offset, length)` over content of `size` bytes as a seekable read-only file.

    Reads whole blocks through an LRU cache, within `budget` bytes in all and before
    `deadline` (time.monotonic()). An error of read_at itself (other than
    FileNotFoundError) is remembered in `failed`, since a decoder may wrap it in one of
    its own.
    """

    def __init__(
        self,
        read_at: ReadAt,
        size: int,
        *,
        budget: int,
        deadline: float | None = None,
        blocks_kept: int = BLOCKS_KEPT,
        block: int = BLOCK,
    ) -> None:
        self._read_at = read_at
        self._block_size = block
        self._blocks_kept = blocks_kept
        self.size = size
        self.position = 0
        self.budget = budget
        self.deadline = deadline
        self.read_bytes = 0
        self.failed: Exception | None = None
        self._blocks: OrderedDict[int, bytes] = OrderedDict()

    def _block(self, number: int) -> bytes:
        found = self._blocks.get(number)
        if found is not None:
            self._blocks.move_to_end(number)
            return found
        start = number * self._block_size
        length = min(self._block_size, self.size - start)
        if self.read_bytes + length > self.budget:
            raise OverBudget(self.budget)
        try:
            # A misbehaving read_at must not hand us more than we asked for.
            data = bytes(self._read_at(start, length)[:length])
        except FileNotFoundError:
            raise
        except Exception as error:
            self.failed = error
            raise
        self.read_bytes += len(data)
        self._blocks[number] = data
        if len(self._blocks) > self._blocks_kept:
            self._blocks.popitem(last=False)
        return data

    def readinto(self, buffer: Any) -> int:
        # Every read, not every block: a decoder may read a block a byte at a time.
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TooSlow("reading it took too long")
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), self.size - self.position)
        done = 0
        while done < wanted:
            number, offset = divmod(self.position, self._block_size)
            block = self._block(number)
            if offset >= len(block):
                break
            chunk = block[offset : offset + wanted - done]
            view[done : done + len(chunk)] = chunk
            done += len(chunk)
            self.position += len(chunk)
        return done


# A path as FFmpeg's and Pillow's errors quote it ('/data/blobs/sha256/...').
_QUOTED_PATH = re.compile(r"'/[^']*'")


def without_paths(text: str) -> str:
    """A decoder's error as a reason to show: a local store's blob is opened (and a
    rendition written) by its path, which FFmpeg's and Pillow's errors quote; the reason
    is shown to whoever may see the file, where the server keeps it is not."""
    return _QUOTED_PATH.sub("'…'", text)


def quiet_av() -> None:
    """FFmpeg's own log lines about damaged input are noise: the caller reports what matters."""
    import av

    av.logging.set_level(None)


def open_container(
    source: Any,
    *,
    fmt: str | None = None,
    among: frozenset[str] | None = None,
    timeout: float | None = None,
    probe_bytes: int | None = None,
) -> InputContainer:
    """PyAV's container over `source` (a file name or a binary file), for reading, with
    FFmpeg's demuxer `fmt` when given, else the one FFmpeg probes the content for
    `among` those (a file probed as any other is refused: FFmpeg's "not on whitelist").

    Metadata that is not valid text is dropped rather than failing the file; `timeout`
    caps the seconds FFmpeg may spend opening it and finding its streams (its interrupt
    callback); `probe_bytes` caps how much it reads to find them (probesize, and one
    second of analysis).
    """
    import av

    assert fmt is not None or among, "FFmpeg may not probe for any demuxer of its choosing"
    options = {}
    if probe_bytes is not None:
        options = {"probesize": str(probe_bytes), "analyzeduration": "1000000"}
    if fmt is None and among:
        options["format_whitelist"] = ",".join(sorted(among))
    container: InputContainer = av.open(
        source,
        mode="r",
        format=fmt,
        metadata_errors="ignore",
        timeout=timeout,
        container_options=options,
    )
    return container


class StoreAnswered(OSError):
    """The store's answer to a ranged GET of a presigned URL was not the range."""


class ContentChanged(StoreAnswered):
    """The object is no longer the one the URL is for (412: its ETag changed)."""


def presigned_reader(url: str, client: httpx.Client) -> ReadAt:
    """`read_at` over a presigned GET URL, a ranged GET a read: how a worker reads
    content without the store's credentials (only this one object, for a while). A
    missing object is FileNotFoundError, one changed (412) ContentChanged; any other
    answer but the range an OSError."""

    def read_at(offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        headers = {"Range": f"bytes={offset}-{offset + length - 1}"}
        with client.stream("GET", url, headers=headers) as answer:
            if answer.status_code == 416:
                return b""  # at or past the end, as a file read there gives nothing
            if answer.status_code == 404:
                raise FileNotFoundError("the content is no longer stored")
            if answer.status_code == 412:
                raise ContentChanged("the object changed since it was imported")
            if answer.status_code != 206:
                # A 200 is the whole object: never read that into memory.
                raise StoreAnswered(f"the store answered {answer.status_code} to a range")
            data = bytearray()
            for chunk in answer.iter_bytes():
                data += chunk
                if len(data) > length:
                    raise StoreAnswered("the store sent more than the range")
            return bytes(data)

    return read_at
