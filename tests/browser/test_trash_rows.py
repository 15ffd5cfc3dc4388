"""The Trash chooses as a folder does: a click on a row chooses it alone, Ctrl-click adds
or removes one, Shift-click a range; after Restore the focus is on the page's heading
(Restore is disabled then), and the notice names only what there was."""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import items, make_folder, sign_in, unique, upload
from tests.browser.test_roles_and_rename import _member
from tests.e2e.support import text


def test_rows_are_chosen_by_a_click_and_restore_keeps_the_focus(
    signed_in: Page, api: httpx.Client
) -> None:
    page = signed_in
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

    first.get_by_role("cell", name=order[0], exact=True).click()
    expect(first).to_have_attribute("aria-selected", "true")
    expect(trash.get_by_text("1 selected")).to_be_visible()
    last.get_by_role("cell", name=order[2], exact=True).click(modifiers=["Control"])
    expect(trash.get_by_text("2 selected")).to_be_visible()
    last.get_by_role("cell", name=order[2], exact=True).click(modifiers=["Control"])
    expect(trash.get_by_text("1 selected")).to_be_visible()
    expect(first).to_have_attribute("aria-selected", "true")
    middle.get_by_role("cell", name=order[1], exact=True).click()
    expect(first).to_have_attribute("aria-selected", "false")
    expect(middle).to_have_attribute("aria-selected", "true")
    last.get_by_role("cell", name=order[2], exact=True).click(modifiers=["Shift"])
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


def test_a_restore_of_a_shared_top_level_folder_says_who_may(page: Page, api: httpx.Client) -> None:
    """Only its creator or an org admin may restore a top-level folder: its Editor is
    told so in the platform's words (not "it needs the org_admin role")."""
    shared = make_folder(api, unique("shared-gone"))
    editor = _member(api, shared["id"], "editor")
    deleted = api.post("/v1/delete", json={"folder_ids": [shared["id"]]})
    assert deleted.status_code == 200, deleted.text
    sign_in(page, editor["api_key"])
    page.goto("/trash")
    trash = page.get_by_role("region", name="Trash")
    trash.get_by_role("checkbox", name=f"Choose {shared['name']}").check()
    trash.get_by_role("button", name="Restore").click()
    said = trash.get_by_role("alert")
    expect(said).to_contain_text("Only the folder's creator or an organisation admin may")
    expect(said).not_to_contain_text("org_admin")
