"""When the platform cannot be reached (the network drops, the service is down) or a
folder's link leads nowhere: the page says so in words, never passes for another page
(the top level's "All folders", an empty "0 items"), and "Try again" recovers."""

from __future__ import annotations

import re
import uuid

import httpx
from playwright.sync_api import BrowserContext, Page, Route, expect

from tests.browser.conftest import home, items, make_folder, unique, upload
from tests.e2e.support import text


def test_a_folder_opened_while_offline_says_so_and_try_again_recovers(
    admin_page: Page, context: BrowserContext, api: httpx.Client
) -> None:
    page = admin_page
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


def test_a_link_to_a_folder_that_is_not_there(admin_page: Page) -> None:
    page = admin_page
    page.goto(f"/folders/{uuid.uuid4()}")
    content = page.get_by_role("main")
    expect(content.get_by_role("heading", level=1)).to_have_text("Folder not found")
    expect(content.get_by_role("alert")).to_contain_text("may be in the Trash")
    expect(content.get_by_role("heading", name="All folders")).to_have_count(0)
    expect(content.get_by_text("0 items")).to_have_count(0)
    content.get_by_role("link", name="Go to all folders").click()
    expect(content.get_by_role("heading", name="All folders", level=1)).to_be_visible()


def test_links_to_a_file_or_a_dataset_that_is_not_there(admin_page: Page) -> None:
    page = admin_page
    content = page.get_by_role("main")
    for kind, heading in (("files", "File not found"), ("datasets", "Dataset not found")):
        missing = str(uuid.uuid4())
        page.goto(f"/{kind}/{missing}")
        expect(content.get_by_role("heading", level=1)).to_have_text(heading)
        expect(content.get_by_role("alert")).to_contain_text("not")
        expect(content).not_to_contain_text(missing)  # no id for a person to read
        expect(content.get_by_role("link", name="Go to all folders")).to_be_visible()


def test_a_file_opened_while_offline_says_so_and_try_again_recovers(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    folder = make_folder(api, unique("offline-file"))
    upload(api, folder["id"], ("opened.txt", text("opened\n")))
    page.goto(f"/folders/{folder['id']}")
    page.get_by_role("button", name="List").click()
    row = page.get_by_role("row", name="opened.txt")
    expect(row).to_be_visible()

    # Offline for the file's reads only: the folder's own re-reads (a change seen)
    # failing too would take its list away before the row is opened.
    def offline(route: Route) -> None:
        route.abort("internetdisconnected")

    page.route(lambda url: "/v1/files/" in url, offline)
    row.dblclick()
    content = page.get_by_role("main")
    expect(content.get_by_role("heading", level=1)).to_have_text("This file could not be shown")
    expect(content.get_by_role("alert")).to_contain_text("Files cannot be reached")

    page.unroute_all(behavior="ignoreErrors")
    content.get_by_role("button", name="Try again").click()
    expect(content.get_by_role("heading", name="opened.txt", level=1)).to_be_visible()


def test_an_upload_while_offline_is_not_called_refused_and_is_sent_again(
    admin_page: Page, context: BrowserContext, api: httpx.Client
) -> None:
    page = admin_page
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
    page: Page, api: httpx.Client, admin_state: dict
) -> None:
    make_folder(api, unique("still-here"))
    lists = re.compile(r"/v1/folders\?")
    page.route(lists, lambda route: route.abort())
    home(page)
    nav = page.get_by_role("navigation", name="Folders")
    expect(nav).to_contain_text("The folders could not be loaded.")
    expect(nav).not_to_contain_text("No folders yet")

    page.unroute(lists)
    nav.get_by_role("button", name="Try again").click()
    expect(nav.get_by_role("tree", name="Folder tree")).to_be_visible()
    expect(nav).not_to_contain_text("could not be loaded")


# The Trash, the Datasets and search results: a list that could not be read is said so
# under the page's own heading, never shown as an empty one, and "Try again" reads it again.
BUSY = {
    "error": {
        "code": "unavailable",
        "message": "the catalog service did not answer in time; try again shortly",
        "details": {"service": "catalog", "retry": True},
    }
}


