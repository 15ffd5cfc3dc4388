"""A Trash of thousands of items: drawn windowed as a dataset's files are (only the rows
in view are in the page), its keys (arrows, Shift, Ctrl/Cmd, Space, Ctrl/Cmd+A, Escape,
Delete, End, Home) working across the window, the keyboard's row scrolled into view; and
"Delete forever" of more items than the route takes at once (1,000 ids)."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import make_folder, sign_in, unique
from tests.browser.test_roles_and_rename import _member

COUNT = 2_000


def _trash(api: httpx.Client) -> list[dict]:
    found: list[dict] = []
    cursor = None
    while True:
        params: dict = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = api.get("/v1/trash", params=params).json()
        found += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return found


def test_a_trash_of_thousands_is_windowed_and_its_keys_reach_the_last_item(
    signed_in: Page, api: httpx.Client
) -> None:
    page = signed_in
    folder = make_folder(api, unique("trash-window"))
    parts = [("file", (f"t{n:04d}.txt", f"{n}\n".encode())) for n in range(COUNT)]
    made = api.post(f"/v1/folders/{folder['id']}/files", files=parts, timeout=300)
    assert made.status_code == 201, made.text[:500]
    ids = [f["id"] for f in made.json()["files"]]
    # One request for them all: each file is its own item in the trash.
    deleted = api.post("/v1/delete", json={"file_ids": ids}, timeout=300)
    assert deleted.status_code == 200, deleted.text[:500]
    try:
        page.goto("/trash")
        trash = page.get_by_role("region", name="Trash")
        grid = trash.get_by_role("grid", name="Items in the trash")
        expect(grid).to_be_visible(timeout=60_000)
        total = len(_trash(api))
        assert total >= COUNT
        rows = grid.locator("tbody tr:not(.spacer)")
        assert 0 < rows.count() < 100, rows.count()
        # Every item the admin may touch: the whole trash (they are an org admin).
        expect(grid).to_have_attribute("aria-rowcount", str(total + 1))

        # The newest first: this test's items lead. Click the first, then the arrows.
        first = rows.first
        first.get_by_role("gridcell").nth(1).click()
        expect(trash.get_by_text("1 selected", exact=True)).to_be_visible()
        expect(first).to_have_attribute("aria-selected", "true")
        page.keyboard.press("ArrowDown")
        expect(grid.locator('tr[aria-rowindex="3"]')).to_have_attribute("aria-selected", "true")
        expect(first).to_have_attribute("aria-selected", "false")
        page.keyboard.press("Shift+ArrowDown")
        page.keyboard.press("Shift+ArrowDown")
        expect(trash.get_by_text("3 selected", exact=True)).to_be_visible()
        page.keyboard.press("Escape")
        expect(trash.get_by_text("0 selected", exact=True)).to_be_visible()

        # End: the last item, drawn and in view, the first no longer in the page.
        page.keyboard.press("End")
        last = grid.locator(f'tr[aria-rowindex="{total + 1}"]')
        expect(last).to_have_attribute("aria-selected", "true")
        expect(last).to_be_in_viewport()
        expect(grid).to_have_attribute("aria-activedescendant", re.compile(r"^trash-"))
        assert grid.get_attribute("aria-activedescendant") == last.get_attribute("id")
        expect(grid.locator('tr[aria-rowindex="2"]')).to_have_count(0)
        assert rows.count() < 100, rows.count()
        # Space takes it out and back; Ctrl+Up moves without choosing, Space adds.
        page.keyboard.press("Space")
        expect(trash.get_by_text("0 selected", exact=True)).to_be_visible()
        page.keyboard.press("Space")
        page.keyboard.press("Control+ArrowUp")
        page.keyboard.press("Space")
        expect(trash.get_by_text("2 selected", exact=True)).to_be_visible()
        expect(grid.locator(f'tr[aria-rowindex="{total}"]')).to_be_in_viewport()

        # Delete asks about what is chosen; Escape keeps it.
        page.keyboard.press("Delete")
        question = page.get_by_role("alertdialog", name="Delete 2 items forever?")
        expect(question).to_be_visible()
        page.keyboard.press("Escape")
        expect(question).to_be_hidden()

        # Ctrl+A chooses every item, drawn or not; Home goes back to the first, in view.
        grid.focus()
        page.keyboard.press("Control+a")
        expect(trash.get_by_text(f"{total:,} selected", exact=True)).to_be_visible()
        page.keyboard.press("Home")
        expect(grid.locator('tr[aria-rowindex="2"]')).to_be_in_viewport()
        expect(trash.get_by_text("1 selected", exact=True)).to_be_visible()
        assert rows.count() < 100, rows.count()
    finally:
        # Out of the trash, for the tests after this one (a page of ids a request).
        for at in range(0, len(ids), 200):
            gone = api.delete("/v1/trash", params={"file_ids": ",".join(ids[at : at + 200])})
            assert gone.status_code == 200, gone.text[:500]


def test_more_than_a_thousand_items_are_deleted_forever_at_once(
    page: Page, api: httpx.Client
) -> None:
    """Ctrl+A then Delete in a trash of 1,200 items: the route takes 1,000 ids a request
    (they were all sent in one, and refused: "file_ids takes at most 1,000 ids")."""
    folder = make_folder(api, unique("purge-many"))
    # An Editor of this folder alone: their trash is its items.
    editor = _member(api, folder["id"], "editor")
    many = 1_200
    parts = [("file", (f"p{n:04d}.txt", f"{n}\n".encode())) for n in range(many)]
    made = api.post(f"/v1/folders/{folder['id']}/files", files=parts, timeout=300)
    assert made.status_code == 201, made.text[:500]
    ids = {f["id"] for f in made.json()["files"]}
    deleted = api.post("/v1/delete", json={"file_ids": sorted(ids)}, timeout=300)
    assert deleted.status_code == 200, deleted.text[:500]

    sign_in(page, editor["api_key"])
    page.goto("/trash")
    trash = page.get_by_role("region", name="Trash")
    grid = trash.get_by_role("grid", name="Items in the trash")
    expect(grid).to_be_visible(timeout=60_000)
    grid.focus()
    page.keyboard.press("Control+a")
    expect(trash.get_by_text(f"{many:,} selected", exact=True)).to_be_visible()
    page.keyboard.press("Delete")
    question = page.get_by_role("alertdialog", name=f"Delete {many:,} items forever?")
    question.get_by_role("button", name="Delete forever").click()
    expect(page.locator(".notices").get_by_role("status")).to_contain_text(
        f"Deleted forever {many:,} files"
    )
    expect(question).to_have_count(0)
    expect(trash.get_by_text("The trash is empty.")).to_be_visible()
    assert not ids & {i["id"] for i in _trash(api)}
