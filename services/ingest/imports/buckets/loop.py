"""The bucket adapters' own event loop, in a thread of its own; `Threaded` is a
BucketReader whose every call runs there.

Why: an import reads objects as fast as the bucket answers, and each read is many small
steps (aiohttp's request and answer, botocore's signing, hashing, media facts). On
ingest's loop those steps queued among the import's batch recordings, the consumers and
the HTTP handlers, and every await of each of them went through that one queue. Here the
reads have a loop to themselves, and a run of objects crosses to ingest's loop in one
hop, as one list of results. It does not give the reads a core of their own (the GIL is
shared): what they cost is what they cost, wherever they run.

Every guarantee of the adapter holds as it is: it is the same S3Reader, with its
resolver, its budgets and no redirects, only driven from this loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from services.ingest.imports.buckets.port import Bucket, BucketReader, Listed, Ranged, Read
from shared.kit.blobs import BlobWriter

_T = TypeVar("_T")
_Page = TypeVar("_Page")


class BucketLoop:
    """An event loop running in a daemon thread, started on first use."""

    def __init__(self, name: str = "buckets") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _running(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=self.name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    async def run(self, work: Coroutine[Any, Any, _T]) -> _T:
        """`work` run to its end on this loop. Cancelling the caller cancels it there."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(work, self._running()))

    def stop(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not thread.is_alive():
            loop.close()


class Threaded:
    """A BucketReader driven on a BucketLoop: ingest's loop awaits each call's result."""

    def __init__(self, inner: BucketReader, loop: BucketLoop) -> None:
        self.inner, self.loop = inner, loop
        self.bucket: Bucket = inner.bucket

    async def allowed(self) -> None:
        await self.loop.run(self.inner.allowed())

    async def check(self) -> None:
        await self.loop.run(self.inner.check())

    def pages(self, prefix: str) -> AsyncGenerator[list[str], None]:
        return self._relayed(self.inner.pages(prefix))

    def listing(self, prefix: str) -> AsyncGenerator[list[Listed], None]:
        return self._relayed(self.inner.listing(prefix))

    async def _relayed(self, pages: AsyncGenerator[_Page, None]) -> AsyncGenerator[_Page, None]:
        """The pages of a generator that runs on the bucket's loop, one at a time."""

        async def following() -> _Page | None:
            try:
                return await anext(pages)
            except StopAsyncIteration:
                return None

        async def closed() -> None:
            # After a cancellation the generator ended with it (or is still ending).
            with contextlib.suppress(RuntimeError):
                await pages.aclose()

        try:
            while (page := await self.loop.run(following())) is not None:
                yield page
        finally:
            await self.loop.run(closed())

    async def read(self, key: str, spool_dir: Path) -> Read:
        return await self.loop.run(self.inner.read(key, spool_dir))

    async def copy(self, key: str, writer: Callable[[], BlobWriter]) -> BlobWriter:
        return await self.loop.run(self.inner.copy(key, writer))

    async def read_run(self, keys: Sequence[str], spool_dir: Path) -> list[Read | Exception]:
        return await self.loop.run(self.inner.read_run(keys, spool_dir))

    async def presign(self, key: str, name: str, mime_type: str) -> str:
        return await self.loop.run(self.inner.presign(key, name, mime_type))

    async def read_range(
        self, key: str, first: int, last: int, if_match: str | None = None
    ) -> Ranged:
        return await self.loop.run(self.inner.read_range(key, first, last, if_match))

    async def hashed(self, key: str) -> tuple[str, str | None]:
        return await self.loop.run(self.inner.hashed(key))

    async def close(self) -> None:
        await self.loop.run(self.inner.close())
