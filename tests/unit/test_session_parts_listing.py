"""A read of an open session waits for each page of the store's listing of its parts, not
for the whole listing (services/ingest/sessions/handlers.py, `PARTS_WAIT_S`): a session
of many pages on a slow but answering store is listed whole; a store that stops
answering mid-listing, or whose pages all told take longer than `PARTS_TOTAL_S`, gives
`parts_known: false`. The store is a fake here; the e2e
tests (tests/e2e/test_hung_store.py) hang a real one."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest

from services.ingest.sessions import handlers
from services.ingest.sessions.handlers import Sessions
from shared.kit.blobs.base import PartInfo

WAIT_S = 0.2
PAGES = 6  # each taking most of the wait: the whole listing takes three times it


class PagedStore:
    """Lists a part a page, each page after `page_s`; `hangs_at` never comes."""

    def __init__(self, page_s: float, hangs_at: int | None = None) -> None:
        self.page_s = page_s
        self.hangs_at = hangs_at

    async def list_parts(
        self, key: str, upload_id: str, *, paged: Callable[[], None] | None = None
    ) -> list[PartInfo]:
        parts = []
        for number in range(1, PAGES + 1):
            # The store's answer to one page's call, `page_s` later (or never).
            answered = asyncio.Event()
            if number != self.hangs_at:
                asyncio.get_running_loop().call_later(self.page_s, answered.set)
            await answered.wait()
            parts.append(PartInfo(number, f"e{number}", 10))
            if paged is not None:
                paged()
        return parts


def sessions(store: PagedStore) -> Sessions:
    made = Sessions.__new__(Sessions)  # no database: `_stored_now` reads only the store
    made.blobs = store  # type: ignore[assignment]
    return made


ROW = {"id": uuid.uuid4(), "store_key": "uploads/x", "upload_id": "u"}


async def test_a_listing_of_many_slow_pages_is_waited_for_page_by_page(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(handlers, "PARTS_WAIT_S", WAIT_S)
    monkeypatch.setattr(handlers, "PARTS_TOTAL_S", WAIT_S * PAGES)
    loop = asyncio.get_running_loop()
    began = loop.time()
    stored = await sessions(PagedStore(page_s=WAIT_S / 2))._stored_now(ROW)  # type: ignore[arg-type]
    assert stored is not None and [p.number for p in stored] == list(range(1, PAGES + 1))
    assert loop.time() - began > WAIT_S  # longer than one wait, all told


async def test_a_store_that_stops_answering_mid_listing_leaves_the_parts_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(handlers, "PARTS_WAIT_S", WAIT_S)
    store = PagedStore(page_s=WAIT_S / 4, hangs_at=3)
    async with asyncio.timeout(10):
        assert await sessions(store)._stored_now(ROW) is None  # type: ignore[arg-type]


async def test_a_listing_whose_pages_all_told_take_too_long_leaves_the_parts_unknown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each page within the wait, the whole past the total: the gateway's read budget
    # would run out (503) before the read answered from the database.
    monkeypatch.setattr(handlers, "PARTS_WAIT_S", WAIT_S)
    monkeypatch.setattr(handlers, "PARTS_TOTAL_S", WAIT_S * 2)
    loop = asyncio.get_running_loop()
    began = loop.time()
    async with asyncio.timeout(10):
        stored = await sessions(PagedStore(page_s=WAIT_S * 0.8))._stored_now(ROW)  # type: ignore[arg-type]
    assert stored is None
    assert loop.time() - began < WAIT_S * 3  # the total, not the six pages' 4.8 waits