def test_the_trash_says_when_it_cannot_be_read_and_try_again_recovers(
    signed_in: Page, api: httpx.Client
) -> None:
    page = signed_in
    folder = make_folder(api, unique("trash-down"))
    name = unique("binned") + ".txt"
    [binned] = upload(api, folder["id"], (name, text("b\n")))
    assert api.post("/v1/delete", json={"file_ids": [binned["id"]]}).status_code == 200

    listing = re.compile(r"/v1/trash\?")
    page.route(listing, lambda route: route.fulfill(status=503, json=BUSY))
    page.get_by_role("link", name="Trash", exact=True).click()
    trash = page.get_by_role("region", name="Trash")
    expect(trash.get_by_role("heading", level=1)).to_have_text("Trash")
    expect(trash.get_by_role("alert")).to_have_text(
        "The trash could not be loaded. The catalog service did not answer in time;"
        " try again shortly"
    )
    expect(trash).not_to_contain_text("The trash is empty")
    expect(trash.get_by_role("link", name="Go to all folders")).to_be_visible()

    page.unroute(listing)
    trash.get_by_role("button", name="Try again").click()
    expect(trash.get_by_role("row", name=name)).to_be_visible()
    expect(trash.get_by_role("alert")).to_have_count(0)
    expect(trash.get_by_role("button", name="Try again")).to_have_count(0)


def test_the_datasets_page_says_when_it_cannot_be_read_and_try_again_recovers(
    signed_in: Page, api: httpx.Client
) -> None:
    page = signed_in
    dataset = api.post("/v1/datasets", json={"name": unique("listed-later")}).json()
    listing = re.compile(r"/v1/datasets\?")
    page.route(listing, lambda route: route.abort())
    page.get_by_role("link", name="Datasets", exact=True).click()
    listed = page.get_by_role("region", name="Datasets")
    expect(listed.get_by_role("heading", level=1)).to_have_text("Datasets")
    expect(listed.get_by_role("alert")).to_have_text(
        "The datasets could not be loaded. Files cannot be reached: check your connection,"
        " then try again."
    )
    expect(listed).not_to_contain_text("No datasets")

    page.unroute(listing)
    listed.get_by_role("button", name="Try again").click()
    expect(listed.get_by_role("row", name=dataset["name"])).to_be_visible()
    expect(listed.get_by_role("alert")).to_have_count(0)


def test_search_results_say_when_the_search_cannot_be_done_and_try_again_recovers(
    signed_in: Page, context: BrowserContext, api: httpx.Client
) -> None:
    page = signed_in
    folder = make_folder(api, unique("found-later"))
    name = unique("needle") + ".txt"
    made = api.post(f"/v1/folders/{folder['id']}/files", files=[("file", (name, text("n\n")))])
    assert made.status_code == 201, made.text
    # Found by the API before the browser asks (the search's read model has caught up).
    found = api.get(
        "/v1/search",
        params={"q": name},
        headers={"Files-Consistency": made.headers["Files-Consistency"]},
    ).json()["items"]
    assert [hit["name"] for hit in found] == [name]
    expect(page.get_by_role("heading", name="All folders", level=1)).to_be_visible()

    context.set_offline(True)
    box = page.get_by_role("combobox", name="Search files")
    box.fill(name)
    box.press("Enter")
    results = page.get_by_role("region", name="Search results")
    expect(results.get_by_role("heading", level=1)).to_have_text(f"Results for “{name}”")
    expect(results.get_by_role("alert")).to_contain_text(
        "The search results could not be loaded. Files cannot be reached"
    )
    expect(results).not_to_contain_text("Nothing found")

    context.set_offline(False)
    results.get_by_role("button", name="Try again").click()
    expect(results.get_by_role("link", name=name)).to_be_visible()
    expect(results.get_by_role("alert")).to_have_count(0)


def test_a_page_that_could_not_be_shown_says_the_api_s_message_as_a_sentence(
    admin_page: Page, api: httpx.Client
) -> None:
    """The API's messages start in lower case; a folder's, a file's and a dataset's page
    that could not be shown starts its sentence with a capital, as the lists do."""
    page = admin_page
    folder = make_folder(api, unique("busy"))
    [note] = upload(api, folder["id"], ("busy.txt", text("b\n")))
    dataset = api.post("/v1/datasets", json={"name": unique("busy-set")}).json()
    content = page.get_by_role("main")
    for kind, what, subject in (
        ("folders", "folder", folder),
        ("files", "file", note),
        ("datasets", "dataset", dataset),
    ):
        read = re.compile(rf"/v1/{kind}/{subject['id']}$")
        page.route(read, lambda route: route.fulfill(status=503, json=BUSY))
        page.goto(f"/{kind}/{subject['id']}")
        expect(content.get_by_role("heading", level=1)).to_have_text(
            f"This {what} could not be shown"
        )
        expect(content.get_by_role("alert")).to_have_text(
            "The catalog service did not answer in time; try again shortly"
        )
        page.unroute(read)
        content.get_by_role("button", name="Try again").click()
        expect(content.get_by_role("alert")).to_have_count(0)
