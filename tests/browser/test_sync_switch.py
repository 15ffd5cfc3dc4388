""" "Add to dataset", "+New dataset" with "Sync with folder": the dataset takes the whole
folder (its subfolders too), not only the files chosen. The switch names the folder and
the dialog says so, with how many files that is, before anything is made."""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import make_folder, unique, upload
from tests.e2e.support import text


def test_the_sync_switch_says_the_whole_folder_joins(admin_page: Page, api: httpx.Client) -> None:
    page = admin_page
    folder = make_folder(api, unique("source"))
    inner = make_folder(api, "inner", folder["id"])
    upload(api, folder["id"], ("chosen.txt", text("c\n")), ("other.txt", text("o\n")))
    upload(api, inner["id"], ("below.txt", text("b\n")))

    page.goto(f"/folders/{folder['id']}")
    page.get_by_role("button", name="List").click()
    grid = page.get_by_role("grid", name="Folder contents")
    grid.get_by_role("row", name="chosen.txt").click(button="right")
    page.get_by_role("menuitem", name="Add to dataset").click()
    dialog = page.get_by_role("dialog", name="Add to dataset")
    dialog.get_by_role("tab", name="+New dataset").click()
    name = unique("Follows")
    dialog.get_by_label("Name").fill(name)
    switch = dialog.get_by_role("switch", name=f"Sync with folder {folder['name']}")
    expect(dialog.get_by_role("note")).to_have_count(0)
    switch.click()
    note = dialog.get_by_role("note")
    expect(note).to_contain_text(f"every file in {folder['name']} and its subfolders (3 files now)")
    expect(note).to_contain_text("not only those chosen")
    dialog.get_by_role("button", name="Add to new dataset").click()
    expect(dialog).to_be_hidden()

    [made] = [d for d in api.get("/v1/datasets").json()["items"] if d["name"] == name]
    assert made["synced_folder_id"] == folder["id"]
    assert made["file_count"] == 3
