"""Browsing: the folder tree, breadcrumbs, grid and list views, sort, kind filter,
deep links per folder and file, keyboard navigation."""

from __future__ import annotations

import httpx
from files_client.cli import _size
from playwright.sync_api import Page, Route, expect

from tests.browser.conftest import make_folder, unique, upload
from tests.e2e.support import PDF, png, text


def test_browse_a_folder_by_tree_breadcrumbs_and_deep_links(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    top = make_folder(api, unique("browse"))
    sub = make_folder(api, "scans", top["id"])
    upload(
        api,
        sub["id"],
        ("big.png", png(64, 48)),
        ("notes.txt", text("hello\n" * 50)),
        ("doc.pdf", PDF),
    )

    page.goto(f"/folders/{sub['id']}")  # a deep link
    expect(page.get_by_role("heading", name="scans", level=1)).to_be_visible()
    crumbs = page.get_by_role("navigation", name="Breadcrumb")
    expect(crumbs.get_by_role("link", name=top["name"])).to_be_visible()
    expect(crumbs.get_by_role("link", name="scans")).to_have_attribute("aria-current", "page")
    tree = page.get_by_role("tree", name="Folder tree")
    expect(tree.get_by_role("treeitem", name="scans")).to_have_attribute("aria-selected", "true")

    # List view: the columns, sorting by size, the kind filter.
    page.get_by_role("button", name="List").click()
    grid = page.get_by_role("grid", name="Folder contents")
    for column in ("Name", "Kind", "Size", "Created"):
        expect(grid.get_by_role("columnheader", name=column)).to_be_visible()
    rows = grid.get_by_role("row").filter(has_not=page.get_by_role("columnheader"))
    expect(rows).to_have_count(3)
    found = {
        f["name"]: f["size"] for f in api.get(f"/v1/folders/{sub['id']}/items").json()["items"]
    }
    by_size = sorted(found, key=lambda name: found[name])
    grid.get_by_role("columnheader", name="Size").get_by_role("button").click()
    expect(grid.get_by_role("columnheader", name="Size")).to_have_attribute(
        "aria-sort", "ascending"
    )
    expect(rows.first).to_have_attribute("aria-label", by_size[0])
    expect(rows.last).to_have_attribute("aria-label", by_size[-1])
    grid.get_by_role("columnheader", name="Size").get_by_role("button").click()
    expect(rows.first).to_have_attribute("aria-label", by_size[-1])
    page.get_by_label("Kind").select_option("pdf")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("aria-label", "doc.pdf")
    page.get_by_label("Kind").select_option("")

    # Breadcrumb up, then the keyboard: down to the folder, Enter opens it.
    crumbs.get_by_role("link", name=top["name"]).click()
    expect(page).to_have_url(f"/folders/{top['id']}")
    expect(grid.get_by_role("row", name="scans")).to_be_visible()
    grid.focus()
    page.keyboard.press("ArrowDown")
    expect(grid.get_by_role("row", name="scans")).to_have_attribute("aria-selected", "true")
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"/folders/{sub['id']}")
    page.go_back()
    expect(page).to_have_url(f"/folders/{top['id']}")

    # Grid view, then open a file by double-click: its own address and viewer.
    page.get_by_role("button", name="Grid").click()
    page.goto(f"/folders/{sub['id']}")
    page.get_by_role("row", name="big.png").dblclick()
    file_id = found_id(api, sub["id"], "big.png")
    expect(page).to_have_url(f"/files/{file_id}")
    expect(page.get_by_role("img", name="big.png")).to_be_visible()
    page.reload()  # the deep link serves the app
    expect(page.get_by_role("heading", name="big.png", level=1)).to_be_visible()
    # The file's folder is a way up from the file, not "the current page".
    expect(crumbs.get_by_role("link", name="scans")).to_be_visible()
    expect(crumbs.get_by_role("link", name="scans")).not_to_have_attribute("aria-current", "page")


def found_id(api: httpx.Client, folder_id: str, name: str) -> str:
    [item] = [
        i for i in api.get(f"/v1/folders/{folder_id}/items").json()["items"] if i["name"] == name
    ]
    return str(item["id"])


