"""An object's body as it streams in: hashed on the way, kept whole in memory while it
is one piece, else spooled (in memory up to SPOOL_IN_MEMORY, then on disk); then
sniffed and its media facts read."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import IO

from services.ingest.imports.buckets.port import Read
from services.ingest.media import facts as media_facts

SPOOL_IN_MEMORY = 4 * 1024 * 1024


class Content:
    def __init__(self, spool_dir: Path) -> None:
        self.spool_dir = spool_dir
        self.digest = hashlib.sha256()
        self.size = 0
        self.data: bytes | None = b""
        self.spool: IO[bytes] | None = None
        self.etag: str | None = None

    def add(self, piece: bytes) -> None:
        self.digest.update(piece)
        self.size += len(piece)
        if self.spool is None and not self.data:
            self.data = piece
            return
        if self.spool is None:
            self.spool = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed by close()
                max_size=SPOOL_IN_MEMORY, dir=str(self.spool_dir)
            )
            self.spool.write(self.data or b"")
            self.data = None
        self.spool.write(piece)

    def read_at(self, offset: int, length: int) -> bytes:
        if self.data is not None:
            return self.data[offset : offset + length]
        assert self.spool is not None
        self.spool.seek(offset)
        return self.spool.read(length)

    def facts(self) -> Read:
        # inspect() sniffs the head first: the kind comes from the bytes.
        facts = media_facts.inspect(self.read_at, self.size)
        return Read(size=self.size, sha256=self.digest.hexdigest(), facts=facts, etag=self.etag)

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()
