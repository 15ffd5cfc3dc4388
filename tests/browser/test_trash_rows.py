"""The Trash chooses as a folder does: a click on a row chooses it alone, Ctrl-click adds
or removes one, Shift-click a range; after Restore the focus is on the page's heading
(Restore is disabled then), and the notice names only what there was."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import items, make_folder, sign_in, unique, upload
from tests.browser.test_roles_and_rename import _member
from tests.browser.test_top_level_rename import WHO_MAY as WHO_RENAMES
from tests.e2e.support import text

WHO_MAY = WHO_RENAMES.replace("rename", "restore")


def test_rows_are_chosen_by_a_click_and_restore_keeps_the_focus(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    folder = make_folder(api, unique("trash-rows"))
    names = [unique(n) + ".txt" for n in ("a", "b", "c")]
    made = upload(api, folder["id"], *((n, text(n + "\n")) for n in names))
    deleted = api.post("/v1/delete", json={"file_ids": [f["id"] for f in made]})
    assert deleted.status_code == 200, deleted.text

    page.goto("/trash")
    trash = page.get_by_role("region", name="Trash")
    rows = [trash.get_by_role("row", name=n) for n in names]
    for row in rows:
        expect(row).to_be_visible()
    # The list is newest first: the rows' order as shown, for the range.
    shown = trash.get_by_role("row").all_inner_texts()
    order = sorted(names, key=lambda n: next(i for i, t in enumerate(shown) if n in t))
    first, middle, last = (trash.get_by_role("row", name=n) for n in order)

    first.get_by_role("gridcell", name=order[0], exact=True).click()
    expect(first).to_have_attribute("aria-selected", "true")
    expect(trash.get_by_text("1 selected")).to_be_visible()
    last.get_by_role("gridcell", name=order[2], exact=True).click(modifiers=["Control"])
    expect(trash.get_by_text("2 selected")).to_be_visible()
    last.get_by_role("gridcell", name=order[2], exact=True).click(modifiers=["Control"])
    expect(trash.get_by_text("1 selected")).to_be_visible()
    expect(first).to_have_attribute("aria-selected", "true")
    middle.get_by_role("gridcell", name=order[1], exact=True).click()
    expect(first).to_have_attribute("aria-selected", "false")
    expect(middle).to_have_attribute("aria-selected", "true")
    last.get_by_role("gridcell", name=order[2], exact=True).click(modifiers=["Shift"])
    expect(trash.get_by_text("2 selected")).to_be_visible()
    expect(last).to_have_attribute("aria-selected", "true")
    expect(first).to_have_attribute("aria-selected", "false")
    # Its checkbox still adds or removes it alone.
    trash.get_by_role("checkbox", name=f"Choose {order[0]}").check()
    expect(trash.get_by_text("3 selected")).to_be_visible()
    trash.get_by_role("checkbox", name=f"Choose {order[0]}").uncheck()
    expect(trash.get_by_text("2 selected")).to_be_visible()

    trash.get_by_role("button", name="Restore").focus()
    page.keyboard.press("Enter")
    notice = page.locator(".notices").get_by_role("status")
    expect(notice).to_contain_text("Restored 2 files")
    expect(notice).not_to_contain_text("0 folders")
    expect(middle).to_be_hidden()
    expect(trash.get_by_role("button", name="Restore")).to_be_disabled()
    expect(trash.get_by_role("heading", name="Trash")).to_be_focused()
    assert {i["name"] for i in items(api, folder["id"])} == {order[1], order[2]}


def test_a_shared_top_level_folder_is_told_ahead_to_be_its_creators_to_restore(
    page: Page, api: httpx.Client
) -> None:
    """Only its creator or an org admin may restore a top-level folder: its Editor is
    told so on its row and by a disabled "Restore" before asking (the trash's
    `may_restore`), and may still delete it forever."""
    shared = make_folder(api, unique("shared-gone"))
    editor = _member(api, shared["id"], "editor")
    deleted = api.post("/v1/delete", json={"folder_ids": [shared["id"]]})
    assert deleted.status_code == 200, deleted.text
    sign_in(page, editor["api_key"])
    page.goto("/trash")
    trash = page.get_by_role("region", name="Trash")
    row = trash.get_by_role("row", name=shared["name"])
    expect(row).to_contain_text(WHO_MAY)
    trash.get_by_role("checkbox", name=f"Choose {shared['name']}").check()
    expect(trash.get_by_role("button", name="Restore")).to_be_disabled()
    expect(trash.get_by_role("button", name="Restore")).to_have_accessible_description(
        re.compile(re.escape(WHO_MAY))
    )
    expect(trash.get_by_role("button", name="Delete forever")).to_be_enabled()


def test_the_trash_rows_take_a_folders_keys(admin_page: Page, api: httpx.Client) -> None:
    """Arrows move and choose, Shift extends, Space adds or removes, Escape chooses
    none, Delete asks to delete forever."""
    page = admin_page
    folder = make_folder(api, unique("trash-keys"))
    names = [unique(n) + ".txt" for n in ("a", "b")]
    made = upload(api, folder["id"], *((n, text(n + "\n")) for n in names))
    deleted = api.post("/v1/delete", json={"file_ids": [f["id"] for f in made]})
    assert deleted.status_code == 200, deleted.text

    page.goto("/trash")
    trash = page.get_by_role("region", name="Trash")
    grid = trash.get_by_role("grid", name="Items in the trash")
    for n in names:
        expect(grid.get_by_role("row", name=n)).to_be_visible()
    # Newest first: the two are the first rows (other tests' items come after).
    first, second = (grid.get_by_role("row").nth(k) for k in (1, 2))
    grid.focus()
    page.keyboard.press("ArrowDown")
    expect(first).to_have_attribute("aria-selected", "true")
    page.keyboard.press("ArrowDown")
    expect(second).to_have_attribute("aria-selected", "true")
    expect(first).to_have_attribute("aria-selected", "false")
    expect(grid).to_have_attribute("aria-activedescendant", re.compile("^trash-"))
    page.keyboard.press("Shift+ArrowUp")
    expect(trash.get_by_text("2 selected")).to_be_visible()
    page.keyboard.press("Space")
    expect(trash.get_by_text("1 selected")).to_be_visible()
    page.keyboard.press("Escape")
    expect(trash.get_by_text("0 selected")).to_be_visible()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Delete")
    dialog = page.get_by_role("alertdialog", name="Delete 1 item forever?")
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
