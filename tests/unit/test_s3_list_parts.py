"""The S3 store's listing of a multipart upload's parts ends with an error (the store
unavailable: a read shows the parts unknown) when the store pages back to a marker it
gave already, not in a loop of requests for ever (shared/kit/blobs/s3.py `list_parts`).
moto pages as S3 does; the client's listing call is replaced by one that does not."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from shared.kit.blobs.base import StoreUnavailable
from shared.kit.blobs.s3 import S3BlobStore, parse_url


@contextlib.asynccontextmanager
async def s3_store(path: Path) -> AsyncIterator[S3BlobStore]:
    """A store of no reachable server: its listing call is replaced below."""
    store = S3BlobStore(parse_url("s3://b?endpoint=http://127.0.0.1:9&secure=false"), path)
    try:
        yield store
    finally:
        await store.close()


def part(number: int) -> SimpleNamespace:
    return SimpleNamespace(part_number=number, etag=f"e{number}", size=10)


async def test_a_listing_whose_marker_comes_again_fails_and_stops_asking(
    tmp_path: Path,
) -> None:
    asked: list[str | None] = []

    def list_parts(*args: Any, part_number_marker: str | None = None) -> SimpleNamespace:
        asked.append(part_number_marker)
        # Pages of one part, the second page's marker the first's again: 1, 2, 1, 2, ...
        number = 1 if part_number_marker in (None, "2") else 2
        return SimpleNamespace(
            parts=[part(number)], is_truncated=True, next_part_number_marker=str(number)
        )

    async with s3_store(tmp_path) as store, asyncio.timeout(10):
        store._client._list_parts = list_parts  # type: ignore[method-assign]
        with pytest.raises(StoreUnavailable):
            await store.list_parts("uploads/x", "u")
    assert asked == [None, "1", "2"]


async def test_a_listing_that_pages_on_is_listed_whole(tmp_path: Path) -> None:

    def list_parts(*args: Any, part_number_marker: str | None = None) -> SimpleNamespace:
        number = int(part_number_marker or 0) + 1
        return SimpleNamespace(
            parts=[part(number)], is_truncated=number < 3, next_part_number_marker=str(number)
        )

    async with s3_store(tmp_path) as store:
        store._client._list_parts = list_parts  # type: ignore[method-assign]
        assert [p.part_number for p in await store.list_parts("uploads/x", "u")] == [1, 2, 3]
