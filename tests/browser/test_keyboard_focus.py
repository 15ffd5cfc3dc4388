"""The keyboard alone in a folder: the first arrow key chooses the first item."""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import make_folder, unique, upload
from tests.e2e.support import text


def test_the_first_arrow_key_chooses_the_first_item_in_both_views(
    signed_in: Page, api: httpx.Client
) -> None:
    page = signed_in
    folder = make_folder(api, unique("first-key"))
    upload(api, folder["id"], *((f"f{n}.txt", text(f"{n}\n")) for n in range(6)))
    page.goto(f"/folders/{folder['id']}")
    grid = page.get_by_role("grid", name="Folder contents")
    for view in ("List", "Grid"):
        page.get_by_role("button", name=view).click()
        expect(grid.get_by_role("row", name="f5.txt")).to_be_visible()
        grid.focus()
        page.keyboard.press("ArrowDown")
        expect(grid.get_by_role("row", name="f0.txt")).to_have_attribute("aria-selected", "true")
        expect(page.get_by_text("6 items, 1 selected")).to_be_visible()
        page.reload()
