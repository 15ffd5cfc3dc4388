"""A DICOM file known by its size and read by range (an S3 blob, or a worker reading
through its parent), as a seekable binary file for pydicom and the reader.

A header is read forward from the start: those reads extend one prefix, doubling it at
each fetch (a 1 KiB header costs the first fetch; a 1 MiB one, seven). A read that jumps
past the prefix (an item header after a fragment skipped), or any read past it when it
is not to grow (`forward` false), fetches that place alone, `least` bytes at least.
Reads never go past `size`, so a length in the file that lies only makes a read come
up short, as a local file's would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.kit.media import Seekable


class TooManyReads(OSError):
    """More fetches than the file was allowed: the caller reads it another way."""


class ShortRead(OSError):
    """The blob gave fewer bytes than its size promised."""


class Ranged(Seekable):
    def __init__(
        self,
        read_at: Callable[[int, int], bytes],
        size: int,
        head: bytes = b"",
        *,
        max_reads: int | None = None,
        least: int = 8,
        step: int = 16 * 1024,
        forward: bool = True,
    ) -> None:
        self._read_at = read_at
        self.size = size
        self._prefix = bytearray(head[:size])
        self._window = b""
        self._window_at = 0
        self.position = 0
        self.max_reads = max_reads
        self.least = least
        self.step = step
        self.forward = forward
        self.reads = 0
        self.fetched = 0
        self.failed: Exception | None = None  # an error of read_at, as it was raised

    def _fetch(self, offset: int, length: int) -> bytes:
        if self.max_reads is not None and self.reads >= self.max_reads:
            raise TooManyReads(f"more than {self.max_reads} ranged reads")
        self.reads += 1
        try:
            data = bytes(self._read_at(offset, length)[:length])
        except Exception as error:
            self.failed = error
            raise
        self.fetched += len(data)
        if len(data) != length:
            # The blob is shorter than it said (changed under us): not a truncated
            # file, which only the whole blob can tell.
            raise ShortRead(f"a ranged read of {length:,} bytes gave {len(data):,}")
        return data

    def read(self, size: int | None = -1) -> bytes:
        # Never a buffer larger than what is left: a length read from the file may lie.
        left = max(0, self.size - self.position)
        wanted = left if size is None or size < 0 else min(size, left)
        buffer = bytearray(wanted)
        return bytes(buffer[: self.readinto(buffer)])

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        start = self.position
        wanted = min(len(view), self.size - start)
        if wanted <= 0:
            return 0
        end = start + wanted
        have = len(self._prefix)
        if end <= have or (start <= have and self.forward):
            if end > have:  # forward, as a header is read: the prefix grows
                grow = min(max(end - have, have, self.step), self.size - have)
                self._prefix += self._fetch(have, grow)
            view[:wanted] = self._prefix[start:end]
        else:
            window_end = self._window_at + len(self._window)
            if not (self._window_at <= start and end <= window_end):
                length = min(max(wanted, self.least), self.size - start)
                self._window, self._window_at = self._fetch(start, length), start
            at = start - self._window_at
            view[:wanted] = self._window[at : at + wanted]
        self.position = end
        return wanted
