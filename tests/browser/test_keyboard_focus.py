"""The keyboard alone: a dialog or a menu that closes gives the focus back to what opened
it (the toolbar's button, the folder's grid), so the person goes on from where they
were instead of from the top of the page."""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import make_folder, unique, upload
from tests.e2e.support import text


def test_focus_comes_back_after_a_dialog_or_a_menu_closes(
    signed_in: Page, api: httpx.Client
) -> None:
    page = signed_in
    folder = make_folder(api, unique("keys"))
    upload(api, folder["id"], ("first.txt", text("1\n")), ("second.txt", text("2\n")))
    page.goto(f"/folders/{folder['id']}")
    page.get_by_role("button", name="List").click()
    grid = page.get_by_role("grid", name="Folder contents")
    expect(grid.get_by_role("row", name="second.txt")).to_be_visible()

    # A toolbar button's dialog, closed with Escape: the button has the focus again.
    new_folder = page.get_by_role("button", name="+ New folder")
    new_folder.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("dialog", name="New folder")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.get_by_role("dialog")).to_have_count(0)
    expect(new_folder).to_be_focused()

    # The item's menu (Shift+F10), closed with Escape: back in the grid, whose keys work.
    grid.focus()
    page.keyboard.press("ArrowDown")
    expect(grid.get_by_role("row", name="first.txt")).to_have_attribute("aria-selected", "true")
    page.keyboard.press("Shift+F10")
    menu = page.get_by_role("menu", name="Actions for first.txt")
    expect(menu.get_by_role("menuitem", name="Open")).to_be_focused()
    page.keyboard.press("Escape")
    expect(menu).to_be_hidden()
    expect(grid).to_be_focused()
    page.keyboard.press("ArrowDown")
    expect(grid.get_by_role("row", name="second.txt")).to_have_attribute("aria-selected", "true")

    # A dialog opened from the menu (Rename), cancelled: back in the grid too.
    page.keyboard.press("Shift+F10")
    menu = page.get_by_role("menu", name="Actions for second.txt")
    menu.get_by_role("menuitem", name="Rename").focus()
    page.keyboard.press("Enter")
    dialog = page.get_by_role("dialog", name="Rename file")
    expect(dialog.get_by_label("Name")).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    expect(grid).to_be_focused()
    page.keyboard.press("F2")
    expect(page.get_by_role("dialog", name="Rename file")).to_be_visible()


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
