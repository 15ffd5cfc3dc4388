"""When the platform cannot be reached (the network drops, the service is down) or a
folder's link leads nowhere: the page says so in words, never passes for another page
(the top level's "All folders", an empty "0 items"), and "Try again" recovers."""

from __future__ import annotations

import re
import uuid

import httpx
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser.conftest import items, make_folder, sign_in, unique, upload
from tests.e2e.support import text


def test_a_folder_opened_while_offline_says_so_and_try_again_recovers(
    signed_in: Page, context: BrowserContext, api: httpx.Client
) -> None:
    page = signed_in
    folder = make_folder(api, unique("offline"))
    upload(api, folder["id"], ("seen.txt", text("seen\n")))
    page.goto("/")
    tree = page.get_by_role("tree", name="Folder tree")
    expect(tree.get_by_role("treeitem", name=folder["name"])).to_be_visible()

    context.set_offline(True)
    tree.get_by_role("treeitem", name=folder["name"]).locator(".tree-row").click()
    expect(page).to_have_url(f"/folders/{folder['id']}")
    content = page.get_by_role("main")
    expect(content.get_by_role("heading", level=1)).to_have_text("This folder could not be shown")
    expect(content.get_by_role("alert")).to_contain_text("Files cannot be reached")
    expect(content).not_to_contain_text("Failed to fetch")
    expect(content.get_by_role("heading", name="All folders")).to_have_count(0)
    expect(content.get_by_text("0 items")).to_have_count(0)

    context.set_offline(False)
    content.get_by_role("button", name="Try again").click()
    expect(content.get_by_role("heading", name=folder["name"], level=1)).to_be_visible()
    page.get_by_role("button", name="List").click()
    expect(content.get_by_role("row", name="seen.txt")).to_be_visible()
    expect(content.get_by_role("alert")).to_have_count(0)


def test_a_dialog_sent_while_offline_says_the_platform_cannot_be_reached(
    signed_in: Page, context: BrowserContext
) -> None:
    page = signed_in
    context.set_offline(True)
    page.get_by_role("button", name="+ New folder").click()
    dialog = page.get_by_role("dialog", name="New folder")
    dialog.get_by_label("Name").fill(unique("never"))
    dialog.get_by_role("button", name="Create").click()
    expect(dialog.get_by_role("alert")).to_have_text(
        "Files cannot be reached: check your connection, then try again."
    )


def test_a_link_to_a_folder_that_is_not_there(signed_in: Page) -> None:
    page = signed_in
    page.goto(f"/folders/{uuid.uuid4()}")
    content = page.get_by_role("main")
    expect(content.get_by_role("heading", level=1)).to_have_text("Folder not found")
    expect(content.get_by_role("alert")).to_contain_text("may be in the Trash")
    expect(content.get_by_role("heading", name="All folders")).to_have_count(0)
    expect(content.get_by_text("0 items")).to_have_count(0)
    content.get_by_role("link", name="Go to all folders").click()
    expect(content.get_by_role("heading", name="All folders", level=1)).to_be_visible()


def test_links_to_a_file_or_a_dataset_that_is_not_there(signed_in: Page) -> None:
    page = signed_in
    content = page.get_by_role("main")
    for kind, heading in (("files", "File not found"), ("datasets", "Dataset not found")):
        missing = str(uuid.uuid4())
        page.goto(f"/{kind}/{missing}")
        expect(content.get_by_role("heading", level=1)).to_have_text(heading)
        expect(content.get_by_role("alert")).to_contain_text("not")
        expect(content).not_to_contain_text(missing)  # no id for a person to read
        expect(content.get_by_role("link", name="Go to all folders")).to_be_visible()


def test_a_file_opened_while_offline_says_so_and_try_again_recovers(
    signed_in: Page, context: BrowserContext, api: httpx.Client
) -> None:
    page = signed_in
    folder = make_folder(api, unique("offline-file"))
    upload(api, folder["id"], ("opened.txt", text("opened\n")))
    page.goto(f"/folders/{folder['id']}")
    page.get_by_role("button", name="List").click()
    row = page.get_by_role("row", name="opened.txt")
    expect(row).to_be_visible()

    context.set_offline(True)
    row.dblclick()
    content = page.get_by_role("main")
    expect(content.get_by_role("heading", level=1)).to_have_text("This file could not be shown")
    expect(content.get_by_role("alert")).to_contain_text("Files cannot be reached")

    context.set_offline(False)
    content.get_by_role("button", name="Try again").click()
    expect(content.get_by_role("heading", name="opened.txt", level=1)).to_be_visible()


def test_an_upload_while_offline_is_not_called_refused_and_is_sent_again(
    signed_in: Page, context: BrowserContext, api: httpx.Client
) -> None:
    page = signed_in
    folder = make_folder(api, unique("offline-upload"))
    page.goto(f"/folders/{folder['id']}")
    expect(page.get_by_role("heading", name=folder["name"], level=1)).to_be_visible()
    page.get_by_role("button", name="+ Upload files").click()
    dialog = page.get_by_role("dialog", name="Upload files")
    dialog.get_by_label("Files", exact=True).set_input_files(
        [{"name": "later.txt", "mimeType": "text/plain", "buffer": text("later\n")}]
    )

    context.set_offline(True)
    dialog.get_by_role("button", name="Upload", exact=True).click()
    row = dialog.get_by_role("listitem", name="later.txt")
    expect(row).to_contain_text("Files cannot be reached")
    notice = page.get_by_role("alert").filter(has_text="0 files uploaded")
    expect(notice).to_have_text("0 files uploaded, 1 not sent: try again")

    context.set_offline(False)
    dialog.get_by_role("button", name="Upload", exact=True).click()
    expect(row).to_contain_text("Uploaded")
    expect(page.get_by_role("status")).to_contain_text("1 file uploaded")
    assert [i["name"] for i in items(api, folder["id"])] == ["later.txt"]


def test_the_folder_tree_never_says_no_folders_when_it_could_not_read_them(
    page: Page, api: httpx.Client
) -> None:
    make_folder(api, unique("still-here"))
    lists = re.compile(r"/v1/folders\?")
    page.route(lists, lambda route: route.abort())
    sign_in(page)
    nav = page.get_by_role("navigation", name="Folders")
    expect(nav).to_contain_text("The folders could not be loaded.")
    expect(nav).not_to_contain_text("No folders yet")

    page.unroute(lists)
    nav.get_by_role("button", name="Try again").click()
    expect(nav.get_by_role("tree", name="Folder tree")).to_be_visible()
    expect(nav).not_to_contain_text("could not be loaded")
