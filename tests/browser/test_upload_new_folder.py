""" "Upload files" from the top level, as the seed has it: "Select a folder to upload your
files to. You can click +New folder to create a new folder." The folder made there is
the one chosen; a name already taken is said in the dialog."""

from __future__ import annotations

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import items, make_folder, unique
from tests.e2e.support import text


def test_a_new_folder_made_in_the_upload_dialog_is_chosen_and_receives_the_files(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    taken = make_folder(api, unique("taken"))
    make_folder(api, "W" * 250 + unique(""))  # a long name among the choices
    name = unique("made-here")
    page.goto("/")
    page.get_by_role("button", name="+ Upload files").click()
    dialog = page.get_by_role("dialog", name="Upload files")
    target = dialog.get_by_label("Upload to folder")
    expect(target).to_have_value("")

    dialog.get_by_role("button", name="+ New folder").click()
    dialog.get_by_label("New folder name").fill(taken["name"])
    dialog.get_by_role("button", name="Create").click()
    expect(dialog.get_by_role("alert")).to_contain_text("already exists")
    expect(target).to_have_value("")

    dialog.get_by_label("New folder name").fill(name)
    dialog.get_by_role("button", name="Create").click()
    expect(dialog.get_by_label("New folder name")).to_have_count(0)
    expect(target.locator("option:checked")).to_have_text(name)
    # The long name among the choices widens nothing: the dialog does not scroll sideways.
    body = dialog.locator(".dialog-body")
    assert body.evaluate("e => e.scrollWidth <= e.clientWidth")

    dialog.get_by_label("Files", exact=True).set_input_files(
        [{"name": "first.txt", "mimeType": "text/plain", "buffer": text("first\n")}]
    )
    dialog.get_by_role("button", name="Upload", exact=True).click()
    expect(dialog.get_by_role("listitem", name="first.txt")).to_contain_text("Uploaded")

    made = api.get("/v1/folders", params={"limit": 1000}).json()["items"]
    folder = next(f for f in made if f["name"] == name)
    assert [i["name"] for i in items(api, folder["id"])] == ["first.txt"]
    dialog.get_by_role("button", name="Close", exact=True).last.click()
    expect(
        page.get_by_role("tree", name="Folder tree").get_by_role("treeitem", name=name)
    ).to_be_visible()