def test_grid_shows_thumbnails_and_the_kind_icon_for_a_file_without_one(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    folder = make_folder(api, unique("thumbs"))
    [photo, _] = upload(
        api, folder["id"], ("photo.png", png(64, 48)), ("notes.txt", text("hello\n"))
    )
    # The first answer is "not made yet" (as right after an upload): the app asks again.
    faked: list[str] = []

    def not_yet(route: Route) -> None:
        if faked:
            route.continue_()
            return
        faked.append(route.request.url)
        route.fulfill(
            status=404,
            json={"error": {"code": "thumbnail_not_ready", "message": "no thumbnail yet"}},
        )

    page.route(f"**/v1/files/{photo['id']}/thumbnail*", not_yet)
    page.goto(f"/folders/{folder['id']}")
    page.get_by_role("button", name="Grid").click()
    grid = page.get_by_role("grid", name="Folder contents")
    # The picture is drawn: loaded (it has pixels) and seen (not hidden, not transparent).
    picture = grid.get_by_role("row", name="photo.png").locator("img")
    expect(picture).to_be_visible()
    page.wait_for_function(
        """id => {
            const img = document.querySelector(`[id="item-${id}"] img`);
            return img && img.complete && img.naturalWidth > 0
                && getComputedStyle(img).opacity === "1";
        }""",
        arg=photo["id"],
        timeout=30_000,
    )
    assert faked
    # A text file has no thumbnail: its kind's icon, and no picture asked for.
    notes = grid.get_by_role("row", name="notes.txt")
    expect(notes.locator("svg")).to_be_visible()
    expect(notes.locator("img")).to_have_count(0)


def test_a_deleted_item_is_no_longer_asked_for_and_an_unknown_address_is_not_found(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    folder = make_folder(api, unique("deleting"))
    [doomed] = upload(api, folder["id"], ("doomed.txt", text("x\n")))
    page.goto(f"/folders/{folder['id']}")
    page.get_by_role("button", name="List").click()
    grid = page.get_by_role("grid", name="Folder contents")
    grid.get_by_role("row", name="doomed.txt").click()
    details = page.get_by_role("complementary", name="Details")
    expect(details).to_contain_text("Text")
    asked: list[str] = []
    page.on("request", lambda r: doomed["id"] in r.url and asked.append(r.url))
    page.keyboard.press("Delete")
    page.get_by_role("dialog", name="Delete").get_by_role("button", name="Delete").click()
    expect(grid.get_by_role("row", name="doomed.txt")).to_be_hidden()
    expect(details.get_by_role("heading", name=folder["name"])).to_be_visible()
    # The delete itself names it; nothing reads it again.
    assert [u for u in asked if "/v1/delete" not in u] == []

    # An address the app does not have: its own page, not the API's JSON.
    answer = page.goto("/nope/xyz")
    assert answer is not None and answer.status == 404
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    page.get_by_role("link", name="Go to all folders").click()
    expect(page).to_have_url("/")
    # The API's own unknown addresses stay JSON for a program.
    assert api.get("/nope/xyz").json()["error"]["code"] == "not_found"
    assert api.get("/v1/nope").json()["error"]["code"] == "not_found"


def test_long_names_are_cut_short_and_a_whole_column_header_sorts(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    long = "L" * 290 + unique("")
    top = make_folder(api, long)
    sub = make_folder(api, "x" * 300, top["id"])
    upload(api, sub["id"], ("small.txt", text("a\n")), ("large.txt", text("b\n" * 500)))
    page.goto(f"/folders/{sub['id']}")
    crumbs = page.get_by_role("navigation", name="Breadcrumb")
    expect(crumbs.get_by_role("link", name=long)).to_be_visible()
    tree = page.get_by_role("navigation", name="Folders")
    expect(tree.get_by_role("treeitem", name=long)).to_be_visible()
    # Nothing is wider than its place: no sideways scrolling in the tree, the page or
    # the breadcrumb.
    for box in (tree, crumbs, page.get_by_role("region", name="x" * 300)):
        assert box.evaluate("e => e.scrollWidth <= e.clientWidth"), box
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    # A click anywhere in the header cell, not only on its word, sorts.
    page.get_by_role("button", name="List").click()
    grid = page.get_by_role("grid", name="Folder contents")
    size = grid.get_by_role("columnheader", name="Size")
    cell = size.bounding_box()
    assert cell is not None
    size.click(position={"x": cell["width"] - 4, "y": cell["height"] / 2})
    expect(size).to_have_attribute("aria-sort", "ascending")
    rows = grid.get_by_role("row").filter(has_not=page.get_by_role("columnheader"))
    expect(rows.first).to_have_attribute("aria-label", "small.txt")


def test_a_long_name_leaves_its_kind_icon_whole_in_the_list(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    top = make_folder(api, unique("icons"))
    long_folder = make_folder(api, "F" * 200, top["id"])
    long_file = "a_long_file_name_" + "x" * 200 + ".txt"
    upload(api, top["id"], (long_file, text("x\n")), ("short.txt", text("y\n")))
    page.goto(f"/folders/{top['id']}")
    page.get_by_role("button", name="List").click()
    grid = page.get_by_role("grid", name="Folder contents")
    for name in (long_folder["name"], long_file, "short.txt"):
        icon = grid.get_by_role("row", name=name).locator(".col-name svg")
        expect(icon).to_be_visible()
        box = icon.bounding_box()
        assert box is not None and box["width"] >= 17, (name, box)  # 18 px, not squeezed


def test_the_open_folder_shows_its_subfolders_in_the_tree(
    admin_page: Page, api: httpx.Client
) -> None:
    page = admin_page
    top = make_folder(api, unique("tree-top"))
    kid = make_folder(api, unique("tree-kid"), top["id"])
    page.goto(f"/folders/{top['id']}")
    tree = page.get_by_role("tree", name="Folder tree")
    opened = tree.get_by_role("treeitem", name=top["name"])
    expect(opened).to_have_attribute("aria-selected", "true")
    expect(opened).to_have_attribute("aria-expanded", "true")
    expect(tree.get_by_role("treeitem", name=kid["name"])).to_be_visible()
    # Collapsed by hand, it stays collapsed.
    opened.locator(".twisty").first.click()
    expect(opened).to_have_attribute("aria-expanded", "false")
    expect(tree.get_by_role("treeitem", name=kid["name"])).to_have_count(0)


def test_sizes_read_as_the_files_command_writes_them(admin_page: Page, api: httpx.Client) -> None:
    """Sizes are decimal, as `files ls` prints them: before, the app divided by 1,024 and
    still wrote "KB" and "MB", so a file of 2,000,000 bytes was 1.9 MB here and 2.0 MB
    there."""
    page = admin_page
    folder = make_folder(api, unique("sizes"))
    upload(api, folder["id"], ("two.txt", text("x" * 1_999_999 + "\n")))
    assert _size(2_000_000) == "2.0 MB"
    page.goto(f"/folders/{folder['id']}")
    page.get_by_role("button", name="List").click()
    expect(page.get_by_role("row", name="two.txt")).to_contain_text("2.0 MB")
    expect(page.get_by_role("complementary", name="Details")).to_contain_text("2.0 MB")
