"""A folder of 10,000 files: listed page by page, drawn as a virtualised list (only the
rows in view are in the page), reached to its end by the keyboard and by scrolling."""

from __future__ import annotations

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from shared.kit.stack import Stack
from tests.browser.conftest import _context, home, make_folder, unique

COUNT = 10_000


@pytest.fixture(scope="module")
def big_folder(platform: object) -> dict:
    from shared.kit.stack import Stack
    from tests.conftest import ADMIN_KEY

    assert isinstance(platform, Stack)
    with httpx.Client(
        base_url=platform.gateway_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=300
    ) as api:
        folder = make_folder(api, unique("ten-thousand"))
        parts = [("file", (f"f{n:05d}.txt", f"{n}\n".encode())) for n in range(COUNT)]
        answer = api.post(f"/v1/folders/{folder['id']}/files", files=parts)
        assert answer.status_code == 201, answer.text[:500]
        assert len(answer.json()["files"]) == COUNT
    return folder


def test_ten_thousand_files_stay_a_small_page(admin_page: Page, big_folder: dict) -> None:
    page = admin_page
    page.goto(f"/folders/{big_folder['id']}")
    page.get_by_role("button", name="List").click()
    # Grouped by thousands as the person's locale groups them (English here).
    expect(page.get_by_text(f"{COUNT:,} items", exact=True)).to_be_visible(timeout=60_000)
    grid = page.get_by_role("grid", name="Folder contents")
    expect(grid).to_have_attribute("aria-rowcount", str(COUNT + 1))
    rows = grid.locator('[role="row"].item')
    assert rows.count() < 100, rows.count()
    expect(grid.get_by_role("row", name="f00000.txt")).to_be_visible()

    # The keyboard reaches the end; only the rows in view are drawn there too.
    grid.get_by_role("row", name="f00000.txt").click()
    page.keyboard.press("End")
    last = grid.get_by_role("row", name=f"f{COUNT - 1:05d}.txt")
    expect(last).to_be_visible()
    expect(last).to_have_attribute("aria-selected", "true")
    expect(grid.get_by_role("row", name="f00000.txt")).to_have_count(0)
    assert rows.count() < 100

    # Scrolling to the middle draws the middle.
    page.locator(".listing .scroller").evaluate("s => { s.scrollTop = s.scrollHeight / 2; }")
    expect(grid.get_by_role("row", name=f"f{COUNT // 2:05d}.txt")).to_be_attached()
    assert rows.count() < 100

    # The grid of thumbnails is virtualised the same way.
    page.get_by_role("button", name="Grid").click()
    expect(grid.get_by_role("row").first).to_be_visible()
    assert rows.count() < 200


def test_a_large_folder_is_ordered_by_the_catalog_page_by_page(
    admin_page: Page, big_folder: dict
) -> None:
    """Turning the order around asks the catalog for it: the last name comes first with
    the first page, not once all 10,000 files are loaded and sorted in the browser."""
    page = admin_page
    page.goto(f"/folders/{big_folder['id']}")
    page.get_by_role("button", name="List").click()
    grid = page.get_by_role("grid", name="Folder contents")
    expect(grid.get_by_role("row", name="f00000.txt")).to_be_visible(timeout=60_000)
    with page.expect_response(
        lambda r: "/items?" in r.url and "order=name" in r.url and "desc=true" in r.url
    ) as first_page:
        page.get_by_role("button", name="Ascending").click()
    assert first_page.value.ok
    assert first_page.value.json()["items"][0]["name"] == f"f{COUNT - 1:05d}.txt"
    rows = grid.locator('[role="row"].item')
    expect(rows.first).to_have_attribute("aria-label", f"f{COUNT - 1:05d}.txt")
    expect(page.get_by_text(f"{COUNT:,} items", exact=True)).to_be_visible(timeout=60_000)
    assert rows.count() < 100


def test_counts_are_grouped_as_the_persons_locale_groups_them(
    browser: Browser, platform: Stack, big_folder: dict, admin_state: dict
) -> None:
    context = _context(browser, platform, locale="de-DE", storage_state=admin_state)
    try:
        page = context.new_page()
        home(page)
        page.goto(f"/folders/{big_folder['id']}")
        expect(page.get_by_text("10.000 items", exact=True)).to_be_visible(timeout=60_000)
        summary = page.get_by_role("complementary", name="Details")
        expect(summary).to_contain_text("10.000")
    finally:
        context.close()
